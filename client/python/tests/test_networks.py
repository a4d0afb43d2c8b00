"""NetworkService through tpserve.Client: a QM9 network model created, Predict on a hand-built
batch of two molecules, TrainStep lowering the loss, and the errors a bad graph or a tensor-product
model get."""

import grpc
import numpy as np
import pytest

import tpserve
from conftest import unique_name

NUM_TARGETS = 4  # the server's default for Qm9Spec.num_targets


def two_molecules():
    """Water (O, H, H) and methane's carbon with two hydrogens (C, H, H), bonds in both directions:
    (species, positions, edge_src, edge_dst, graph_index, num_graphs)."""
    species = np.array([3, 0, 0, 1, 0, 0], dtype=np.int32)  # O H H | C H H
    positions = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0],
                          [5.0, 5.0, 5.0], [6.09, 5.0, 5.0], [4.64, 6.03, 5.0]], dtype=np.float64)
    bonds = [(0, 1), (0, 2), (3, 4), (3, 5)]
    edge_src = np.array([a for a, b in bonds] + [b for a, b in bonds], dtype=np.int32)
    edge_dst = np.array([b for a, b in bonds] + [a for a, b in bonds], dtype=np.int32)
    graph_index = np.array([0, 0, 0, 1, 1, 1], dtype=np.int32)
    return species, positions, edge_src, edge_dst, graph_index, 2


@pytest.fixture
def qm9_model(client):
    name = unique_name("qm9")
    info = client.create_qm9_model(name, lmax=1, mul=4, layers=3, seed=7)
    yield name, info
    client.delete_model(name)


def test_create_qm9_model_reports_kind_and_config(client, qm9_model):
    name, info = qm9_model
    assert info.name == name and info.kind == "qm9"
    assert info.qm9 is not None
    assert (info.qm9.lmax, info.qm9.mul, info.qm9.layers) == (1, 4, 3)
    assert info.qm9.num_targets == NUM_TARGETS and info.qm9.num_elements >= 5
    assert info.weight_numel > 0
    assert info.device == "cpu"  # --backend=cpu: --network_device auto is the CPU
    assert client.get_model(name) == info


def test_predict_gives_finite_outputs_and_repeats_exactly(client, qm9_model):
    name, _ = qm9_model
    graphs = two_molecules()
    first = client.predict(name, *graphs)
    assert first.shape == (2, NUM_TARGETS)
    assert first.dtype == np.float64
    assert np.all(np.isfinite(first))
    assert not np.array_equal(first[0], first[1]), "two different molecules, two different outputs"
    np.testing.assert_array_equal(client.predict(name, *graphs), first)


def test_train_steps_lower_the_loss(client, qm9_model):
    name, info = qm9_model
    graphs = two_molecules()
    targets = np.array([[1.0, -0.5, 0.25, 2.0], [-1.0, 0.5, 1.5, -2.0]])
    losses = [client.train_step(name, *graphs, targets, learning_rate=1e-2, momentum=0.9) for _ in range(15)]
    assert all(isinstance(loss, float) and np.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0], f"losses {losses}"
    after = client.get_model(name)
    assert after.version == info.version + 15, "every step commits one version"
    # The loss TrainStep reports is the L1 loss of its predictions before the update.
    step = client.train_step_with_info(name, *graphs, targets)
    np.testing.assert_allclose(step.loss, np.mean(np.abs(step.predictions - targets)), rtol=1e-12)


def test_edge_index_out_of_range_is_invalid_argument(client, qm9_model):
    name, _ = qm9_model
    species, positions, edge_src, edge_dst, graph_index, num_graphs = two_molecules()
    edge_dst = edge_dst.copy()
    bad_node = len(species) + 3  # no such node
    edge_dst[0] = bad_node
    with pytest.raises(tpserve.InvalidArgument) as error:
        client.predict(name, species, positions, edge_src, edge_dst, graph_index, num_graphs)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # The server names the edge entry and the index that is out of range.
    assert f"edge_dst[0] = {bad_node}" in str(error.value), str(error.value)


def test_predict_on_a_tensor_product_model_is_failed_precondition(client, small_model):
    with pytest.raises(tpserve.FailedPrecondition) as error:
        client.predict(small_model.name, *two_molecules())
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
