#!/usr/bin/env python3
"""Small .npy helper for the deployment tests (the standard library only; no numpy here).

  npy_tool.py random PATH ROWS COLS SEED   float32 [ROWS, COLS] of uniform(-1, 1) values
  npy_tool.py relerr A.npy B.npy            prints max|a-b| / max|b| (float32 or float64 files)
"""
import ast
import random
import struct
import sys


def write_f32(path, rows, cols, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
    # The header (with magic, version and length) is padded to a multiple of 64 bytes, ending in \n.
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(struct.pack("<%df" % len(values), *values))


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise SystemExit("%s: not a .npy file" % path)
    major = data[6]
    if major == 1:
        (length,) = struct.unpack("<H", data[8:10])
        start = 10
    else:
        (length,) = struct.unpack("<I", data[8:12])
        start = 12
    header = ast.literal_eval(data[start:start + length].decode("latin1"))
    code = {"<f4": "f", "<f8": "d"}.get(header["descr"])
    if code is None or header["fortran_order"]:
        raise SystemExit("%s: expected C-order float32 or float64, got %s" % (path, header))
    body = data[start + length:]
    count = len(body) // struct.calcsize(code)
    return list(struct.unpack("<%d%s" % (count, code), body)), header["shape"]


def main(argv):
    if len(argv) == 6 and argv[1] == "random":
        rows, cols, seed = int(argv[3]), int(argv[4]), int(argv[5])
        rng = random.Random(seed)
        write_f32(argv[2], rows, cols, [rng.uniform(-1, 1) for _ in range(rows * cols)])
        return 0
    if len(argv) == 4 and argv[1] == "relerr":
        a, shape_a = read(argv[2])
        b, shape_b = read(argv[3])
        if tuple(shape_a) != tuple(shape_b):
            raise SystemExit("shapes differ: %s vs %s" % (shape_a, shape_b))
        scale = max(abs(v) for v in b) or 1.0
        print("%.3g" % (max(abs(x - y) for x, y in zip(a, b)) / scale))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
