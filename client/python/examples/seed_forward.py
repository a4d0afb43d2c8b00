#!/usr/bin/env python3
"""The seed task from Python: Forward of FullyConnectedTensorProduct(128x0e+128x1e+128x2e, same, same)
on a tpserve, unary and streamed, checked before it is timed.

    PYTHONPATH=client/python:build/client/python/gen \\
        python3 client/python/examples/seed_forward.py --server localhost:50051 [--batch 64]

Uses the server's model `seed` (tools/run.sh creates it with --demo_model seed), or creates it
with seeded weights when it is missing. Prints the median unary latency and the streamed
throughput; exits 1 when a check fails.
"""

import argparse
import statistics
import sys
import time

import numpy as np

import tpserve

SEED_IRREPS = "128x0e + 128x1e + 128x2e"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="localhost:50051", help="HOST:PORT of tpserve")
    parser.add_argument("--token", default=None, help="bearer token (servers started with --auth_token)")
    parser.add_argument("--tls-ca", default=None, help="PEM file of the server certificate's root (enables TLS)")
    parser.add_argument("--model", default="seed")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=20, help="unary calls timed (after one warm-up)")
    parser.add_argument("--stream-batches", type=int, default=64, help="batches sent over one Stream")
    parser.add_argument("--window", type=int, default=8, help="Stream requests in flight")
    parser.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default=None)
    args = parser.parse_args()

    with tpserve.Client(args.server, token=args.token, root_certificates=args.tls_ca, timeout=120) as client:
        try:
            info = client.get_model(args.model)
        except tpserve.NotFound:
            print(f"creating {args.model} (seeded weights) ...")
            info = client.create_model(args.model, SEED_IRREPS, SEED_IRREPS, SEED_IRREPS, seed=0)
        print(f"model {info.name}: {info.irreps_in1} x {info.irreps_in2} -> {info.irreps_out}, "
              f"{info.weight_numel:,} weights, version {info.version}")

        rng = np.random.default_rng(0)
        x1 = rng.standard_normal((args.batch, info.dim_in1), dtype=np.float32)
        x2 = rng.standard_normal((args.batch, info.dim_in2), dtype=np.float32)

        # Check before timing: the map is bilinear, so doubling x1 doubles out.
        result = client.forward_with_info(info.name, x1, x2, precision=args.precision)
        out = result.out
        doubled = client.forward(info.name, 2 * x1, x2, precision=args.precision)
        error = float(np.linalg.norm(doubled - 2 * out) / max(np.linalg.norm(out), 1e-30))
        tolerance = 1e-5 if args.precision in (None, "fp32") else 2e-2
        print(f"out {list(out.shape)} {out.dtype} on {result.device}; |f(2 x1, x2) - 2 f(x1, x2)| / |f| = {error:.1e}")
        if out.shape != (args.batch, info.dim_out) or not np.all(np.isfinite(out)) or error > tolerance:
            print("FAILED: forward check", file=sys.stderr)
            return 1

        latencies_ms = []
        for _ in range(args.iters):
            start = time.perf_counter()
            client.forward(info.name, x1, x2, precision=args.precision)
            latencies_ms.append((time.perf_counter() - start) * 1e3)
        print(f"unary Forward, batch {args.batch}: p50 {statistics.median(latencies_ms):.2f} ms "
              f"over {args.iters} calls")

        batches = [(x1, x2)] * args.stream_batches
        start = time.perf_counter()
        streamed = 0
        for streamed_out in client.stream_forward(info.name, batches, window=args.window, precision=args.precision):
            if streamed == 0 and not np.allclose(streamed_out, out, rtol=1e-4, atol=1e-4):
                print("FAILED: the streamed result differs from the unary one", file=sys.stderr)
                return 1
            streamed += 1
        seconds = time.perf_counter() - start
        print(f"Stream, window {args.window}: {streamed} batches in {seconds:.2f} s = "
              f"{streamed * args.batch / seconds:,.0f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
