// nn::GraphBatch as the wire's tp.v1.GraphBatch (int32 indices, float64 positions), and float64
// values as tensors: what clients (tpctl qm9, tests) send to NetworkService. The server decodes
// with server/grpc/graph_codec.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/data/molecule.h"
#include "nn/graph_batch.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::wire {

void EncodeGraphBatch(const nn::GraphBatch& graphs, tp::v1::GraphBatch* out);
// [rows, cols] float64.
void EncodeFloat64(const std::vector<double>& values, int64_t rows, int64_t cols, tp::v1::Tensor* out);
// One SGD step of `model` on a labelled batch: its graphs, its targets ([num_graphs, num_targets]
// float64), the learning rate and momentum.
tp::v1::TrainStepRequest MakeTrainStepRequest(const std::string& model, const nn::data::LabeledBatch& batch,
                                              double learning_rate, double momentum);
// A float64 or float32 tensor's values as doubles (empty for any other dtype or a length mismatch).
std::vector<double> TensorToDoubles(const tp::v1::Tensor& tensor);

}  // namespace tpserve::wire
