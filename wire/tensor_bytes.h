// The bytes of wire tensors (tp.v1.Tensor, tp.v1.WeightsChunk: shape + dtype + raw little-endian
// bytes) as float32 values and back, and the protobuf heads of messages sent from the sender's own
// memory. Shared by the server's handlers and the client library, so both sides agree on every
// byte; depends on the generated messages only (no gRPC, nothing of server/ or client/).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::wire {

// Bytes per element of a wire dtype (0 for DTYPE_UNSPECIFIED or unknown values).
size_t DTypeSize(tp::v1::DType dtype);
const char* DTypeName(tp::v1::DType dtype);  // "float32", ...

// `bytes` holds elements of `dtype`; INVALID_ARGUMENT (naming `what`) on an unknown dtype or a
// byte length that is not `expected_elements` elements (-1: any whole number of elements).
absl::StatusOr<std::vector<float>> BytesToFloats(tp::v1::DType dtype, const std::string& bytes, const char* what,
                                                 int64_t expected_elements = -1);
// Appends n elements converted to `dtype` (float16/bfloat16 round to nearest even).
void FloatsToBytes(const float* data, size_t n, tp::v1::DType dtype, std::string* out);

// Product of the tensor's extents, or -1 when one is negative or the product is absurd (past 2^40).
int64_t ShapeElements(const tp::v1::Tensor& tensor);

// Protobuf wire pieces for messages sent partly from the sender's own memory (unary Forward's
// response from a page-locked lease, tp_client's requests from the caller's message): the tag and
// length of length-delimited field `field`, whose `length` bytes follow ...
void AppendLengthDelimitedTag(int field, uint64_t length, std::string* out);
// ... and the head of Tensor field `field` whose `data_bytes` bytes of data the caller sends right
// after it: the field's tag and length, `meta` (shape and dtype; its data empty) and the data
// field's tag and length (none for empty data, as protobuf writes it).
void AppendTensorHead(int field, const tp::v1::Tensor& meta, size_t data_bytes, std::string* out);

// Splits a flat vector into chunks of at most chunk_elements (float32) and calls emit for each;
// stops early (returning false) when emit does.
template <typename Emit>
bool ForEachChunk(const float* data, int64_t n, int64_t chunk_elements, Emit&& emit) {
  tp::v1::WeightsChunk chunk;
  for (int64_t offset = 0; offset < n || (n == 0 && offset == 0); offset += chunk_elements) {
    int64_t count = std::min<int64_t>(chunk_elements, n - offset);
    chunk.Clear();
    chunk.set_offset(offset);
    chunk.set_dtype(tp::v1::DTYPE_FLOAT32);
    FloatsToBytes(data + offset, static_cast<size_t>(count), tp::v1::DTYPE_FLOAT32, chunk.mutable_data());
    if (!emit(chunk)) return false;
    if (n == 0) break;
  }
  return true;
}

}  // namespace tpserve::wire
