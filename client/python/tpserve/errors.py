"""Exceptions raised by tpserve: every failed call raises a TpServeError carrying the gRPC status.

A subclass per canonical code the service uses lets callers catch what they can handle
(``except tpserve.NotFound``); ``error.code`` is always the ``grpc.StatusCode`` and
``error.details`` the server's message (it names the expected shape or dtype).
"""

import grpc


class TpServeError(Exception):
    """A call failed with a gRPC status (from the transport, the server, or one Stream request)."""

    def __init__(self, code, details, method, attempts=1):
        self.code = code
        self.details = details
        self.method = method
        self.attempts = attempts
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{method}: {code.name}: {details}{tries}")


class InvalidArgument(TpServeError):
    pass


class NotFound(TpServeError):
    pass


class AlreadyExists(TpServeError):
    pass


class FailedPrecondition(TpServeError):
    pass


class ResourceExhausted(TpServeError):
    pass


class DeadlineExceeded(TpServeError):
    pass


class Cancelled(TpServeError):
    pass


class Unauthenticated(TpServeError):
    pass


class Unavailable(TpServeError):
    pass


class DataLoss(TpServeError):
    pass


class ProtocolError(Exception):
    """The server answered something this client cannot read (a bug on one side, not a status)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
}

# StreamResponse.code is the numeric code; grpc.StatusCode values are (number, name) pairs.
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def error_from_code(code, details, method, attempts=1):
    """The exception for `code` (a grpc.StatusCode or its number, as StreamResponse carries it)."""
    if not isinstance(code, grpc.StatusCode):
        code = _CODE_BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN)
    return _BY_CODE.get(code, TpServeError)(code, details, method, attempts)


def error_from_rpc(rpc_error, method, attempts=1):
    """The exception for a grpc.RpcError raised by a stub call."""
    code = rpc_error.code() if hasattr(rpc_error, "code") else grpc.StatusCode.UNKNOWN
    details = rpc_error.details() if hasattr(rpc_error, "details") else str(rpc_error)
    return error_from_code(code, details or "", method, attempts)
