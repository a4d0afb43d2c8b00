"""Errors: the server's statuses become exceptions carrying the gRPC code and message; inputs the
wire cannot carry are refused before any call; deadlines end calls."""

import time

import grpc
import numpy as np
import pytest

import tpserve
from conftest import random_inputs, reserve_port, unique_name


def test_unknown_model_is_not_found_for_every_call(client):
    x = np.zeros((1, 4), np.float32)
    calls = {
        "GetModel": lambda: client.get_model("no-such-model"),
        "DeleteModel": lambda: client.delete_model("no-such-model"),
        "DownloadWeights": lambda: client.download_weights("no-such-model"),
        "UploadWeights": lambda: client.upload_weights("no-such-model", np.zeros(4, np.float32)),
        "GetGradient": lambda: client.get_gradient("no-such-model"),
        "ZeroGradient": lambda: client.zero_gradient("no-such-model"),
        "SgdStep": lambda: client.sgd_step("no-such-model", 0.1),
        "Forward": lambda: client.forward("no-such-model", x, x),
        "Backward": lambda: client.backward("no-such-model", x, x, loss="sum", want_grad_x1=True),
        "BackwardChunked": lambda: client.backward_chunked("no-such-model", x, x, loss="sum"),
    }
    for method, call in calls.items():
        with pytest.raises(tpserve.NotFound) as error:
            call()
        assert error.value.code == grpc.StatusCode.NOT_FOUND, method
        assert error.value.method == method
        assert "no-such-model" in error.value.details, (method, error.value.details)
        assert str(error.value).startswith(f"{method}: NOT_FOUND: ")


def test_wrong_shapes_are_invalid_argument_naming_what_was_expected(client, small_model):
    x1, x2 = random_inputs(small_model, 3)
    wrong_dim = np.zeros((3, small_model.dim_in1 + 1), np.float32)
    with pytest.raises(tpserve.InvalidArgument) as error:
        client.forward(small_model.name, wrong_dim, x2)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(small_model.dim_in1) in error.value.details, error.value.details
    with pytest.raises(tpserve.InvalidArgument) as error:
        client.forward(small_model.name, x1, x2[:2].copy())  # batch 3 against 2
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(tpserve.InvalidArgument):
        client.backward(small_model.name, x1, x2, grad_out=np.zeros((3, small_model.dim_out + 2)), want_grad_x1=True)


def test_non_finite_inputs_are_invalid_argument(client, small_model):
    x1, x2 = random_inputs(small_model, 2)
    x1[1, 0] = np.nan
    with pytest.raises(tpserve.InvalidArgument) as error:
        client.forward(small_model.name, x1, x2)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_arrays_the_wire_cannot_carry_are_refused_before_any_call(client, small_model):
    x1, x2 = random_inputs(small_model, 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        client.forward(small_model.name, np.asfortranarray(x1), x2)
    with pytest.raises(ValueError, match="C-contiguous"):
        client.forward(small_model.name, x1, np.ascontiguousarray(np.hstack([x2, x2]))[:, ::2])
    with pytest.raises(TypeError, match="float32, float64, float16"):
        client.forward(small_model.name, x1.astype(np.int32), x2)
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        client.forward(small_model.name, x1[0], x2)
    with pytest.raises(ValueError, match="exactly one cotangent"):
        client.backward(small_model.name, x1, x2)
    with pytest.raises(ValueError, match="flat"):
        client.upload_weights(small_model.name, np.zeros((2, 2), np.float32))
    # Big-endian arrays are fine: swapped on the way out.
    np.testing.assert_array_equal(client.forward(small_model.name, x1.astype(">f4"), x2.astype(">f4")),
                                  client.forward(small_model.name, x1, x2))


def test_a_deadline_shorter_than_the_work_is_deadline_exceeded(client):
    info = client.create_model(unique_name("deadline"), "32x0e + 32x1o + 32x2e", "32x0e + 32x1o + 32x2e",
                               "32x0e + 32x1o + 32x2e", seed=1)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((512, info.dim_in1)).astype(np.float32)
    x2 = rng.standard_normal((512, info.dim_in2)).astype(np.float32)
    start = time.monotonic()
    with pytest.raises(tpserve.DeadlineExceeded) as error:
        client.forward(info.name, x1, x2, timeout=0.005)
    assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 5
    assert client.forward(info.name, x1[:2], x2[:2], timeout=30).shape == (2, info.dim_out)


def test_the_deadline_bounds_waiting_for_a_server_that_never_comes():
    holder = reserve_port()
    try:
        port = holder.getsockname()[1]
        with tpserve.Client(f"127.0.0.1:{port}", wait_for_ready=True) as waiting:
            start = time.monotonic()
            with pytest.raises(tpserve.DeadlineExceeded):
                waiting.list_models(timeout=0.5)
            elapsed = time.monotonic() - start
            assert 0.4 <= elapsed < 5, elapsed
        with tpserve.Client(f"127.0.0.1:{port}", retry=tpserve.NO_RETRIES) as failing_fast:
            start = time.monotonic()
            with pytest.raises(tpserve.Unavailable) as error:
                failing_fast.list_models(timeout=10)
            assert error.value.code == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - start < 5
    finally:
        holder.close()
