"""Fixtures: real tpserve processes (CPU backend, loopback, a free port) and clients of them.

TPSERVE_BIN names the tpserve binary (the ctest driver sets it); TPSERVE_REFERENCE_DIR the e3nn
reference cases (default: ../shared/reference next to the checkout). Missing either is an error,
not a skip: CI must run these tests.
"""

import itertools
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

import tpserve

REPO = pathlib.Path(__file__).resolve().parents[3]
_names = itertools.count()


def tpserve_binary():
    path = os.environ.get("TPSERVE_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"TPSERVE_BIN must name the tpserve binary (got {path!r}); run through ctest "
                    "(client/python/tests/run_suite.sh)")
    return path


def reference_dir():
    return pathlib.Path(os.environ.get("TPSERVE_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


def load_reference(name):
    path = reference_dir() / f"ref_{name}.json"
    if not path.exists():
        pytest.fail(f"e3nn reference case {path} is missing (TPSERVE_REFERENCE_DIR)")
    with open(path) as f:
        case = json.load(f)
    for key in ("weight", "x1", "x2", "out", "grad_out", "grad_weight", "grad_x1", "grad_x2", "grad_weight_sum_tanh"):
        case[key] = np.asarray(case[key], dtype=np.float64)
    return case


def reference_cases():
    return sorted(p.stem[len("ref_"):] for p in reference_dir().glob("ref_*.json"))


def unique_name(prefix="m"):
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def relative_error(got, want):
    """||got - want|| / ||want|| (as the C++ tests measure it)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


class _ReservedPort:
    """A loopback port picked by the kernel and released at once (tpserve binds without
    SO_REUSEPORT, so no socket of ours may keep holding it). The port stays out of the kernel's
    next port-0 picks for a while, which is what tests that stop and restart a server on the same
    port rely on."""

    def __init__(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self._address = probe.getsockname()

    def getsockname(self):
        return self._address

    def close(self):
        pass


def reserve_port():
    """A loopback port for a test that stops and restarts a server on it (see _ReservedPort)."""
    return _ReservedPort()


class ServerProcess:
    """One tpserve process on loopback, CPU backend, no metrics listener."""

    _starts = itertools.count()

    def __init__(self, model_dir, log_dir, extra_args=(), port=0):
        self.model_dir = pathlib.Path(model_dir)
        self.log_dir = pathlib.Path(log_dir)
        self.extra_args = list(extra_args)
        self.requested_port = port
        self.port = None
        self.process = None
        self.log_path = None

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s=30.0):
        # Each start logs to a file of its own: an earlier start's port line is never read again.
        self.log_path = self.log_dir / f"tpserve.{next(self._starts)}.log"
        args = [tpserve_binary(), f"--listen=127.0.0.1:{self.requested_port}", "--metrics_address=",
                f"--model_dir={self.model_dir}", "--backend=cpu", *self.extra_args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(r"serving on port (\d+)", self.log_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                self.requested_port = self.port  # a restart comes back on the same port
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        pytest.fail(f"tpserve did not start ({' '.join(args)}):\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self, sig=signal.SIGTERM, timeout_s=30.0):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self):
        self.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("server")
    process = ServerProcess(base / "models", base).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def client(server):
    with tpserve.Client(server.target, timeout=60) as c:
        yield c


@pytest.fixture
def small_model(client):
    """A seeded model with every path kind (scalars, vectors, l=2), small enough for the CPU."""
    name = unique_name("small")
    info = client.create_model(name, "4x0e + 3x1o + 2x2e", "2x0e + 2x1o", "4x0e + 3x1o + 2x2e + 1x1e", seed=7)
    yield info
    try:
        client.delete_model(name)
    except tpserve.NotFound:
        pass


def random_inputs(info, batch, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((batch, info.dim_in1)).astype(dtype)
    x2 = rng.standard_normal((batch, info.dim_in2)).astype(dtype)
    return x1, x2
