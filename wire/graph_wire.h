// nn::GraphBatch as the wire's tp.v1.GraphBatch (int32 indices, float64 positions), and float64
// values as tensors: what clients (tpctl qm9, tests) send to NetworkService. The server decodes
// with server/grpc/graph_codec.h.
#pragma once

#include <cstdint>
#include <vector>

#include "nn/graph_batch.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::wire {

void EncodeGraphBatch(const nn::GraphBatch& graphs, tp::v1::GraphBatch* out);
// [rows, cols] float64.
void EncodeFloat64(const std::vector<double>& values, int64_t rows, int64_t cols, tp::v1::Tensor* out);
// A float64 or float32 tensor's values as doubles (empty for any other dtype or a length mismatch).
std::vector<double> TensorToDoubles(const tp::v1::Tensor& tensor);

}  // namespace tpserve::wire
