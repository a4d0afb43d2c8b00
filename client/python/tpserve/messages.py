"""Request messages built from numpy arrays, and results read back from responses: one place for
the unary calls and the Stream ops alike."""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._stubs import pb
from .results import BackwardResult, ForwardResult, TrainStepResult
from .tensors import decode_tensor, encode_tensor, wire_dtype

_PRECISIONS = {None: pb.PRECISION_UNSPECIFIED, "fp32": pb.PRECISION_FP32, "tf32": pb.PRECISION_TF32,
               "bf16": pb.PRECISION_BF16}
_LOSSES = {"sum": pb.LOSS_SUM, "sum_tanh": pb.LOSS_SUM_TANH}
_WEIGHT_GRADS = {None: pb.WEIGHT_GRAD_NONE, "none": pb.WEIGHT_GRAD_NONE, "return": pb.WEIGHT_GRAD_RETURN,
                 "accumulate": pb.WEIGHT_GRAD_ACCUMULATE}


def _pick(table, value, what):
    if value not in table:
        names = ", ".join(repr(k) for k in table)
        raise ValueError(f"{what}: expected one of {names}; got {value!r}")
    return table[value]


def forward_request(model, x1, x2, output_dtype=None, precision=None):
    return pb.ForwardRequest(model=model, x1=encode_tensor(x1, "x1"), x2=encode_tensor(x2, "x2"),
                             output_dtype=wire_dtype(output_dtype),
                             precision=_pick(_PRECISIONS, precision, "precision"))


def backward_request(model, x1, x2, grad_out=None, loss=None, want_grad_x1=False, want_grad_x2=False,
                     want_out=False, weight_grad=None, output_dtype=None, precision=None):
    if (grad_out is None) == (loss is None):
        raise ValueError("backward: pass exactly one cotangent: grad_out=[batch, dim_out] array or loss='sum'|'sum_tanh'")
    request = pb.BackwardRequest(
        model=model, x1=encode_tensor(x1, "x1"), x2=encode_tensor(x2, "x2"), want_grad_x1=want_grad_x1,
        want_grad_x2=want_grad_x2, want_out=want_out,
        weight_grad=_pick(_WEIGHT_GRADS, weight_grad, "weight_grad"), output_dtype=wire_dtype(output_dtype),
        precision=_pick(_PRECISIONS, precision, "precision"))
    if grad_out is not None:
        request.grad_out.CopyFrom(encode_tensor(grad_out, "grad_out"))
    else:
        request.loss = _pick(_LOSSES, loss, "loss")
    return request


def forward_result(response):
    return ForwardResult(out=decode_tensor(response.out, "out"), model_version=response.model_version,
                         executed_batch=response.executed_batch, device=response.device)


def backward_result(response, grad_weight=None):
    def optional(field):
        return decode_tensor(getattr(response, field), field) if response.HasField(field) else None

    if grad_weight is None:
        grad_weight = optional("grad_weight")
    return BackwardResult(out=optional("out"), grad_x1=optional("grad_x1"), grad_x2=optional("grad_x2"),
                          grad_weight=grad_weight, model_version=response.model_version,
                          executed_batch=response.executed_batch, device=response.device)


# ---- Network models (kind "qm9"): graph batches as the server reads them ----

_INT32 = np.iinfo(np.int32)


def _index_vector(values, what):
    """A 1-D integer array-like as a C-order little-endian int32 array (values must fit int32)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D integer array; got shape {list(array.shape)}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what}: expected integers; got dtype {array.dtype}")
    if array.size and (array.min() < _INT32.min or array.max() > _INT32.max):
        raise ValueError(f"{what}: values must fit int32")
    return np.ascontiguousarray(array, dtype="<i4")


def graph_batch(species, positions, edge_src, edge_dst, graph_index, num_graphs):
    """A tp.v1.GraphBatch: nodes of all graphs concatenated; species, edge_src, edge_dst and
    graph_index integer vectors (sent as int32), positions [num_nodes, 3] (sent as float64). The
    server checks the values (indices in range, species known) and names what is wrong."""
    species = _index_vector(species, "species")
    graph_index = _index_vector(graph_index, "graph_index")
    edge_src = _index_vector(edge_src, "edge_src")
    edge_dst = _index_vector(edge_dst, "edge_dst")
    if edge_src.size != edge_dst.size:
        raise ValueError(f"edge_src and edge_dst: expected the same length; got {edge_src.size} and {edge_dst.size}")
    positions = np.asarray(positions)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions: expected [num_nodes, 3]; got shape {list(positions.shape)}")
    if not np.issubdtype(positions.dtype, np.floating):
        raise TypeError(f"positions: expected floats; got dtype {positions.dtype}")
    positions = np.ascontiguousarray(positions, dtype="<f8")
    edge_index = np.ascontiguousarray(np.stack([edge_src, edge_dst]), dtype="<i4")  # [2, num_edges]

    def tensor(array, dtype):
        return pb.Tensor(shape=list(array.shape), dtype=dtype, data=array.tobytes())

    return pb.GraphBatch(species=tensor(species, pb.DTYPE_INT32), positions=tensor(positions, pb.DTYPE_FLOAT64),
                         edge_index=tensor(edge_index, pb.DTYPE_INT32),
                         graph_index=tensor(graph_index, pb.DTYPE_INT32), num_graphs=int(num_graphs))


def train_step_result(response):
    return TrainStepResult(loss=response.loss, model_version=response.model_version,
                           predictions=decode_tensor(response.predictions, "predictions"))


# ---- Stream ops: what Client.stream sends; each knows how to read its own result ----

@dataclass
class StreamForward:
    """A Forward carried by a Stream; its result is a ForwardResult."""
    model: str
    x1: np.ndarray
    x2: np.ndarray
    output_dtype: object = None
    precision: Optional[str] = None

    def fill(self, message):
        message.forward.CopyFrom(forward_request(self.model, self.x1, self.x2, self.output_dtype, self.precision))

    def result(self, response):
        return forward_result(response.forward)


@dataclass
class StreamBackward:
    """A Backward carried by a Stream (weight_grad 'return' is refused on streams: use
    'accumulate' and GetGradient); its result is a BackwardResult."""
    model: str
    x1: np.ndarray
    x2: np.ndarray
    grad_out: Optional[np.ndarray] = None
    loss: Optional[str] = None
    want_grad_x1: bool = False
    want_grad_x2: bool = False
    want_out: bool = False
    weight_grad: Optional[str] = None
    output_dtype: object = None
    precision: Optional[str] = None

    def fill(self, message):
        message.backward.CopyFrom(backward_request(
            self.model, self.x1, self.x2, self.grad_out, self.loss, self.want_grad_x1, self.want_grad_x2,
            self.want_out, self.weight_grad, self.output_dtype, self.precision))

    def result(self, response):
        return backward_result(response.backward)


@dataclass
class StreamEcho:
    """An Echo carried by a Stream (the stream's own ceiling); its result is the payload bytes."""
    payload: bytes = b""
    response_bytes: int = 0

    def fill(self, message):
        message.echo.payload = self.payload
        message.echo.response_bytes = self.response_bytes

    def result(self, response):
        return response.echo.payload
