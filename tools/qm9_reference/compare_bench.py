#!/usr/bin/env python3
"""Ours (qm9-bench --json) against the e3nn anchors (qm9_anchor_bench.py --json, and the e3nn-jax
anchor qm9_anchor_jax.py with the same schema) at each shape, for the training step and Predict:
medians in ms, ratio = anchor / ours (above 1: ours is faster), and issue 19's goal for the step.

Usage:
    compare_bench.py --ours LABEL=FILE [--ours LABEL=FILE ...] [--anchor LABEL=FILE ...] [--markdown]

The first --ours present is the one the ratios and the goal column use (qm9_gpu.sh passes the
per-species fp32 CUDA-graph run first). A file that does not exist is left out with a note (a run
that failed, no e3nn-jax on the machine). Standard library only.
"""

import argparse
import json
import os
import sys

# issue 19: one training step on the H100, ms
GOAL_STEP_MS = {(1, 128): 1.0, (1, 256): 1.5, (2, 128): 2.0, (2, 512): 10.0}


def fail(message):
    print(f"compare_bench.py: {message}", file=sys.stderr)
    sys.exit(2)


def labelled(spec, flag):
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        fail(f"{flag}: expected LABEL=FILE, got {spec!r}")
    return label, path


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")


def load_ours(path):
    """qm9-bench: {"benchmark": "qm9-bench", "results": [{lmax, mul, step_ms: {median}, predict_ms: {median}, ...}]}."""
    doc = read_json(path)
    if doc.get("benchmark") != "qm9-bench":
        fail(f"{path}: expected qm9-bench's JSON (\"benchmark\": \"qm9-bench\")")
    rows = {}
    for r in doc.get("results", []):
        try:
            rows[(int(r["lmax"]), int(r["mul"]))] = dict(
                step=float(r["step_ms"]["median"]), predict=float(r["predict_ms"]["median"]),
                nodes=r.get("nodes"), edges=r.get("edges"), device=r.get("device", ""))
        except (KeyError, TypeError, ValueError) as e:
            fail(f"{path}: result without {e}")
    return rows


def load_anchor(path):
    """qm9_anchor_bench.py / qm9_anchor_jax.py: {"device", "results": [{lmax, mul, train_step_median_ms,
    predict_median_ms, nodes, edges, system, ...}]}."""
    doc = read_json(path)
    rows = {}
    for r in doc.get("results", []):
        try:
            rows[(int(r["lmax"]), int(r["mul"]))] = dict(
                step=float(r["train_step_median_ms"]), predict=float(r["predict_median_ms"]),
                nodes=r.get("nodes"), edges=r.get("edges"), device=doc.get("device", ""))
        except (KeyError, TypeError, ValueError) as e:
            fail(f"{path}: result without {e}")
    return rows


def ms(value):
    return "-" if value is None else f"{value:.3f}"


def ratio(anchor, ours):
    return "-" if anchor is None or ours is None or ours <= 0 else f"{anchor / ours:.2f}x"


def table(title, header, rows, markdown):
    print(f"\n{title}")
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header] + rows:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", action="append", required=True, metavar="LABEL=FILE", help="qm9-bench --json output")
    parser.add_argument("--anchor", action="append", default=[], metavar="LABEL=FILE",
                        help="qm9_anchor_bench.py / qm9_anchor_jax.py --json output (skipped when absent)")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = parser.parse_args()

    def present(specs, flag):
        for label, path in (labelled(s, flag) for s in specs):
            if os.path.exists(path):
                yield label, path
            else:
                print(f"note: {label}: {path} not there, column left out")

    ours = [(label, load_ours(path)) for label, path in present(args.ours, "--ours")]
    anchors = [(label, load_anchor(path)) for label, path in present(args.anchor, "--anchor")]
    if not ours:
        fail("none of the --ours files is there")

    shapes = sorted({shape for _, rows in ours + anchors for shape in rows})
    primary_label, primary = ours[0]
    print(f"ms, median; ratio = anchor / {primary_label} (above 1: ours is faster)")
    for label, rows in ours + anchors:
        sizes = sorted({(r["nodes"], r["edges"]) for r in rows.values()}, key=str)
        devices = sorted({r["device"] for r in rows.values()})
        print(f"  {label}: {', '.join(f'{n} nodes / {e} edges' for n, e in sizes)}; {'; '.join(devices)}")

    for what, title in (("step", "training step (forward, L1 loss, backward, SGD momentum)"),
                        ("predict", "Predict (forward only)")):
        header = ["lmax, mul"] + [label for label, _ in ours]
        for label, _ in anchors:
            header += [label, f"{label} / ours"]
        if what == "step":
            header += ["goal", f"{primary_label} / goal"]
        rows = []
        for shape in shapes:
            base = primary.get(shape, {}).get(what)
            row = [f"{shape[0]}x{shape[1]}"] + [ms(rows_.get(shape, {}).get(what)) for _, rows_ in ours]
            for _, rows_ in anchors:
                value = rows_.get(shape, {}).get(what)
                row += [ms(value), ratio(value, base)]
            if what == "step":
                goal = GOAL_STEP_MS.get(shape)
                row += ["-" if goal is None else f"<= {goal:g}",
                        "-" if goal is None or base is None else f"{base / goal:.2f}x"]
            rows.append(row)
        table(title, header, rows, args.markdown)


if __name__ == "__main__":
    main()
