"""Request messages built from numpy arrays, and results read back from responses: one place for
the unary calls and the Stream ops alike."""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._stubs import pb
from .results import BackwardResult, ForwardResult
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
