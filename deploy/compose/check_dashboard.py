#!/usr/bin/env python3
"""Runs every query of the Grafana dashboard against a Prometheus HTTP API; each must return data.

  check_dashboard.py PROMETHEUS_URL DASHBOARD.json [--rate-window 1m]

Grafana's $__rate_interval becomes --rate-window. A query passes when it returns at least one
series and at least one series has a finite value (a quantile over an empty window is NaN).
Prints one line per query (series count, a value) and exits 1 if any query failed.
"""
import argparse
import json
import math
import sys
import urllib.parse
import urllib.request


def query(url, expr):
    data = urllib.parse.urlencode({"query": expr}).encode()
    with urllib.request.urlopen(url.rstrip("/") + "/api/v1/query", data, timeout=10) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError("Prometheus: %s" % body)
    return body["data"]["result"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("prometheus")
    parser.add_argument("dashboard")
    parser.add_argument("--rate-window", default="1m")
    args = parser.parse_args()
    with open(args.dashboard) as f:
        dashboard = json.load(f)
    failures = 0
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", args.rate_window)
            checked += 1
            try:
                result = query(args.prometheus, expr)
            except Exception as error:  # the query itself is wrong: report it with the rest
                print("FAIL  %s / %s: %s" % (panel["title"], target["refId"], error))
                failures += 1
                continue
            finite = [r for r in result if math.isfinite(float(r["value"][1]))]
            ok = bool(finite)
            failures += not ok
            sample = ""
            if finite:
                labels = ",".join("%s=%s" % kv for kv in sorted(finite[0]["metric"].items()))
                sample = "  e.g. {%s} %.4g" % (labels, float(finite[0]["value"][1]))
            print("%s  %-45s %s  %d series%s" % ("ok  " if ok else "FAIL", panel["title"][:45], target["refId"],
                                                 len(result), sample))
            if not ok:
                print("      query: %s" % expr)
    print("%d of %d dashboard queries returned data" % (checked - failures, checked))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
