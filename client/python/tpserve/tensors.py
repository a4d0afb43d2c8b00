"""numpy arrays <-> tp.v1.Tensor / WeightsChunk (shape + dtype + raw little-endian C-order bytes).

Arrays going out must be C-contiguous (row-major) float32, float64 or float16: the wire carries
the bytes as they are, so a Fortran-ordered or strided view is refused rather than silently
copied (np.ascontiguousarray makes one). Big-endian arrays are byte-swapped on the way out.
Arrays coming back are writable numpy arrays of the wire dtype; bfloat16 (which numpy lacks)
comes back as float32, exactly.
"""

import numpy as np

from ._stubs import pb
from .errors import ProtocolError

_WIRE_BY_NUMPY = {
    np.dtype(np.float32): pb.DTYPE_FLOAT32,
    np.dtype(np.float64): pb.DTYPE_FLOAT64,
    np.dtype(np.float16): pb.DTYPE_FLOAT16,
}
_NUMPY_BY_WIRE = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_FLOAT64: np.dtype("<f8"),
    pb.DTYPE_FLOAT16: np.dtype("<f2"),
    pb.DTYPE_BFLOAT16: np.dtype("<u2"),  # decoded to float32 below
}
_WIRE_BY_NAME = {
    "float32": pb.DTYPE_FLOAT32,
    "float64": pb.DTYPE_FLOAT64,
    "float16": pb.DTYPE_FLOAT16,
    "bfloat16": pb.DTYPE_BFLOAT16,
}
SUPPORTED_DTYPES = ("float32", "float64", "float16")


def wire_dtype(output_dtype):
    """The wire DType for an output_dtype argument: None (x1's dtype), a numpy dtype-like, or
    'bfloat16'."""
    if output_dtype is None:
        return pb.DTYPE_UNSPECIFIED
    if isinstance(output_dtype, str) and output_dtype in _WIRE_BY_NAME:
        return _WIRE_BY_NAME[output_dtype]
    try:
        dtype = np.dtype(output_dtype)
    except TypeError:
        dtype = None
    if dtype is not None and dtype.newbyteorder("=") in _WIRE_BY_NUMPY:
        return _WIRE_BY_NUMPY[dtype.newbyteorder("=")]
    raise TypeError(f"output_dtype: expected None, float32, float64, float16 or 'bfloat16'; got {output_dtype!r}")


def _checked_array(array, what, ndim):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what}: expected a numpy.ndarray; got {type(array).__name__}")
    native = array.dtype.newbyteorder("=")
    if native not in _WIRE_BY_NUMPY:
        raise TypeError(f"{what}: dtype {array.dtype} is not supported; expected one of {', '.join(SUPPORTED_DTYPES)}")
    if array.ndim != ndim:
        expected = "[batch, dim]" if ndim == 2 else "a flat [weight_numel] vector"
        hint = " (x[None, :] makes one sample a batch of 1)" if ndim == 2 and array.ndim == 1 else ""
        raise ValueError(f"{what}: expected {expected}; got shape {list(array.shape)}{hint}")
    if not array.flags.c_contiguous:
        raise ValueError(
            f"{what}: expected a C-contiguous (row-major) array; got a "
            f"{'Fortran-ordered' if array.flags.f_contiguous else 'strided'} view of shape {list(array.shape)} "
            f"(np.ascontiguousarray({what}) makes a C-order copy)")
    if array.dtype.byteorder == ">":
        array = array.astype(native.newbyteorder("<"))
    return array, _WIRE_BY_NUMPY[native]


def check_matrix(array, what):
    """A [batch, dim] input: C-order, supported dtype. Returns the array (little-endian)."""
    return _checked_array(array, what, 2)[0]


def check_vector(array, what):
    """A flat weight vector: C-order, supported dtype. Returns the array (little-endian)."""
    return _checked_array(array, what, 1)[0]


def encode_tensor(array, what):
    """A tp.v1.Tensor holding a [batch, dim] array."""
    array, dtype = _checked_array(array, what, 2)
    return pb.Tensor(shape=list(array.shape), dtype=dtype, data=array.tobytes())


def _decode_bytes(data, dtype, what):
    if dtype not in _NUMPY_BY_WIRE:
        raise ProtocolError(f"{what}: unknown wire dtype {dtype}")
    item = _NUMPY_BY_WIRE[dtype]
    if len(data) % item.itemsize:
        raise ProtocolError(f"{what}: {len(data)} bytes is not a whole number of {item} elements")
    values = np.frombuffer(data, dtype=item)
    if dtype == pb.DTYPE_BFLOAT16:  # bfloat16 is the top half of a float32
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(item.newbyteorder("="), copy=True)  # a writable copy


def decode_tensor(tensor, what):
    """A numpy array from a tp.v1.Tensor (its byte length checked against shape x dtype)."""
    values = _decode_bytes(tensor.data, tensor.dtype, what)
    numel = int(np.prod(tensor.shape, dtype=np.int64)) if len(tensor.shape) else 0
    if values.size != numel:
        raise ProtocolError(f"{what}: {values.size} elements for shape {list(tensor.shape)}")
    return values.reshape(tuple(tensor.shape))


def weight_chunks(weights, chunk_elements):
    """WeightsChunk messages covering `weights` (a checked flat vector) in order, in its dtype."""
    weights, dtype = _checked_array(weights, "weights", 1)
    for offset in range(0, max(weights.size, 1), chunk_elements):
        piece = weights[offset:offset + chunk_elements]
        yield pb.WeightsChunk(offset=offset, dtype=dtype, data=piece.tobytes())


class ChunkAssembler:
    """Reassembles a flat vector from WeightsChunk messages, checking that they arrive in order,
    without gaps or overlaps."""

    def __init__(self, what):
        self._what = what
        self._pieces = []
        self._elements = 0

    def add(self, chunk):
        if chunk.offset != self._elements:
            raise ProtocolError(f"{self._what}: chunk at offset {chunk.offset}; expected {self._elements}")
        piece = _decode_bytes(chunk.data, chunk.dtype, self._what)
        if piece.dtype != np.float32:
            piece = piece.astype(np.float32)
        self._pieces.append(piece)
        self._elements += piece.size

    def result(self):
        if not self._pieces:
            return np.zeros(0, dtype=np.float32)
        return self._pieces[0] if len(self._pieces) == 1 else np.concatenate(self._pieces)


# The offset basis tpserve uses (server/core/model.cc). It is not FNV's published 64-bit basis
# (14695981039346656037): a digit short. Checksums already on disk use it, so the client matches it.
_TPSERVE_FNV_OFFSET_BASIS = 1469598103934665603


def fnv1a64(weights):
    """The server's ModelInfo.weights_fnv1a64 for `weights`: FNV-1a 64 (with tpserve's offset
    basis) of their float32 little-endian bytes. Pure Python: about 1 s per 10 MB."""
    data = np.ascontiguousarray(weights, dtype="<f4").tobytes()
    value = _TPSERVE_FNV_OFFSET_BASIS
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value
