"""TensorProductService through tpserve.Client: Forward in every dtype, Backward and
BackwardChunked checked against identities of a bilinear map, Echo."""

import numpy as np
import pytest

from conftest import random_inputs


def test_forward_answers_in_the_dtype_of_x1(client, small_model):
    x1, x2 = random_inputs(small_model, 5, np.float64)
    want = client.forward(small_model.name, x1, x2)
    assert want.dtype == np.float64 and want.shape == (5, small_model.dim_out)
    assert np.any(want != 0)
    for dtype, tolerance in ((np.float32, 1e-6), (np.float16, 5e-3)):
        out = client.forward(small_model.name, x1.astype(dtype), x2.astype(dtype))
        assert out.dtype == dtype and out.shape == want.shape
        # float16 inputs are rounded before the server sees them; compare with what it was sent.
        exact = client.forward(small_model.name, x1.astype(dtype).astype(np.float64),
                               x2.astype(dtype).astype(np.float64))
        assert np.max(np.abs(out - exact)) <= tolerance * max(1.0, np.max(np.abs(exact)))


@pytest.mark.parametrize("output_dtype, numpy_dtype", [
    (np.float32, np.float32), (np.float64, np.float64), ("float16", np.float16), ("bfloat16", np.float32)])
def test_forward_output_dtype(client, small_model, output_dtype, numpy_dtype):
    x1, x2 = random_inputs(small_model, 3, np.float32)
    reference = client.forward(small_model.name, x1, x2)
    out = client.forward(small_model.name, x1, x2, output_dtype=output_dtype)
    assert out.dtype == numpy_dtype
    rtol = {np.float16: 1e-3, np.float32: 1e-6, np.float64: 1e-6}[numpy_dtype]
    if output_dtype == "bfloat16":  # 8 bits of mantissa, returned exactly as float32
        rtol = 8e-3
        assert np.all(out.view(np.uint32) & 0xFFFF == 0)
    np.testing.assert_allclose(out, reference, rtol=rtol, atol=rtol * np.max(np.abs(reference)))


def test_forward_is_bilinear(client, small_model):
    x1, x2 = random_inputs(small_model, 4, np.float64, seed=5)
    y1, _ = random_inputs(small_model, 4, np.float64, seed=6)
    f = lambda a, b: client.forward(small_model.name, a, b)  # noqa: E731
    np.testing.assert_allclose(f(2 * x1 + y1, x2), 2 * f(x1, x2) + f(y1, x2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f(x1, -3 * x2), -3 * f(x1, x2), rtol=1e-5, atol=1e-5)


def test_forward_with_info_reports_version_batch_and_device(client, small_model):
    x1, x2 = random_inputs(small_model, 2)
    result = client.forward_with_info(small_model.name, x1, x2)
    assert result.model_version == small_model.version
    assert result.executed_batch >= 2
    assert result.device == "cpu"


def test_backward_gradients_satisfy_eulers_identity(client, small_model):
    # out is linear in each of x1, x2 and the weights, so <grad_z, z> = <grad_out, out> for each.
    name = small_model.name
    x1, x2 = random_inputs(small_model, 5, np.float64, seed=8)
    grad_out = np.random.default_rng(9).standard_normal((5, small_model.dim_out))
    out = client.forward(name, x1, x2)
    result = client.backward(name, x1, x2, grad_out=grad_out, want_grad_x1=True, want_grad_x2=True,
                             weight_grad="return")
    assert result.grad_x1.shape == x1.shape and result.grad_x2.shape == x2.shape
    assert result.out is None
    weights = client.download_weights(name).astype(np.float64)
    want = np.sum(grad_out * out, axis=1)
    np.testing.assert_allclose(np.sum(result.grad_x1 * x1, axis=1), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.sum(result.grad_x2 * x2, axis=1), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.dot(result.grad_weight, weights), np.sum(want), rtol=1e-4, atol=1e-5)


def test_backward_with_a_loss_returns_out_and_the_loss_gradient(client, small_model):
    name = small_model.name
    x1, x2 = random_inputs(small_model, 4, np.float64, seed=10)
    out = client.forward(name, x1, x2)
    tanh = client.backward(name, x1, x2, loss="sum_tanh", want_out=True, want_grad_x1=True)
    np.testing.assert_allclose(tanh.out, out, rtol=1e-6, atol=1e-6)
    explicit = client.backward(name, x1, x2, grad_out=1 - np.tanh(out) ** 2, want_grad_x1=True)
    np.testing.assert_allclose(tanh.grad_x1, explicit.grad_x1, rtol=1e-5, atol=1e-6)
    plain = client.backward(name, x1, x2, loss="sum", want_grad_x2=True)
    ones = client.backward(name, x1, x2, grad_out=np.ones_like(out), want_grad_x2=True)
    np.testing.assert_allclose(plain.grad_x2, ones.grad_x2, rtol=1e-5, atol=1e-6)


def test_backward_chunked_equals_backward(client, small_model):
    name = small_model.name
    x1, x2 = random_inputs(small_model, 3, np.float32, seed=11)
    inline = client.backward(name, x1, x2, loss="sum_tanh", weight_grad="return", want_grad_x1=True)
    chunked = client.backward_chunked(name, x1, x2, loss="sum_tanh", want_grad_x1=True)
    assert chunked.grad_weight.shape == (small_model.weight_numel,)
    np.testing.assert_array_equal(chunked.grad_weight, inline.grad_weight)
    np.testing.assert_array_equal(chunked.grad_x1, inline.grad_x1)
    assert chunked.model_version == small_model.version


def test_echo_returns_the_payload(client):
    payload = bytes(range(256)) * 1000
    assert client.echo(payload) == payload
    assert client.echo(response_bytes=1234) == bytes(1234)
