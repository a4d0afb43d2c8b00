"""tpserve: a Python client of the tpserve gRPC service (e3nn tensor products on a server).

    import numpy as np, tpserve
    with tpserve.Client("localhost:50051", token="...") as client:
        client.create_model("m", "8x0e + 8x1o", "8x0e + 8x1o", "8x0e + 8x1o", seed=1)
        out = client.forward("m", x1, x2)  # numpy [batch, dim] in and out

The generated stubs (client/python/generate_stubs.sh OUT_DIR) must be on PYTHONPATH.
"""

from .client import Client
from .errors import (AlreadyExists, Cancelled, DataLoss, DeadlineExceeded, FailedPrecondition, InvalidArgument,
                     NotFound, ProtocolError, ResourceExhausted, TpServeError, Unauthenticated, Unavailable)
from .messages import StreamBackward, StreamEcho, StreamForward
from .results import BackwardResult, ForwardResult, ModelInfo, Qm9Config, TrainStepResult
from .retry import NO_RETRIES, RetryPolicy
from .tensors import SUPPORTED_DTYPES, fnv1a64

__all__ = [
    "Client", "RetryPolicy", "NO_RETRIES", "ModelInfo", "Qm9Config", "TrainStepResult", "ForwardResult",
    "BackwardResult", "StreamForward", "StreamBackward", "StreamEcho", "TpServeError", "InvalidArgument", "NotFound", "AlreadyExists",
    "FailedPrecondition", "ResourceExhausted", "DeadlineExceeded", "Cancelled", "Unauthenticated", "Unavailable",
    "DataLoss", "ProtocolError", "SUPPORTED_DTYPES", "fnv1a64",
]
