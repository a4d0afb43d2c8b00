#!/usr/bin/env python3
"""Times the anchors (e3nn-jax and e3nn on PyTorch) on tp-bench's cases, on the same GPU in the
same call as tp-bench, so that every ratio we publish is same-machine, same-call.

    PYTHONPATH=E3NN_JAX_SRC python3 tools/anchors/anchor_bench.py --framework jax \
        --batches 1,8,64,256,1024,4096,16384 --precisions fp32,tf32 --json OUT/jax.json
    python3 tools/anchors/anchor_bench.py --framework torch --batches 64,1024 --json OUT/torch.json
    python3 tools/anchors/compare.py OUT/tp-bench.json OUT/jax.json OUT/torch.json

E3NN_JAX_SRC is a checkout of e3nn-jax (the GPU machine has JAX but not e3nn-jax; carry its source,
never commit it). Tasks, as tp-bench names them, on FullyConnectedTensorProduct(irreps, irreps,
irreps) with shared weights:
    forward       out = TP(w, x1, x2)
    dw_sum_tanh   d/dw sum(tanh(TP(w, x1, x2)))   (the seed task; the forward is included)
Precisions: fp32 = fp32 accuracy (JAX matmul precision 'highest'; PyTorch with TF32 off), tf32 = the
frameworks' TF32 tensor-core default (JAX 'default'; PyTorch allow_tf32). bf16 has no anchor here.
jax variants: tp_linear = e3nn.tensor_product then FunctionalLinear (the faster in every case
measured so far), fctp = legacy FunctionalFullyConnectedTensorProduct. Times: median and min of
--runs calls after warm-up, each call synchronized (block_until_ready / cuda.synchronize).
"""
import argparse
import json
import statistics
import sys
import time


def time_calls(fn, sync, runs, warmup):
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sync(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def jax_cases(irreps, batches, precisions, variants, runs, warmup, deadline):
    import jax
    import jax.numpy as jnp
    import e3nn_jax as e3nn
    from e3nn_jax import legacy  # a submodule e3nn_jax does not import by itself

    irreps = e3nn.Irreps(irreps)
    key = jax.random.PRNGKey(0)

    def block(tree):
        jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)

    def build(variant):
        if variant == "fctp":
            tp = legacy.FunctionalFullyConnectedTensorProduct(irreps, irreps, irreps)
            numel = sum(ins.path_shape[0] * ins.path_shape[1] * ins.path_shape[2] for ins in tp.instructions)

            def apply(w, x1, x2):
                return jax.vmap(lambda a, b: tp.left_right(w, a, b).array)(x1, x2)
        else:
            tp_irreps = e3nn.tensor_product(e3nn.zeros(irreps, ()), e3nn.zeros(irreps, ())).irreps
            linear = e3nn.FunctionalLinear(tp_irreps, irreps)
            numel = int(linear.num_weights)

            def apply(w, x1, x2):
                def one(a, b):
                    return linear(w, e3nn.tensor_product(a, b)).array
                return jax.vmap(one)(x1, x2)
        return apply, numel

    for variant in variants:
        apply, numel = build(variant)
        # batches outside, precisions inside: a run cut short by the deadline still has every
        # precision of the batches it reached
        for batch in batches:
            for precision in precisions:
                matmul = "highest" if precision == "fp32" else "default"
                if time.time() > deadline:
                    print(f"time budget spent: stopping before {variant} {precision} {batch}", file=sys.stderr)
                    return
                k1, k2, k3 = jax.random.split(jax.random.fold_in(key, batch), 3)
                w = jax.random.normal(k1, (numel,), jnp.float32)
                x1 = e3nn.normal(irreps, k2, (batch,))
                x2 = e3nn.normal(irreps, k3, (batch,))
                with jax.default_matmul_precision(matmul):
                    forward = jax.jit(lambda w, a, b: apply(w, a, b))
                    grad = jax.jit(jax.grad(lambda w, a, b: jnp.sum(jnp.tanh(apply(w, a, b)))))
                    for task, fn in (("forward", forward), ("dw_sum_tanh", grad)):
                        case = dict(framework="e3nn-jax", variant=variant, task=task, precision=precision,
                                    batch=batch, weights=numel)
                        try:
                            compile_start = time.perf_counter()
                            block(fn(w, x1, x2))
                            compile_s = time.perf_counter() - compile_start
                            median, minimum = time_calls(lambda: fn(w, x1, x2), block, runs, warmup)
                        except Exception as e:  # e.g. RESOURCE_EXHAUSTED: the case cannot run here
                            yield dict(case, error=str(e).split("\n")[0][:200])
                            continue
                        yield dict(case, median_ms=median, min_ms=minimum, first_call_s=compile_s)


def torch_cases(irreps, batches, precisions, runs, warmup, deadline):
    import torch
    from e3nn import o3

    device = torch.device("cuda")
    tp = o3.FullyConnectedTensorProduct(irreps, irreps, irreps).to(device)
    for precision in precisions:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        for batch in batches:
            if time.time() > deadline:
                print(f"time budget spent: stopping before torch {precision} {batch}", file=sys.stderr)
                return
            x1 = torch.randn(batch, tp.irreps_in1.dim, device=device)
            x2 = torch.randn(batch, tp.irreps_in2.dim, device=device)

            def forward():
                with torch.no_grad():
                    return tp(x1, x2)

            def grad():
                tp.zero_grad(set_to_none=True)
                torch.tanh(tp(x1, x2)).sum().backward()
                return tp.weight.grad

            for task, fn in (("forward", forward), ("dw_sum_tanh", grad)):
                median, minimum = time_calls(fn, lambda _: torch.cuda.synchronize(), runs, warmup)
                yield dict(framework="e3nn-torch", variant="FullyConnectedTensorProduct", task=task,
                           precision=precision, batch=batch, median_ms=median, min_ms=minimum,
                           weights=tp.weight_numel)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=["jax", "torch"], required=True)
    parser.add_argument("--irreps", default="128x0e+128x1e+128x2e")
    parser.add_argument("--batches", default="64,1024")
    parser.add_argument("--precisions", default="fp32,tf32")
    parser.add_argument("--variants", default="tp_linear,fctp", help="jax only")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max_seconds", type=float, default=240, help="stop starting new cases after this")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    precisions = args.precisions.split(",")
    for p in precisions:
        if p not in ("fp32", "tf32"):
            parser.error(f"--precisions: {p}: expected fp32 or tf32")
    deadline = time.time() + args.max_seconds
    if args.framework == "jax":
        cases = jax_cases(args.irreps, batches, precisions, args.variants.split(","), args.runs, args.warmup, deadline)
    else:
        cases = torch_cases(args.irreps, batches, precisions, args.runs, args.warmup, deadline)
    results = []
    for case in cases:
        results.append(case)
        head = f"{case['framework']:10s} {case['variant']:28s} {case['task']:12s} {case['precision']} b={case['batch']:<6d}"
        if "error" in case:
            print(f"{head} failed: {case['error']}", flush=True)
        else:
            print(f"{head} median {case['median_ms']:.4f} ms  min {case['min_ms']:.4f} ms", flush=True)
        with open(args.json, "w") as f:  # rewritten after each case: a cut-off run keeps what it measured
            json.dump({"irreps": args.irreps, "runs": args.runs, "results": results}, f, indent=1)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
