// Wire graph batches (tp.v1.GraphBatch: raw tensors) as the network's nn::GraphBatch, and float64
// results as wire tensors: the network service's side of tensor_codec.h. Integer tensors are int32
// or int64 (values must fit int32); positions and targets float32 or float64 (kept in float64).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "nn/graph_batch.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::wire {

// INVALID_ARGUMENT naming the field (graphs.species, graphs.edge_index, ...) and what was expected:
// a wrong rank or extent, a dtype that is not allowed, a byte length that does not match. Value
// checks (ranges, NaN) are nn::ValidateGraphBatch's.
absl::StatusOr<nn::GraphBatch> DecodeGraphBatch(const tp::v1::GraphBatch& graphs);
// A float32/float64 tensor as doubles; `what` names it in errors. `expected_shape` empty: any shape.
absl::StatusOr<std::vector<double>> DecodeDoubles(const tp::v1::Tensor& tensor, const char* what,
                                                  const std::vector<int64_t>& expected_shape);
// `values` as a [rows, cols] tensor of float32 or float64 (anything else: float64).
void EncodeDoubles(const std::vector<double>& values, int64_t rows, int64_t cols, tp::v1::DType dtype,
                   tp::v1::Tensor* out);

}  // namespace tpserve::wire
