#!/usr/bin/env python3
"""Prints, per case, our tp-bench median against the best anchor median of the same call.

    python3 tools/anchors/compare.py TP_BENCH.json ANCHOR.json [ANCHOR.json ...] [--markdown]

A case is (task, precision, batch). ratio = anchor / ours: above 1 we are faster. For each framework the
best (lowest median) variant counts. Exit status 0; cases an anchor lacks show '-'.
"""
import json
import sys


def main(argv):
    markdown = "--markdown" in argv
    paths = [a for a in argv if a != "--markdown"]
    if len(paths) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    ours = {}
    for r in json.load(open(paths[0]))["results"]:
        if r.get("backend") == "cuda":
            ours[(r["task"], r["precision"], r["batch"])] = r
    best = {}  # framework -> case -> (median, variant)
    for path in paths[1:]:
        for r in json.load(open(path))["results"]:
            key = (r["task"], r["precision"], r["batch"])
            per = best.setdefault(r["framework"], {})
            if "error" in r:  # the anchor could not run the case (out of memory, say)
                per.setdefault(key, (None, r["error"].split(":")[0]))
                continue
            if key not in per or per[key][0] is None or r["median_ms"] < per[key][0]:
                per[key] = (r["median_ms"], r["variant"])
    frameworks = sorted(best)
    head = ["task", "precision", "batch", "ours ms", "floor ms"]
    for f in frameworks:
        head += [f"{f} ms", f"{f} / ours"]
    rows = []
    for key in sorted(ours, key=lambda k: (k[0], k[1], k[2])):
        r = ours[key]
        row = [key[0], key[1], str(key[2]), f"{r['median_ms']:.4f}", f"{r['floor_ms']:.4f}" if r.get("floor_ms") else "-"]
        for f in frameworks:
            if key in best[f] and best[f][key][0] is None:
                row += [f"failed ({best[f][key][1]})", "-"]
            elif key in best[f]:
                median, variant = best[f][key]
                row += [f"{median:.4f} ({variant})", f"{median / r['median_ms']:.2f}x"]
            else:
                row += ["-", "-"]
        rows.append(row)
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        for row in [head] + rows:
            print("  ".join(x.ljust(w) for x, w in zip(row, widths)))
    losses = [row for row in rows if any(c.endswith("x") and float(c[:-1]) < 1.0 for c in row)]
    print(f"\n{len(rows)} cases; {len(losses)} where an anchor is faster than ours")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
