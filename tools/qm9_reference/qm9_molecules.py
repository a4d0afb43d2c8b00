#!/usr/bin/env python3
"""QM9-shaped molecules for tpserve's QM9 reference tools, with no dependency but the standard library.

Both qm9_reference.py / qm9_anchor_bench.py (e3nn on PyTorch) and qm9_anchor_jax.py (e3nn-jax) take
their batches from here, so the anchors time the same graphs. Deterministic: stdlib `random`, seeded.
"""

import math
import random

ELEMENTS = "HCNOF"
COVALENT_RADIUS = {"H": 0.31, "C": 0.76, "N": 0.71, "O": 0.66, "F": 0.57}
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}


def random_direction(rng):
    while True:
        v = [rng.gauss(0.0, 1.0) for _ in range(3)]
        n = math.sqrt(sum(c * c for c in v))
        if n > 1e-3:
            return [c / n for c in v]


def place_atom(rng, atoms, anchor, bond_length, min_distance):
    for _ in range(200):
        d = random_direction(rng)
        p = [anchor[k] + bond_length * d[k] for k in range(3)]
        if all(math.dist(p, q) >= min_distance for _, q in atoms):
            return p
    return None


def generate_molecule(rng, max_heavy):
    """A tree of 1..max_heavy heavy atoms (C, N, O, F) at ~1.45 A with hydrogens at ~1.05 A."""
    num_heavy = rng.randint(max(1, max_heavy // 2), max_heavy)
    atoms, degree = [], []
    for h in range(num_heavy):
        element = rng.choices("CNOF", weights=[6, 2, 2, 1])[0] if h > 0 else "C"
        if h == 0:
            atoms.append((element, [rng.uniform(-1, 1) for _ in range(3)]))
            degree.append(0)
            continue
        hosts = [i for i, (e, _) in enumerate(atoms) if e != "H" and degree[i] < VALENCE[e]]
        if not hosts:
            break
        host = rng.choice(hosts)
        p = place_atom(rng, atoms, atoms[host][1], rng.uniform(1.38, 1.52), 1.30)
        if p is None:
            break
        atoms.append((element, p))
        degree[host] += 1
        degree.append(1)
    for i in range(len(degree)):
        element, anchor = atoms[i]
        for _ in range(max(0, VALENCE[element] - degree[i])):
            p = place_atom(rng, atoms, anchor, rng.uniform(1.0, 1.1), 1.0)
            if p is not None:
                atoms.append(("H", p))
    return atoms


def bonds(atoms):
    edges = []
    for a, (ea, pa) in enumerate(atoms):
        for b, (eb, pb) in enumerate(atoms):
            if a != b and math.dist(pa, pb) < 1.15 * (COVALENT_RADIUS[ea] + COVALENT_RADIUS[eb]):
                edges.append((a, b))
    return edges


def generate_batch(seed, num_graphs, max_heavy):
    rng = random.Random(seed)
    batch = dict(species=[], positions=[], edge_src=[], edge_dst=[], graph_index=[], num_graphs=num_graphs)
    for g in range(num_graphs):
        atoms = generate_molecule(rng, max_heavy)
        base = len(batch["species"])
        for a, b in bonds(atoms):
            batch["edge_src"].append(base + a)
            batch["edge_dst"].append(base + b)
        for element, p in atoms:
            batch["species"].append(ELEMENTS.index(element))
            batch["positions"].extend(p)
            batch["graph_index"].append(g)
    return batch


def load_batch(path):
    """A graph batch saved by `qm9-bench --save_batch FILE` (JSON with the keys of generate_batch), so
    that the anchors time the very molecules qm9-bench timed."""
    import json
    with open(path) as f:
        batch = json.load(f)
    for key in ("species", "positions", "edge_src", "edge_dst", "graph_index", "num_graphs"):
        if key not in batch:
            raise ValueError(f"{path}: no '{key}' (expected the JSON of qm9-bench --save_batch)")
    nodes = len(batch["species"])
    if len(batch["positions"]) != 3 * nodes or len(batch["graph_index"]) != nodes:
        raise ValueError(f"{path}: {nodes} species but {len(batch['positions'])} position values and "
                         f"{len(batch['graph_index'])} graph indices (expected {3 * nodes} and {nodes})")
    if len(batch["edge_src"]) != len(batch["edge_dst"]):
        raise ValueError(f"{path}: edge_src and edge_dst differ in length")
    return batch
