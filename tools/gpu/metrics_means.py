#!/usr/bin/env python3
"""Mean per call (ms) of tpserve's Forward stage histograms between two /metrics scrapes:
   metrics_means.py BEFORE.txt AFTER.txt   (BEFORE may be /dev/null)"""
import re
import sys

SERIES = [
    ("handler", "tp_request_latency_seconds", 'method="Forward"'),
    ("read", "tp_rpc_stage_seconds", 'stage="read"'),
    ("core", "tp_rpc_stage_seconds", 'stage="core"'),
    ("write", "tp_rpc_stage_seconds", 'stage="write"'),
    ("queue", "tp_queue_time_seconds", ""),
    ("launch", "tp_compute_time_seconds", ""),
    ("device", "tp_launch_stage_seconds", 'stage="device"'),
]


def totals(path):
    out = {}
    for line in open(path):
        m = re.match(r"(\w+)_(sum|count)\{([^}]*)\} (\S+)", line)
        if not m:
            continue
        for tag, name, label in SERIES:
            if m.group(1) == name and label in m.group(3) and ('method="' not in m.group(3) or 'method="Forward"' in m.group(3)):
                key = (tag, m.group(2))
                out[key] = out.get(key, 0.0) + float(m.group(4))
    return out


before, after = totals(sys.argv[1]), totals(sys.argv[2])
parts = []
for tag, _, _ in SERIES:
    n = after.get((tag, "count"), 0) - before.get((tag, "count"), 0)
    s = after.get((tag, "sum"), 0) - before.get((tag, "sum"), 0)
    parts.append(f"{tag} {1e3 * s / n:.3f}" if n > 0 else f"{tag} -")
print(", ".join(parts), f"(ms; {int(after.get(('handler', 'count'), 0) - before.get(('handler', 'count'), 0))} calls)")
