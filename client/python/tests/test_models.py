"""ModelService through tpserve.Client: create (seeded and uploaded), get, list, delete, weights up
and down, the gradient buffer and SGD steps."""

import grpc
import numpy as np
import pytest

import tpserve
from conftest import random_inputs, unique_name

SPEC = ("3x0e + 2x1o", "2x0e + 1x1o", "2x0e + 2x1o")


def test_create_seeded_then_get_and_list_agree(client):
    name = unique_name()
    created = client.create_model(name, *SPEC, seed=3)
    assert created.name == name and created.version >= 1
    assert created.dim_in1 == 3 + 2 * 3 and created.dim_in2 == 2 + 3 and created.dim_out == 2 + 2 * 3
    assert created.weight_numel > 0 and created.num_paths > 0
    assert client.get_model(name) == created
    listed = {info.name: info for info in client.list_models()}
    assert listed[name] == created
    names = [info.name for info in client.list_models()]
    assert names == sorted(names), "ListModels is sorted by name"
    client.delete_model(name)
    with pytest.raises(tpserve.NotFound) as error:
        client.get_model(name)
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert name not in [info.name for info in client.list_models()]


def test_same_seed_gives_same_weights_and_another_seed_does_not(client):
    a, b, c = unique_name(), unique_name(), unique_name()
    client.create_model(a, *SPEC, seed=11)
    client.create_model(b, *SPEC, seed=11)
    client.create_model(c, *SPEC, seed=12)
    wa, wb, wc = (client.download_weights(n) for n in (a, b, c))
    assert wa.dtype == np.float32
    np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(wa, wc)
    assert abs(float(np.std(wa)) - 1.0) < 0.5, "e3nn's N(0, 1) initialization"


def test_create_with_weights_uploads_them_in_chunks(server):
    # A 7-element chunk size: the upload and the download both take many messages.
    with tpserve.Client(server.target, chunk_elements=7) as small_chunks:
        name = unique_name()
        probe = small_chunks.create_model(unique_name(), *SPEC, seed=0)
        weights = np.random.default_rng(1).standard_normal(probe.weight_numel).astype(np.float32)
        info = small_chunks.create_model(name, *SPEC, weights=weights)
        assert info.weights_fnv1a64 == tpserve.fnv1a64(weights)
        got = small_chunks.download_weights(name, chunk_elements=5)
        np.testing.assert_array_equal(got, weights)


def test_upload_replaces_weights_and_bumps_the_version(client, small_model):
    weights = np.linspace(-1, 1, small_model.weight_numel, dtype=np.float64)
    info = client.upload_weights(small_model.name, weights)
    assert info.version > small_model.version
    np.testing.assert_array_equal(client.download_weights(small_model.name), weights.astype(np.float32))
    # Optimistic concurrency: a stale expected_version is refused and changes nothing.
    with pytest.raises(tpserve.FailedPrecondition) as error:
        client.upload_weights(small_model.name, -weights, expected_version=small_model.version)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert client.get_model(small_model.name).version == info.version
    client.upload_weights(small_model.name, -weights, expected_version=info.version)
    np.testing.assert_array_equal(client.download_weights(small_model.name), (-weights).astype(np.float32))


def test_upload_of_the_wrong_length_is_invalid_argument(client, small_model):
    with pytest.raises(tpserve.TpServeError) as error:
        client.upload_weights(small_model.name, np.zeros(small_model.weight_numel + 1, np.float32))
    assert error.value.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    assert str(small_model.weight_numel) in error.value.details


def test_create_twice_is_already_exists_and_bad_irreps_invalid_argument(client):
    name = unique_name()
    client.create_model(name, *SPEC)
    with pytest.raises(tpserve.AlreadyExists) as error:
        client.create_model(name, *SPEC)
    assert error.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(tpserve.InvalidArgument) as error:
        client.create_model(unique_name(), "3x0e + banana", *SPEC[1:])
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "banana" in error.value.details or "irreps" in error.value.details.lower()


def test_accumulated_gradient_and_sgd_step(client, small_model):
    name = small_model.name
    x1, x2 = random_inputs(small_model, 6, np.float64, seed=2)
    grad_out = np.random.default_rng(3).standard_normal((6, small_model.dim_out))
    returned = client.backward(name, x1, x2, grad_out=grad_out, weight_grad="return").grad_weight
    assert returned.shape == (small_model.weight_numel,) and np.any(returned != 0)

    client.zero_gradient(name)
    np.testing.assert_array_equal(client.get_gradient(name), np.zeros(small_model.weight_numel, np.float32))
    for _ in range(2):
        result = client.backward(name, x1, x2, grad_out=grad_out, weight_grad="accumulate")
        assert result.grad_weight is None
    accumulated = client.get_gradient(name, chunk_elements=10)
    np.testing.assert_allclose(accumulated, 2 * returned, rtol=1e-5, atol=1e-6)

    before = client.download_weights(name)
    stepped = client.sgd_step(name, 0.25, zero_gradient=True)
    assert stepped.version > small_model.version
    np.testing.assert_allclose(client.download_weights(name), before - 0.25 * accumulated, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(client.get_gradient(name), np.zeros(small_model.weight_numel, np.float32))
