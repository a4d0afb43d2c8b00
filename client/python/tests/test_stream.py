"""Client.stream / stream_forward: a bounded window of requests in flight, results in order."""

import threading

import grpc
import numpy as np
import pytest

import tpserve
from conftest import random_inputs


def test_stream_forward_yields_every_result_in_order(client, small_model):
    # Batches of different sizes and contents: a result out of order would not match.
    batches = [random_inputs(small_model, 1 + i % 5, np.float32, seed=100 + i) for i in range(40)]
    outs = list(client.stream_forward(small_model.name, batches, window=6))
    assert len(outs) == len(batches)
    for (x1, x2), out in zip(batches, outs):
        assert out.shape == (x1.shape[0], small_model.dim_out)
        # The server may merge streamed requests into one launch: same values, up to rounding.
        np.testing.assert_allclose(out, client.forward(small_model.name, x1, x2), rtol=1e-5, atol=1e-6)


def test_stream_keeps_at_most_window_requests_ahead(client, small_model):
    window = 4
    produced = 0
    lock = threading.Lock()
    ahead = []

    def ops():
        nonlocal produced
        for i in range(30):
            x1, x2 = random_inputs(small_model, 8, np.float32, seed=i)
            with lock:
                produced += 1
            yield tpserve.StreamForward(small_model.name, x1, x2)

    for answered, result in enumerate(client.stream(ops(), window=window), start=1):
        assert result.out.shape == (8, small_model.dim_out)
        with lock:
            ahead.append(produced - answered)
    # The iterable is read one op ahead of a free slot: at most window + 1 produced, unanswered.
    assert max(ahead) <= window + 1, ahead
    assert max(ahead) >= 2, f"the stream never had two requests in flight: {ahead}"


def test_stream_mixes_forward_backward_and_echo(client, small_model):
    x1, x2 = random_inputs(small_model, 3, np.float64, seed=1)
    grad_out = np.ones((3, small_model.dim_out))
    ops = [tpserve.StreamForward(small_model.name, x1, x2),
           tpserve.StreamBackward(small_model.name, x1, x2, grad_out=grad_out, want_grad_x1=True),
           tpserve.StreamEcho(b"ping"),
           tpserve.StreamForward(small_model.name, x1, x2, output_dtype=np.float32)]
    forward, backward, echo, forward32 = client.stream(ops, window=2)
    # The server computes in float32 and may merge the stream's launches with others (another
    # summation order): equal up to float32 rounding of the largest element, not elementwise to 1e-6
    # (a grad_x1 element of 0.085 from cancelling terms once differed by 1.2e-7).
    want_out = client.forward(small_model.name, x1, x2)
    np.testing.assert_allclose(forward.out, want_out, rtol=1e-6, atol=1e-6 * np.abs(want_out).max())
    want_grad = client.backward(small_model.name, x1, x2, grad_out=grad_out, want_grad_x1=True).grad_x1
    np.testing.assert_allclose(backward.grad_x1, want_grad, rtol=1e-6, atol=1e-6 * np.abs(want_grad).max())
    assert echo == b"ping"
    assert forward32.out.dtype == np.float32


def test_a_failed_request_is_raised_at_its_place_or_returned(client, small_model):
    x1, x2 = random_inputs(small_model, 2, np.float32)
    ops = [tpserve.StreamForward(small_model.name, x1, x2), tpserve.StreamForward("no-such-model", x1, x2),
           tpserve.StreamForward(small_model.name, x1, x2)]
    results = list(client.stream(ops, return_exceptions=True))
    assert isinstance(results[1], tpserve.NotFound) and results[1].code == grpc.StatusCode.NOT_FOUND
    np.testing.assert_allclose(results[0].out, results[2].out, rtol=1e-5, atol=1e-6)

    seen = []
    with pytest.raises(tpserve.NotFound):
        for result in client.stream(ops):
            seen.append(result)
    assert len(seen) == 1


def test_a_bad_op_in_the_iterable_raises_after_what_was_sent(client, small_model):
    x1, x2 = random_inputs(small_model, 2, np.float32)
    ops = [tpserve.StreamForward(small_model.name, x1, x2),
           tpserve.StreamForward(small_model.name, np.asfortranarray(np.ones((2, small_model.dim_in1), np.float32)), x2)]
    seen = []
    with pytest.raises(ValueError, match="C-contiguous"):
        for result in client.stream(ops, window=1):
            seen.append(result)
    assert len(seen) == 1


def test_leaving_the_loop_early_cancels_the_stream(client, small_model):
    def endless():
        i = 0
        while True:
            i += 1
            yield random_inputs(small_model, 2, np.float32, seed=i)

    outs = []
    for out in client.stream_forward(small_model.name, endless(), window=3):
        outs.append(out)
        if len(outs) == 5:
            break
    assert len(outs) == 5
    # The client still works (the cancelled stream released its resources).
    assert client.echo(b"after") == b"after"
