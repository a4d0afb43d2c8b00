#!/usr/bin/env python3
"""Same-call anchor for qm9-bench: one training step of issue 19's QM9 network in e3nn (PyTorch).

Builds the network of qm9_reference.py (the same module, imported from this directory) at the issue's
four shapes, on one batch of generated QM9-shaped molecules, and times one training step (forward,
L1 loss, backward, SGD with momentum 0.9, lr 1e-2) and Predict (forward only, no grad) with CUDA
events after warm-up. float32, TF32 off (fp32 accuracy, as e3nn's records). The JSON is rewritten
after every shape.

Usage (on the GPU machine, torch + e3nn installed):
    python3 tools/qm9_reference/qm9_anchor_bench.py --json OUT.json [--shapes 1x128,1x256,2x128,2x512]
        [--molecules 27] [--runs 30] [--warmup 5] [--compile]
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qm9_reference as ref  # noqa: E402  (the network and the molecule generator)

import torch  # noqa: E402


def time_cuda(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times), min(times)


def bench_shape(lmax, mul, args):
    cfg = dict(ref.DEFAULT_CONFIG, lmax=lmax, mul=mul, layers=6)
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(1)
    model = ref.Network(cfg).cuda()
    num_params = sum(p.numel() for p in model.parameters())
    batch = ref.load_batch(args.batch_json) if args.batch_json else ref.generate_batch(2026, args.molecules, 9)
    dev = torch.device("cuda")
    as_long = lambda v: torch.tensor(v, dtype=torch.long, device=dev)
    species, src, dst, gidx = (as_long(batch[k]) for k in ("species", "edge_src", "edge_dst", "graph_index"))
    pos = torch.tensor(batch["positions"], dtype=torch.float32, device=dev).reshape(-1, 3)
    targets = torch.randn(args.molecules, cfg["num_targets"], device=dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    forward = model
    if args.compile:
        forward = torch.compile(model)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = (forward(species, pos, src, dst, gidx, args.molecules) - targets).abs().mean()
        loss.backward()
        optimizer.step()
        return loss

    losses = [float(train_step()) for _ in range(3)]

    def predict():
        with torch.no_grad():
            forward(species, pos, src, dst, gidx, args.molecules)

    train_ms, train_min = time_cuda(train_step, args.runs, args.warmup)
    predict_ms, predict_min = time_cuda(predict, args.runs, args.warmup)
    return dict(system="e3nn-torch" + ("-compile" if args.compile else ""), e3nn_version=ref.e3nn.__version__,
                torch_version=torch.__version__, lmax=lmax, mul=mul, layers=6, molecules=args.molecules,
                nodes=len(batch["species"]), edges=len(batch["edge_src"]), parameters=num_params,
                train_step_median_ms=train_ms, train_step_min_ms=train_min, predict_median_ms=predict_ms,
                predict_min_ms=predict_min, predict_molecules_per_s=args.molecules / (predict_ms / 1e3),
                first_losses=losses, runs=args.runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True)
    parser.add_argument("--shapes", default="1x128,1x256,2x128,2x512", help="lmax x mul, comma-separated")
    parser.add_argument("--molecules", type=int, default=27)
    parser.add_argument("--batch_json", help="time this batch (qm9-bench --save_batch FILE) instead of generating one")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    args = parser.parse_args()
    if args.batch_json:  # the molecule count comes from the file
        args.molecules = ref.load_batch(args.batch_json)["num_graphs"]
    if not torch.cuda.is_available():
        ref.fail("CUDA is not available")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = []
    for shape in args.shapes.split(","):
        lmax, mul = (int(v) for v in shape.split("x"))
        start = time.time()
        r = bench_shape(lmax, mul, args)
        results.append(r)
        print(f"lmax {lmax} mul {mul}: {r['nodes']} nodes, {r['edges']} edges, {r['parameters']} parameters; "
              f"train step {r['train_step_median_ms']:.2f} ms (min {r['train_step_min_ms']:.2f}), predict "
              f"{r['predict_median_ms']:.2f} ms = {r['predict_molecules_per_s']:.0f} molecules/s "
              f"[{time.time() - start:.0f} s]", flush=True)
        # after every shape: a run cut off by a time limit (tools/gpu/qm9_gpu.sh) keeps what it measured
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(0), results=results), f, indent=1)


if __name__ == "__main__":
    main()
