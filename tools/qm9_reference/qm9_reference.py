#!/usr/bin/env python3
"""Reference cases for tpserve's QM9 network (nn/), computed with e3nn on PyTorch.

Builds the network of issue 19 (as nn/README.md describes it) from e3nn's own modules
(FullyConnectedTensorProduct, TensorProduct 'uvu', FullyConnectedNet, Gate, spherical_harmonics,
soft_one_hot_linspace), generates small deterministic QM9-shaped graph batches, fills the network
with parameters from tpserve's flat layout, and writes one JSON per case: config, layout, graphs,
params, targets, predictions, L1 loss, the gradient of every parameter and the node features after
every Conv+Gate layer.

The normalize2mom constants of e3nn are Monte Carlo estimates (1e6 samples); the tool replaces them
by the exact second moments (trapezoid rule, the same sum nn/ computes) and records both.

Usage (on a machine with torch and e3nn):
    python3 tools/qm9_reference/qm9_reference.py --out DIR [--cases NAME,...] [--fp32-device cpu|cuda]
"""

import argparse
import json
import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the molecule generator lives in a torch-free module (qm9_anchor_jax.py imports it too); re-exported here
from qm9_molecules import COVALENT_RADIUS, ELEMENTS, VALENCE, generate_batch, load_batch  # noqa: E402,F401

FORMAT = "tpserve-qm9-reference-1"
RADIAL_BASIS_SCALE = math.sqrt(5.0) * 1.1  # issue 19: smooth_finite basis times sqrt(5) * 1.1

# name, dtype, config overrides, number of graphs, heavy atoms per graph (max), seed
CASES = [
    ("lmax1_mul4_layers3_fp64", "float64", dict(lmax=1, mul=4, layers=3, radial_hidden=16), 3, 6, 101),
    ("lmax2_mul4_layers3_fp64", "float64", dict(lmax=2, mul=4, layers=3, radial_hidden=16), 3, 6, 102),
    ("lmax1_mul8_layers2_fp64", "float64", dict(lmax=1, mul=8, layers=2, radial_hidden=64), 2, 9, 103),
    ("lmax2_mul2_layers4_fp64", "float64", dict(lmax=2, mul=2, layers=4, radial_hidden=8), 2, 5, 104),
    ("lmax1_mul4_layers3_fp32", "float32", dict(lmax=1, mul=4, layers=3, radial_hidden=16), 3, 6, 105),
]

DEFAULT_CONFIG = dict(lmax=1, mul=128, layers=6, num_elements=5, num_targets=4, num_basis=10,
                      max_radius=1.9, radial_hidden=64, radial_layers=2, num_neighbors=2.1)


def fail(message):
    print(f"qm9_reference: error: {message}", file=sys.stderr)
    sys.exit(1)


try:
    import torch
except ImportError as e:  # pragma: no cover
    fail(f"PyTorch is needed ({e}); run this on the GPU machine")
try:
    import e3nn
    from e3nn import o3
    from e3nn.math import normalize2mom, soft_one_hot_linspace
    from e3nn.nn import FullyConnectedNet, Gate
except ImportError as e:  # pragma: no cover
    fail(f"e3nn is needed ({e})")


# ---------------------------------------------------------------- exact activation constants
def gelu_exact(z):
    return 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


ACTIVATIONS = {"gelu": gelu_exact, "tanh": math.tanh, "sigmoid": sigmoid}


def second_moment_constant(f):
    """1 / sqrt(E[f(z)^2]) for z ~ N(0, 1): trapezoid rule, h = 1/256 on [-20, 20] (as nn/ does)."""
    h = 1.0 / 256.0
    n = 20 * 256
    total = 0.0
    for i in range(-n, n + 1):
        z = i * h
        total += f(z) ** 2 * math.exp(-0.5 * z * z)
    moment = total * h / math.sqrt(2.0 * math.pi)
    return 1.0 / math.sqrt(moment)


# ---------------------------------------------------------------- the network
def tp_path_exists(irreps_in1, irreps_in2, ir_out):
    ir_out = o3.Irrep(ir_out)
    return any(ir_out in ir1 * ir2 for _, ir1 in o3.Irreps(irreps_in1) for _, ir2 in o3.Irreps(irreps_in2))


class Convolution(torch.nn.Module):
    """Issue 19's Conv: cos(pi/8) * sc + sin(pi/8) * lin2(scatter(tp(lin1(x)[src], sh, fc(emb))))."""

    def __init__(self, irreps_in, irreps_attr, irreps_sh, irreps_out, cfg):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.num_neighbors = cfg["num_neighbors"]
        self.sc = o3.FullyConnectedTensorProduct(self.irreps_in, irreps_attr, self.irreps_out)
        self.lin1 = o3.FullyConnectedTensorProduct(self.irreps_in, irreps_attr, self.irreps_in)
        irreps_mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_edge) in enumerate(o3.Irreps(irreps_sh)):
                for ir_out in ir_in * ir_edge:
                    if ir_out in self.irreps_out or ir_out == o3.Irrep("0e"):
                        instructions.append((i, j, len(irreps_mid), "uvu", True))
                        irreps_mid.append((mul, ir_out))
        irreps_mid, p, _ = o3.Irreps(irreps_mid).sort()
        instructions = [(i1, i2, p[io], mode, train) for i1, i2, io, mode, train in instructions]
        self.irreps_mid = irreps_mid
        self.tp = o3.TensorProduct(self.irreps_in, irreps_sh, irreps_mid, instructions,
                                   internal_weights=False, shared_weights=False)
        hs = [cfg["num_basis"]] + cfg["radial_layers"] * [cfg["radial_hidden"]] + [self.tp.weight_numel]
        self.fc = FullyConnectedNet(hs, torch.nn.functional.gelu)
        self.lin2 = o3.FullyConnectedTensorProduct(irreps_mid, irreps_attr, self.irreps_out)

    def forward(self, x, attr, edge_src, edge_dst, edge_sh, edge_emb):
        weight = self.fc(edge_emb)
        s = self.sc(x, attr)
        h = self.lin1(x, attr)
        edge_features = self.tp(h[edge_src], edge_sh, weight)
        agg = x.new_zeros(x.shape[0], edge_features.shape[1]).index_add_(0, edge_dst, edge_features)
        agg = agg / math.sqrt(self.num_neighbors)
        return math.cos(math.pi / 8) * s + math.sin(math.pi / 8) * self.lin2(agg, attr)


def hidden_irreps(lmax, mul):
    return o3.Irreps([(mul, (l, p)) for l in range(lmax + 1) for p in (1, -1)])


class Network(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.irreps_sh = o3.Irreps.spherical_harmonics(cfg["lmax"])
        self.irreps_attr = o3.Irreps(f"{cfg['num_elements']}x0e")
        hidden = hidden_irreps(cfg["lmax"], cfg["mul"])
        irreps = self.irreps_attr
        self.convs, self.gates = torch.nn.ModuleList(), torch.nn.ModuleList()
        self.layer_irreps = []
        for _ in range(cfg["layers"] - 1):
            scalars = o3.Irreps([(m, ir) for m, ir in hidden if ir.l == 0 and tp_path_exists(irreps, self.irreps_sh, ir)])
            gated = o3.Irreps([(m, ir) for m, ir in hidden if ir.l > 0 and tp_path_exists(irreps, self.irreps_sh, ir)])
            gates = o3.Irreps([(m, "0e") for m, _ in gated])
            acts = [torch.nn.functional.gelu if ir.p == 1 else torch.tanh for _, ir in scalars]
            gate = Gate(scalars, acts, gates, [torch.sigmoid] * len(gates), gated)
            conv = Convolution(irreps, self.irreps_attr, self.irreps_sh, gate.irreps_in, cfg)
            self.layer_irreps.append(dict(input=str(irreps), conv_out=str(gate.irreps_in), mid=str(conv.irreps_mid),
                                          gate_out=str(gate.irreps_out)))
            self.convs.append(conv)
            self.gates.append(gate)
            irreps = gate.irreps_out
        last = Convolution(irreps, self.irreps_attr, self.irreps_sh, f"{cfg['num_targets']}x0e", cfg)
        self.layer_irreps.append(dict(input=str(irreps), conv_out=str(last.irreps_out), mid=str(last.irreps_mid),
                                      gate_out=""))
        self.convs.append(last)

    def forward(self, species, pos, edge_src, edge_dst, graph_index, num_graphs, features=None):
        cfg = self.cfg
        edge_vec = pos[edge_dst] - pos[edge_src]
        edge_sh = o3.spherical_harmonics(self.irreps_sh, edge_vec, True, normalization="component")
        edge_len = edge_vec.norm(dim=1)
        edge_emb = soft_one_hot_linspace(edge_len, 0.0, cfg["max_radius"], cfg["num_basis"], basis="smooth_finite",
                                         cutoff=True) * RADIAL_BASIS_SCALE
        attr = torch.nn.functional.one_hot(species, cfg["num_elements"]).to(pos.dtype) * math.sqrt(cfg["num_elements"])
        x = attr
        for conv, gate in zip(self.convs, self.gates):
            x = gate(conv(x, attr, edge_src, edge_dst, edge_sh, edge_emb))
            if features is not None:
                features.append(x.detach().reshape(-1).tolist())
        x = self.convs[-1](x, attr, edge_src, edge_dst, edge_sh, edge_emb)
        return x.new_zeros(num_graphs, x.shape[1]).index_add_(0, graph_index, x)


def patch_normalize2mom(model):
    """Replaces e3nn's Monte Carlo normalize2mom constants by the exact ones; returns both."""
    exact = {name: second_moment_constant(f) for name, f in ACTIVATIONS.items()}
    torch_fn = {torch.nn.functional.gelu: "gelu", torch.tanh: "tanh", torch.sigmoid: "sigmoid"}
    mc, patched = {}, 0
    for module in model.modules():
        if isinstance(module, normalize2mom):
            name = torch_fn.get(module.f)
            if name is None:
                fail(f"unexpected activation in normalize2mom: {module.f}")
            mc[name] = float(module.cst)
            module.cst = exact[name]
            module._is_id = False
            patched += 1
    # gelu is always there (radial MLP); tanh only once odd scalars appear, sigmoid once l > 0 is gated
    if patched == 0 or "gelu" not in mc:
        fail(f"found {patched} normalize2mom modules for {sorted(mc)}; expected at least gelu")
    for module in model.modules():  # the patch took: each module now computes cst * f exactly
        if isinstance(module, normalize2mom):
            name = torch_fn[module.f]
            got = float(module(torch.tensor([0.7], dtype=torch.float64))[0])
            want = exact[name] * ACTIVATIONS[name](0.7)
            if abs(got - want) > 1e-12 * abs(want):
                fail(f"normalize2mom patch for {name}: got {got!r}, expected {want!r}")
    return exact, mc


# ---------------------------------------------------------------- layout of the flat parameter vector
def parameter_layout(model):
    """tpserve's layout: per layer sc, lin1, radial.w0.., lin2 (torch's named_parameters order)."""
    layout, offset = [], 0
    for i, conv in enumerate(model.convs):
        blocks = [("sc", conv.sc.weight)] if conv.sc.weight_numel > 0 else []
        blocks += [("lin1", conv.lin1.weight)] if conv.lin1.weight_numel > 0 else []
        blocks += [(f"radial.w{k}", getattr(conv.fc, f"layer{k}").weight) for k in range(len(conv.fc.hs) - 1)]
        blocks += [("lin2", conv.lin2.weight)] if conv.lin2.weight_numel > 0 else []
        for name, param in blocks:
            layout.append(dict(name=f"layer{i}.{name}", offset=offset, numel=param.numel(), shape=list(param.shape),
                               param=param))
            offset += param.numel()
    named = [p for _, p in model.named_parameters()]
    if len(named) != len(layout) or any(a is not b["param"] for a, b in zip(named, layout)):
        fail("the layout does not cover model.named_parameters() in order: "
             f"{[n for n, _ in model.named_parameters()]}")
    return layout, offset


# ---------------------------------------------------------------- one case
def run_case(name, dtype_name, overrides, num_graphs, max_heavy, seed, device):
    cfg = dict(DEFAULT_CONFIG, **overrides)
    dtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    # e3nn computes its 3j tables and constants in the default dtype when a module is built (and
    # soft_one_hot_linspace its smooth_finite constant when called): build and run in the case's dtype.
    torch.set_default_dtype(dtype)
    torch.manual_seed(seed)
    model = Network(cfg)
    exact, mc = patch_normalize2mom(model)
    layout, num_params = parameter_layout(model)
    rng = random.Random(seed * 7919)
    params = [rng.gauss(0.0, 1.0) for _ in range(num_params)]  # e3nn's init: N(0, 1)
    batch = generate_batch(seed, num_graphs, max_heavy)
    targets = [rng.gauss(0.0, 1.0) for _ in range(num_graphs * cfg["num_targets"])]
    model = model.to(device=device, dtype=dtype)
    layout, _ = parameter_layout(model)
    flat = torch.tensor(params, dtype=torch.float64)
    with torch.no_grad():
        for block in layout:
            values = flat[block["offset"]: block["offset"] + block["numel"]].reshape(block["shape"])
            block["param"].copy_(values.to(device=device, dtype=dtype))
    as_long = lambda v: torch.tensor(v, dtype=torch.long, device=device)
    pos = torch.tensor(batch["positions"], dtype=torch.float64).reshape(-1, 3).to(device=device, dtype=dtype)
    features = []
    out = model(as_long(batch["species"]), pos, as_long(batch["edge_src"]), as_long(batch["edge_dst"]),
                as_long(batch["graph_index"]), num_graphs, features)
    target_tensor = torch.tensor(targets, dtype=torch.float64).reshape(num_graphs, -1).to(device=device, dtype=dtype)
    loss = (out - target_tensor).abs().mean()
    model.zero_grad()
    loss.backward()
    gradient = []
    for block in layout:
        if block["param"].grad is None:
            fail(f"{name}: no gradient for {block['name']}")
        gradient.extend(block["param"].grad.detach().reshape(-1).double().cpu().tolist())
    probe = soft_one_hot_linspace(torch.tensor([cfg["max_radius"] / (cfg["num_basis"] + 1)], dtype=torch.float64),
                                  0.0, cfg["max_radius"], cfg["num_basis"], basis="smooth_finite", cutoff=True)
    smooth_finite_constant = float(probe[0, 0]) * math.exp(2.0)  # the basis at its own center is C * e^-2
    return dict(
        format=FORMAT, name=name, dtype=dtype_name, device=str(device), e3nn_version=e3nn.__version__,
        torch_version=torch.__version__, config=cfg,
        constants=dict(normalize2mom_exact=exact, normalize2mom_e3nn_monte_carlo=mc,
                       radial_basis_scale=RADIAL_BASIS_SCALE, smooth_finite_constant=smooth_finite_constant),
        layer_irreps=model.layer_irreps,
        layout=[{k: v for k, v in block.items() if k != "param"} for block in layout], num_parameters=num_params,
        graphs=batch, params=params, targets=targets,
        predictions=out.detach().reshape(-1).double().cpu().tolist(), loss=float(loss), gradient=gradient,
        layer_features=features)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for the JSON cases (created)")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--fp32-device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="device of the float32 case (auto: cuda when available); fp64 runs on the CPU")
    args = parser.parse_args()
    wanted = [c for c in args.cases.split(",") if c]
    unknown = set(wanted) - {c[0] for c in CASES}
    if unknown:
        fail(f"unknown case(s) {sorted(unknown)}; known: {[c[0] for c in CASES]}")
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"e3nn {e3nn.__version__}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
    for name, dtype_name, overrides, num_graphs, max_heavy, seed in CASES:
        if wanted and name not in wanted:
            continue
        device = "cpu"
        if dtype_name == "float32" and args.fp32_device != "cpu":
            if torch.cuda.is_available():
                device = "cuda"
            elif args.fp32_device == "cuda":
                fail("--fp32-device cuda but torch.cuda.is_available() is False")
        start = time.time()
        try:
            case = run_case(name, dtype_name, overrides, num_graphs, max_heavy, seed, torch.device(device))
        except Exception as e:  # report which case failed, then stop
            import traceback
            traceback.print_exc()
            fail(f"case {name} failed: {type(e).__name__}: {e}")
        path = os.path.join(args.out, f"{name}.json")
        with open(path, "w") as f:
            json.dump(case, f, separators=(",", ":"))
        print(f"{name}: {case['num_parameters']} parameters, {len(case['graphs']['species'])} nodes, "
              f"{len(case['graphs']['edge_src'])} edges, loss {case['loss']:.6g}, device {device}, "
              f"{os.path.getsize(path) / 1e6:.2f} MB, {time.time() - start:.1f} s -> {path}")
        print(f"  layer irreps: {case['layer_irreps']}")
        print(f"  normalize2mom exact {case['constants']['normalize2mom_exact']} "
              f"e3nn MC {case['constants']['normalize2mom_e3nn_monte_carlo']}")


if __name__ == "__main__":
    main()
