"""An e3nn user's round trip: module.weight (e3nn's flat layout) uploaded and downloaded unchanged,
and Forward / Backward matching e3nn's own numbers for every reference case in
TPSERVE_REFERENCE_DIR (../shared/reference, made by e3nn 0.6.0 in float64)."""

import numpy as np
import pytest

import tpserve
from conftest import load_reference, reference_cases, relative_error, unique_name

CASES = reference_cases()


def test_the_reference_cases_are_there():
    assert len(CASES) >= 3, f"expected e3nn reference cases, found {CASES}"


def create_from_case(client, case, weights):
    return client.create_model(unique_name(case["name"]), case["irreps_in1"], case["irreps_in2"],
                               case["irreps_out"], weights=weights)


@pytest.mark.parametrize("case_name", CASES)
def test_e3nn_weights_round_trip_bit_for_bit(client, case_name):
    case = load_reference(case_name)
    weight32 = case["weight"].astype(np.float32)  # what the server keeps
    info = create_from_case(client, case, weight32)
    assert info.weight_numel == case["weight_numel"] == weight32.size
    assert (info.dim_in1, info.dim_in2, info.dim_out) == (case["x1"].shape[1], case["x2"].shape[1],
                                                          case["out"].shape[1])
    assert info.num_paths == len(case["instructions"])
    # Irreps come back in e3nn's printing (modulo spaces around '+').
    for key in ("irreps_in1", "irreps_in2", "irreps_out"):
        assert getattr(info, key).replace(" ", "") == case[key + "_e3nn"].replace(" ", "")

    downloaded = client.download_weights(info.name)
    assert downloaded.dtype == np.float32 and downloaded.shape == weight32.shape
    assert downloaded.tobytes() == weight32.tobytes()  # bitwise
    assert info.weights_fnv1a64 == tpserve.fnv1a64(weight32)

    # float64 weights are rounded to float32 once, as numpy rounds them.
    info64 = client.upload_weights(info.name, case["weight"])
    assert client.download_weights(info.name).tobytes() == weight32.tobytes()
    assert info64.weights_fnv1a64 == info.weights_fnv1a64


@pytest.mark.parametrize("case_name", CASES)
def test_forward_and_backward_match_e3nn(client, case_name):
    case = load_reference(case_name)
    info = create_from_case(client, case, case["weight"])
    out = client.forward(info.name, case["x1"], case["x2"])
    assert out.dtype == np.float64
    assert relative_error(out, case["out"]) < 1e-5
    out32 = client.forward(info.name, case["x1"].astype(np.float32), case["x2"].astype(np.float32))
    assert out32.dtype == np.float32 and relative_error(out32, case["out"]) < 1e-5

    grads = client.backward(info.name, case["x1"], case["x2"], grad_out=case["grad_out"], want_grad_x1=True,
                            want_grad_x2=True, weight_grad="return")
    assert relative_error(grads.grad_x1, case["grad_x1"]) < 1e-5
    assert relative_error(grads.grad_x2, case["grad_x2"]) < 1e-5
    assert relative_error(grads.grad_weight, case["grad_weight"]) < 1e-5

    seed_task = client.backward_chunked(info.name, case["x1"], case["x2"], loss="sum_tanh", want_out=True)
    assert relative_error(seed_task.grad_weight, case["grad_weight_sum_tanh"]) < 1e-5
    assert relative_error(seed_task.out, case["out"]) < 1e-5
