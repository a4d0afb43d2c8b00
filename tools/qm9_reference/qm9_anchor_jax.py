#!/usr/bin/env python3
"""Same-call anchor for qm9-bench in e3nn-jax: one training step of issue 19's QM9 network.

The network of qm9_reference.py (e3nn on PyTorch; nn/README.md), built from e3nn-jax 0.21 functions
as plain functions of a parameter pytree (no flax / haiku / optax):
- node input and attributes: one_hot(species, 5) * sqrt(5) (5x0e); edges as given (bonds, both ways);
  edge vector pos[dst] - pos[src]; e3nn.spherical_harmonics up to lmax, normalized, 'component';
  e3nn.soft_one_hot_linspace(|r|, 0, 1.9, 10, 'smooth_finite', cutoff=True) * sqrt(5) * 1.1;
- Conv(in -> out): sc = FCTP(x, attr -> out), h = FCTP(x, attr -> in) (--fctp legacy: e3nn-jax's legacy
  FunctionalFullyConnectedTensorProduct, 'uvw', e3nn-torch's normalization; --fctp tp_linear:
  e3nn.tensor_product(x, attr) then e3nn.FunctionalLinear, e3nn-jax's idiom, same weight count and
  multiply-adds, its own normalization; --fctp legacy,tp_linear runs both per shape); per edge a
  'uvu' FunctionalTensorProduct of h[src] with the harmonics, one instruction per (i, j, ir in
  ir_i x ir_j) with ir in out or ir = 0e, its
  per-edge weights from a radial MLP 10 -> 64 -> 64 -> weight_numel (W / sqrt(fan_in), normalized
  exact gelu on the hidden layers, no bias); e3nn.scatter_sum to dst / sqrt(2.1);
  out = cos(pi/8) sc + sin(pi/8) FCTP(agg, attr -> out);
- e3nn.gate: 0e gelu (exact), 0o tanh, sigmoid gates (0e) on the l > 0 irreps, all normalized;
  hidden irreps mul x (0e + 0o + 1e + 1o (+ 2e + 2o)) filtered to what each convolution can reach;
- 5 Conv + Gate, then Conv -> 4x0e, per-graph sum, L1 loss (mean |pred - target|);
- SGD, lr 1e-2, momentum 0.9 (PyTorch's rule v = m v + g, p -= lr v), plain jax.tree_util code.
Every weight is N(0, 1) (the normalization lives in the forward pass, as in e3nn).

Timing, as qm9_anchor_bench.py times e3nn-torch: same batch (qm9_molecules.generate_batch(2026,
molecules, 9)), one jitted train step (value_and_grad + SGD momentum, parameters and velocity donated
on the GPU) and one jitted predict (forward only); 3 steps for first_losses, then --warmup calls and
the median and min of --runs calls, each timed with time.perf_counter around the call and
block_until_ready on all its outputs (JAX has no CUDA events; the torch tool uses them). fp32 with
matmul precision 'highest' (fp32 accuracy, no TF32) unless --precision says otherwise; the precision
is recorded. XLA compiles each shape first (25-90 s at mul 512): the compile time and XLA's own FLOP
count (cost_analysis) are recorded too. Shapes run small to large; once --max_seconds have passed no
new shape starts (one already compiling is not interrupted) and the JSON lists the shapes skipped.
The JSON is rewritten after every shape, so a cut-off run keeps what it measured.

Where it differs from the PyTorch network (qm9_reference.py), none of which changes the FLOPs:
- irreps_mid (the 'uvu' outputs) is not sorted (e3nn's Irreps.sort only permutes the layout);
- the convolution's output (the gate's input) is laid out as scalars, gates, gated irreps, as
  e3nn.gate wants it, instead of sorted and simplified; the gates are one Nx0e block;
- the activation normalization constants are e3nn-jax's (normalize_function, 10^6 quantile points),
  not the exact integrals qm9_reference.py patches in; e3nn-jax's own spherical harmonics and
  Clebsch-Gordan basis; parameters from jax.random, targets from jax.random (not torch.randn).
So the losses differ from the torch tool's; the architecture, parameter count and work do not
(--self_check compares the parameter counts with nn/README.md's table, for both FCTP forms).

Usage (on the GPU machine: JAX installed, e3nn-jax 0.21 source on PYTHONPATH, no torch needed):
    PYTHONPATH=E3NN_JAX_SRC python3 tools/qm9_reference/qm9_anchor_jax.py --self_check
    PYTHONPATH=E3NN_JAX_SRC python3 tools/qm9_reference/qm9_anchor_jax.py --json OUT.json
        [--shapes 1x128,1x256,2x128,2x512] [--molecules 27] [--runs 30] [--warmup 5]
        [--max_seconds S] [--precision highest|default] [--fctp legacy|tp_linear|legacy,tp_linear]
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qm9_molecules import generate_batch, load_batch  # noqa: E402  (torch-free; the same batches as the torch tool)


def fail(message):
    print(f"qm9_anchor_jax: error: {message}", file=sys.stderr)
    sys.exit(1)


try:
    import jax
    import jax.numpy as jnp
    import numpy as np
except ImportError as e:  # pragma: no cover
    fail(f"JAX is needed ({e}); run this on the GPU machine")
try:
    import e3nn_jax as e3nn
    from e3nn_jax import legacy  # a submodule e3nn_jax does not import by itself
except ImportError as e:  # pragma: no cover
    fail(f"e3nn-jax is needed ({e}); put its source on PYTHONPATH")

# as qm9_reference.DEFAULT_CONFIG (copied: that module imports torch)
DEFAULT_CONFIG = dict(lmax=1, mul=128, layers=6, num_elements=5, num_targets=4, num_basis=10,
                      max_radius=1.9, radial_hidden=64, radial_layers=2, num_neighbors=2.1)
RADIAL_BASIS_SCALE = math.sqrt(5.0) * 1.1  # issue 19: smooth_finite basis times sqrt(5) * 1.1
LEARNING_RATE, MOMENTUM = 1e-2, 0.9
BATCH_SEED, MAX_HEAVY = 2026, 9  # as qm9_anchor_bench.py
# nn/README.md, "Sizes and floors": parameters of the 6-layer network (tpserve's layout = e3nn-torch's)
FCTP_FORMS = ("legacy", "tp_linear")  # see NodeProduct
EXPECTED_PARAMETERS = {(1, 128): 7466621, (1, 256): 29158141, (2, 128): 18292541, (2, 512): 281486141}


def prng_key(seed):
    make = getattr(jax.random, "key", None) or jax.random.PRNGKey  # typed keys where this JAX has them
    return make(seed)


def matmul_precision(name):
    """jax.default_matmul_precision(name) (traced functions take it at trace time), or the global config."""
    context = getattr(jax, "default_matmul_precision", None)
    if context is not None:
        return context(name)
    jax.config.update("jax_default_matmul_precision", name)
    return contextlib.nullcontext()


def gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)  # torch's default gelu (erf); jax.nn.gelu defaults to tanh


# ---------------------------------------------------------------- the network (static structure)
def tp_path_exists(irreps_in1, irreps_in2, ir_out):
    ir_out = e3nn.Irrep(ir_out)
    return any(ir_out == ir for _, ir1 in irreps_in1 for _, ir2 in irreps_in2 for ir in ir1 * ir2)


def weight_numel(tp):
    return sum(math.prod(ins.path_shape) for ins in tp.instructions if ins.has_weight)


class NodeProduct:
    """FCTP(x, attr -> out) per node, the torch network's FullyConnectedTensorProduct, in one of two forms:
    legacy    = e3nn_jax.legacy.FunctionalFullyConnectedTensorProduct ('uvw', e3nn-torch's normalization);
    tp_linear = e3nn.tensor_product(x, attr) then e3nn.FunctionalLinear (e3nn-jax's idiom; the same
                weight count and multiply-adds, its own normalization; the faster form in tools/anchors)."""

    def __init__(self, irreps_in, irreps_attr, irreps_out, kind):
        self.irreps_in, self.irreps_attr, self.kind = e3nn.Irreps(irreps_in), e3nn.Irreps(irreps_attr), kind
        if kind == "legacy":
            self.tp = legacy.FunctionalFullyConnectedTensorProduct(self.irreps_in, self.irreps_attr, irreps_out)
            self.numel = weight_numel(self.tp)
        elif kind == "tp_linear":
            tp_irreps = e3nn.tensor_product(self.irreps_in, self.irreps_attr)  # Irreps in -> Irreps out
            self.linear = e3nn.FunctionalLinear(tp_irreps, irreps_out)
            self.numel = int(self.linear.num_weights)
        else:
            raise ValueError(f"unknown FCTP form {kind!r}: expected legacy or tp_linear")

    def __call__(self, w, x, attr):
        """x [nodes, in.dim], attr [nodes, attr.dim] -> [nodes, out.dim]."""
        def one(a, b):
            a, b = e3nn.IrrepsArray(self.irreps_in, a), e3nn.IrrepsArray(self.irreps_attr, b)
            if self.kind == "legacy":
                return self.tp.left_right(w, a, b).array
            return self.linear(w, e3nn.tensor_product(a, b)).array
        return jax.vmap(one)(x, attr)


class Conv:
    """Static part of one convolution: irreps, the e3nn-jax tensor products, parameter shapes."""

    def __init__(self, irreps_in, irreps_attr, irreps_sh, irreps_out, cfg):
        self.irreps_in, self.irreps_out = e3nn.Irreps(irreps_in), e3nn.Irreps(irreps_out)
        fctp = cfg.get("fctp", "legacy")
        self.sc = NodeProduct(self.irreps_in, irreps_attr, self.irreps_out, fctp)
        self.lin1 = NodeProduct(self.irreps_in, irreps_attr, self.irreps_in, fctp)
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_edge) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_edge:
                    if ir_out in self.irreps_out or ir_out == e3nn.Irrep("0e"):
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        self.irreps_mid = e3nn.Irreps(mid)
        self.tp = legacy.FunctionalTensorProduct(self.irreps_in, irreps_sh, self.irreps_mid, instructions)
        self.lin2 = NodeProduct(self.irreps_mid, irreps_attr, self.irreps_out, fctp)
        self.radial_sizes = [cfg["num_basis"]] + cfg["radial_layers"] * [cfg["radial_hidden"]] + [weight_numel(self.tp)]
        self.num_neighbors = cfg["num_neighbors"]

    def param_shapes(self):
        return dict(sc=(self.sc.numel,), lin1=(self.lin1.numel,),
                    radial=[(a, b) for a, b in zip(self.radial_sizes[:-1], self.radial_sizes[1:])],
                    lin2=(self.lin2.numel,))


def hidden_irreps(lmax, mul):
    return e3nn.Irreps([(mul, (l, p)) for l in range(lmax + 1) for p in (1, -1)])


class Network:
    """issue 19's network: (layers - 1) Conv + Gate, then Conv -> num_targets x 0e."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.irreps_sh = e3nn.Irreps.spherical_harmonics(cfg["lmax"])  # 0e + 1o (+ 2e)
        self.irreps_attr = e3nn.Irreps(f"{cfg['num_elements']}x0e")
        hidden = hidden_irreps(cfg["lmax"], cfg["mul"])
        irreps = self.irreps_attr
        self.convs, self.gate_out, self.layer_irreps = [], [], []
        for _ in range(cfg["layers"] - 1):
            scalars = [(m, ir) for m, ir in hidden if ir.l == 0 and tp_path_exists(irreps, self.irreps_sh, ir)]
            gated = [(m, ir) for m, ir in hidden if ir.l > 0 and tp_path_exists(irreps, self.irreps_sh, ir)]
            num_gates = sum(m for m, _ in gated)
            # e3nn.gate's layout: the last num_gates scalars are the gates
            gate_in = e3nn.Irreps(scalars + ([(num_gates, "0e")] if num_gates else []) + gated)
            gate_out = self.gate(gate_in)  # an Irreps in, the output Irreps out (e3nn-jax evaluates the shapes)
            conv = Conv(irreps, self.irreps_attr, self.irreps_sh, gate_in, cfg)
            self.layer_irreps.append(dict(input=str(irreps), conv_out=str(gate_in), mid=str(conv.irreps_mid),
                                          gate_out=str(gate_out)))
            self.convs.append(conv)
            self.gate_out.append(gate_out)
            irreps = gate_out
        last = Conv(irreps, self.irreps_attr, self.irreps_sh, f"{cfg['num_targets']}x0e", cfg)
        self.layer_irreps.append(dict(input=str(irreps), conv_out=str(last.irreps_out), mid=str(last.irreps_mid),
                                      gate_out=""))
        self.convs.append(last)

    @staticmethod
    def gate(x):
        return e3nn.gate(x, even_act=gelu_exact, odd_act=jnp.tanh, even_gate_act=jax.nn.sigmoid,
                         odd_gate_act=jnp.tanh, normalize_act=True)

    def param_shapes(self):
        return [conv.param_shapes() for conv in self.convs]

    def num_parameters(self):
        return sum(math.prod(s) for s in jax.tree_util.tree_leaves(
            self.param_shapes(), is_leaf=lambda s: isinstance(s, tuple)))

    def init(self, key, dtype=jnp.float32):
        shapes = self.param_shapes()
        leaves, treedef = jax.tree_util.tree_flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
        keys = jax.random.split(key, len(leaves))
        return jax.tree_util.tree_unflatten(
            treedef, [jax.random.normal(k, s, dtype) for k, s in zip(keys, leaves)])  # e3nn's init: N(0, 1)


# ---------------------------------------------------------------- the network (forward)
def edge_tp(tp, w, x, sh):
    """The 'uvu' product per edge with per-edge weights w [edges, weight_numel]."""
    def one(we, a, b):
        return tp.left_right(we, e3nn.IrrepsArray(tp.irreps_in1, a), e3nn.IrrepsArray(tp.irreps_in2, b)).array
    return jax.vmap(one)(w, x, sh)


def radial_mlp(ws, emb, act):
    """e3nn FullyConnectedNet: x @ W / sqrt(fan_in), normalized activation between layers, no bias."""
    x = emb
    for k, w in enumerate(ws):
        x = x @ w / math.sqrt(w.shape[0])
        if k < len(ws) - 1:
            x = act(x)
    return x


def conv_apply(conv, p, x, attr, src, dst, sh, emb, act):
    weights = radial_mlp(p["radial"], emb, act)
    s = conv.sc(p["sc"], x, attr)
    h = conv.lin1(p["lin1"], x, attr)
    messages = edge_tp(conv.tp, weights, h[src], sh)
    agg = e3nn.scatter_sum(messages, dst=dst, output_size=x.shape[0]) / math.sqrt(conv.num_neighbors)
    return math.cos(math.pi / 8) * s + math.sin(math.pi / 8) * conv.lin2(p["lin2"], agg, attr)


def make_forward(net, num_graphs):
    cfg = net.cfg
    act = e3nn.normalize_function(gelu_exact)  # the radial MLP's normalized gelu

    def forward(params, species, pos, src, dst, graph_index):
        edge_vec = pos[dst] - pos[src]
        sh = e3nn.spherical_harmonics(net.irreps_sh, edge_vec, normalize=True, normalization="component").array
        edge_len = jnp.linalg.norm(edge_vec, axis=1)
        emb = e3nn.soft_one_hot_linspace(edge_len, start=0.0, end=cfg["max_radius"], number=cfg["num_basis"],
                                         basis="smooth_finite", cutoff=True) * RADIAL_BASIS_SCALE
        attr = jax.nn.one_hot(species, cfg["num_elements"], dtype=pos.dtype) * math.sqrt(cfg["num_elements"])
        x = attr
        for i, conv in enumerate(net.convs):
            x = conv_apply(conv, params[i], x, attr, src, dst, sh, emb, act)
            if i < len(net.convs) - 1:
                x = Network.gate(e3nn.IrrepsArray(conv.irreps_out, x)).array
        return e3nn.scatter_sum(x, dst=graph_index, output_size=num_graphs)

    return forward


def make_step_functions(net, num_graphs, donate):
    forward = make_forward(net, num_graphs)

    def loss_fn(params, batch, targets):
        return jnp.mean(jnp.abs(forward(params, *batch) - targets))

    def train_step(params, velocity, batch, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, targets)
        velocity = jax.tree_util.tree_map(lambda v, g: MOMENTUM * v + g, velocity, grads)
        params = jax.tree_util.tree_map(lambda p, v: p - LEARNING_RATE * v, params, velocity)
        return params, velocity, loss

    def predict(params, batch):
        return forward(params, *batch)

    train = jax.jit(train_step, donate_argnums=(0, 1) if donate else ())
    return train, jax.jit(predict), forward


# ---------------------------------------------------------------- timing
def block(tree):
    jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)
    return tree


def time_calls(fn, runs, warmup):
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        block(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def xla_flops(compiled):
    try:
        analysis = compiled.cost_analysis()
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0] if analysis else {}
        flops = analysis.get("flops")
        return float(flops) if flops is not None else None
    except Exception:  # cost analysis is optional; some backends/versions do not give it
        return None


def device_arrays(batch, molecules, num_targets):
    species = jnp.asarray(batch["species"], jnp.int32)
    pos = jnp.asarray(np.asarray(batch["positions"], np.float64).reshape(-1, 3), jnp.float32)
    src, dst, gidx = (jnp.asarray(batch[k], jnp.int32) for k in ("edge_src", "edge_dst", "graph_index"))
    targets = jax.random.normal(prng_key(1), (molecules, num_targets), jnp.float32)
    return (species, pos, src, dst, gidx), targets


def bench_shape(lmax, mul, fctp, args, batch_seed=BATCH_SEED):
    cfg = dict(DEFAULT_CONFIG, lmax=lmax, mul=mul, layers=6, fctp=fctp)
    net = Network(cfg)
    batch = load_batch(args.batch_json) if args.batch_json else generate_batch(batch_seed, args.molecules, MAX_HEAVY)
    inputs, targets = device_arrays(batch, args.molecules, cfg["num_targets"])
    params = net.init(prng_key(0))
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    donate = jax.default_backend() != "cpu"  # the CPU backend ignores donation (and warns)
    train, predict, _ = make_step_functions(net, args.molecules, donate)

    start = time.perf_counter()
    train_compiled = train.lower(params, velocity, inputs, targets).compile()
    compile_train_s = time.perf_counter() - start
    start = time.perf_counter()
    predict_compiled = predict.lower(params, inputs).compile()
    compile_predict_s = time.perf_counter() - start

    state = [params, velocity]

    def train_call():
        state[0], state[1], loss = train_compiled(state[0], state[1], inputs, targets)
        return state[0], state[1], loss

    losses = [float(train_call()[2]) for _ in range(3)]

    def predict_call():
        return predict_compiled(state[0], inputs)

    train_ms, train_min = time_calls(train_call, args.runs, args.warmup)
    predict_ms, predict_min = time_calls(predict_call, args.runs, args.warmup)
    return dict(system="e3nn-jax", e3nn_version=e3nn.__version__, jax_version=jax.__version__, fctp=fctp,
                lmax=lmax, mul=mul, layers=6, molecules=args.molecules,
                nodes=len(batch["species"]), edges=len(batch["edge_src"]), parameters=net.num_parameters(),
                train_step_median_ms=train_ms, train_step_min_ms=train_min, predict_median_ms=predict_ms,
                predict_min_ms=predict_min, predict_molecules_per_s=args.molecules / (predict_ms / 1e3),
                first_losses=losses, runs=args.runs, warmup=args.warmup,
                matmul_precision=args.precision, dtype="float32",
                timer="time.perf_counter around the call + block_until_ready on all outputs",
                compile_train_s=compile_train_s, compile_predict_s=compile_predict_s,
                xla_train_step_flops=xla_flops(train_compiled), xla_predict_flops=xla_flops(predict_compiled),
                layer_irreps=net.layer_irreps)


def parse_shapes(text):
    shapes = []
    for shape in text.split(","):
        try:
            lmax, mul = (int(v) for v in shape.split("x"))
        except ValueError:
            fail(f"--shapes: {shape!r}: expected LMAXxMUL, e.g. 1x128")
        if lmax not in (1, 2) or mul < 1:
            fail(f"--shapes: {shape!r}: lmax must be 1 or 2 and mul positive")
        shapes.append((lmax, mul))
    # small to large (XLA's compile time grows with the shape): by the work of the FCTPs ~ mul^2 (lmax+1)^2
    return sorted(shapes, key=lambda s: (s[1] ** 2 * (s[0] + 1) ** 2, s))


def device_name():
    d = jax.devices()[0]
    return getattr(d, "device_kind", str(d))  # e.g. "NVIDIA H100 80GB HBM3", as torch.cuda.get_device_name


# ---------------------------------------------------------------- self check
def self_check(args):
    ok = True
    print(f"e3nn-jax {e3nn.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, "
          f"device {device_name()}, matmul precision {args.precision}")
    # 1. the architecture: parameter counts of the four benchmark shapes against nn/README.md's table
    for (lmax, mul), want in sorted(EXPECTED_PARAMETERS.items()):
        for fctp in FCTP_FORMS:
            net = Network(dict(DEFAULT_CONFIG, lmax=lmax, mul=mul, layers=6, fctp=fctp))
            got = net.num_parameters()
            print(f"parameters lmax {lmax} mul {mul} {fctp}: {got} (nn/README.md: {want}) "
                  f"{'ok' if got == want else 'MISMATCH'}")
            ok &= got == want
            if (lmax, mul, fctp) == (1, 128, "legacy"):
                for i, layer in enumerate(net.layer_irreps):
                    print(f"  layer {i}: {layer}")
    for fctp in FCTP_FORMS:
        ok &= train_check(fctp)
    # 3. the benchmark path itself, tiny (the timing code is the same for both forms)
    for fctp in FCTP_FORMS[:1]:
        small = argparse.Namespace(molecules=2, runs=3, warmup=1, precision=args.precision)
        r = bench_shape(1, 8, fctp, small, batch_seed=7)
        print(f"bench path 1x8 {fctp}: train {r['train_step_median_ms']:.3f} ms, predict "
              f"{r['predict_median_ms']:.3f} ms, compile {r['compile_train_s']:.1f} s, XLA train FLOPs "
              f"{r['xla_train_step_flops']}, first losses {r['first_losses']}")
    print("self check " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


def train_check(fctp):
    """A 1x8 network on 2 molecules: gradients finite, predictions rotation invariant, loss goes down."""
    ok = True
    cfg = dict(DEFAULT_CONFIG, lmax=1, mul=8, layers=6, fctp=fctp)
    molecules = 2
    net = Network(cfg)
    batch = generate_batch(7, molecules, MAX_HEAVY)
    inputs, targets = device_arrays(batch, molecules, cfg["num_targets"])
    params = net.init(prng_key(0))
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    train, predict, _ = make_step_functions(net, molecules, donate=False)
    pred = predict(params, inputs)
    rot = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    rot = rot * np.sign(np.linalg.det(rot))  # a proper rotation
    species, pos, src, dst, gidx = inputs
    pred_rot = predict(params, (species, pos @ jnp.asarray(rot.T, jnp.float32), src, dst, gidx))
    rel = float(jnp.linalg.norm(pred_rot - pred) / jnp.linalg.norm(pred))
    print(f"predictions {np.asarray(pred).round(4).tolist()}; rotated input: relative change {rel:.2e}")
    ok &= rel < 1e-3
    losses = []
    for step in range(10):
        params, velocity, loss = train(params, velocity, inputs, targets)
        losses.append(float(loss))
        if step == 0:  # the velocity after the first step is the gradient
            grads = jax.tree_util.tree_leaves(velocity)
            finite = all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
            nonzero = sum(int(jnp.any(g != 0)) for g in grads)
            print(f"1x8 {fctp}, {molecules} molecules ({len(batch['species'])} nodes, "
                  f"{len(batch['edge_src'])} edges, {net.num_parameters()} parameters): gradients finite {finite}, "
                  f"{nonzero}/{len(grads)} parameter blocks with a nonzero gradient")
            ok &= finite and nonzero > 0
    print(f"losses over 10 SGD steps: {[round(v, 5) for v in losses]}")
    print(f"loss before {losses[0]:.6g}, after {losses[-1]:.6g}: {'down' if losses[-1] < losses[0] else 'NOT DOWN'}")
    ok &= losses[-1] < losses[0]
    return ok


def write_json(args, results, skipped):
    with open(args.json, "w") as f:
        json.dump(dict(device=device_name(), backend=jax.default_backend(), matmul_precision=args.precision,
                       results=results, skipped_shapes=skipped), f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="output JSON (required unless --self_check)")
    parser.add_argument("--shapes", default="1x128,1x256,2x128,2x512", help="lmax x mul, comma-separated")
    parser.add_argument("--molecules", type=int, default=27)
    parser.add_argument("--batch_json", help="time this batch (qm9-bench --save_batch FILE) instead of generating one")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max_seconds", type=float, default=float("inf"),
                        help="start no new shape after this many seconds (a shape compiling is not interrupted)")
    parser.add_argument("--precision", default="highest", choices=["highest", "default"],
                        help="JAX matmul precision: highest = fp32 accuracy; default = TF32 on NVIDIA GPUs")
    parser.add_argument("--fctp", default="legacy",
                        help="form(s) of the FCTPs sc/lin1/lin2, comma-separated: legacy (e3nn-torch's "
                             "FullyConnectedTensorProduct as e3nn-jax's legacy function) and/or tp_linear "
                             "(tensor_product then FunctionalLinear); each shape runs each form")
    parser.add_argument("--self_check", action="store_true",
                        help="check the architecture and train a 1x8 network on 2 molecules; no JSON")
    args = parser.parse_args()
    if args.batch_json:  # the molecule count comes from the file
        args.molecules = load_batch(args.batch_json)["num_graphs"]
    if args.molecules < 1 or args.runs < 1 or args.warmup < 0:
        fail("--molecules and --runs must be positive, --warmup not negative")
    forms = [f for f in args.fctp.split(",") if f]
    if not forms or any(f not in FCTP_FORMS for f in forms):
        fail(f"--fctp {args.fctp!r}: expected a comma-separated subset of {','.join(FCTP_FORMS)}")
    with matmul_precision(args.precision):
        if args.self_check:
            return self_check(args)
        if not args.json:
            fail("--json OUT is required")
        deadline = time.time() + args.max_seconds
        results, skipped = [], []
        print(f"e3nn-jax {e3nn.__version__}, jax {jax.__version__}, device {device_name()}, "
              f"matmul precision {args.precision}", flush=True)
        for (lmax, mul), fctp in ((shape, form) for shape in parse_shapes(args.shapes) for form in forms):
            if time.time() > deadline:
                print(f"--max_seconds {args.max_seconds:g} spent: not starting lmax {lmax} mul {mul} {fctp}",
                      flush=True)
                skipped.append(f"{lmax}x{mul} {fctp}")
                continue
            start = time.time()
            try:
                r = bench_shape(lmax, mul, fctp, args)
            except Exception as e:  # e.g. RESOURCE_EXHAUSTED: record it, go on with the next shape
                error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                print(f"lmax {lmax} mul {mul} {fctp}: failed after {time.time() - start:.0f} s: {error}", flush=True)
                results.append(dict(system="e3nn-jax", e3nn_version=e3nn.__version__, jax_version=jax.__version__,
                                    fctp=fctp, lmax=lmax, mul=mul, layers=6, molecules=args.molecules, error=error))
                write_json(args, results, skipped)
                continue
            results.append(r)
            print(f"lmax {lmax} mul {mul} {fctp}: {r['nodes']} nodes, {r['edges']} edges, "
                  f"{r['parameters']} parameters; "
                  f"train step {r['train_step_median_ms']:.2f} ms (min {r['train_step_min_ms']:.2f}), predict "
                  f"{r['predict_median_ms']:.2f} ms = {r['predict_molecules_per_s']:.0f} molecules/s; compile "
                  f"{r['compile_train_s']:.0f} + {r['compile_predict_s']:.0f} s [{time.time() - start:.0f} s]",
                  flush=True)
            write_json(args, results, skipped)  # after each shape: a cut-off run keeps what it measured
        write_json(args, results, skipped)
    return 0 if any("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
