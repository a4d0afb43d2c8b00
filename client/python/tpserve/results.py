"""What calls return: plain dataclasses holding numpy arrays, not protobuf messages."""

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """A model as the server holds it (tp.v1.ModelInfo)."""

    name: str
    irreps_in1: str
    irreps_in2: str
    irreps_out: str
    weight_numel: int
    dim_in1: int
    dim_in2: int
    dim_out: int
    num_paths: int
    version: int
    weights_fnv1a64: int
    # "tp" (a tensor-product model) or "qm9" (a network model: qm9 holds its structure; the irreps,
    # dims and num_paths are empty, weight_numel counts float64 parameters).
    kind: str = "tp"
    qm9: Optional["Qm9Config"] = None
    # Network models: where Predict and TrainStep compute ("cpu", "cuda:0"; tpserve --network_device).
    device: str = ""
    # Network models: the version on the server's disk (behind version by the steps a server with
    # --network_save_every N > 1 has not saved yet; 0 without a model repository).
    saved_version: int = 0

    @classmethod
    def from_proto(cls, info):
        kind = info.kind or "tp"
        return cls(name=info.name, irreps_in1=info.spec.irreps_in1, irreps_in2=info.spec.irreps_in2,
                   irreps_out=info.spec.irreps_out, weight_numel=info.weight_numel, dim_in1=info.dim_in1,
                   dim_in2=info.dim_in2, dim_out=info.dim_out, num_paths=info.num_paths, version=info.version,
                   weights_fnv1a64=info.weights_fnv1a64, kind=kind,
                   qm9=Qm9Config.from_proto(info.qm9) if kind == "qm9" else None, device=info.device,
                   saved_version=info.saved_version)


@dataclass(frozen=True)
class Qm9Config:
    """A network model's structure (tp.v1.Qm9Spec, the server's defaults filled in)."""

    lmax: int
    mul: int
    layers: int
    num_elements: int
    num_targets: int

    @classmethod
    def from_proto(cls, spec):
        return cls(lmax=spec.lmax, mul=spec.mul, layers=spec.layers, num_elements=spec.num_elements,
                   num_targets=spec.num_targets)


@dataclass
class ForwardResult:
    out: np.ndarray          # [batch, dim_out]
    model_version: int       # weights version that computed it
    executed_batch: int      # samples in the launch (> batch when the server merged requests)
    device: str              # "cpu", "cuda:0", ...


@dataclass
class BackwardResult:
    out: Optional[np.ndarray]          # with want_out (loss cotangent)
    grad_x1: Optional[np.ndarray]      # with want_grad_x1
    grad_x2: Optional[np.ndarray]      # with want_grad_x2
    grad_weight: Optional[np.ndarray]  # with weight_grad="return" (float32 [weight_numel])
    model_version: int
    executed_batch: int
    device: str


@dataclass
class TrainStepResult:
    loss: float                # L1 loss of the batch before the update
    model_version: int         # the version the update committed
    predictions: np.ndarray    # [num_graphs, num_targets] float64, before the update
