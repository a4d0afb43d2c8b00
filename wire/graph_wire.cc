#include "wire/graph_wire.h"

#include <cstring>

namespace tpserve::wire {
namespace {

void Int32Tensor(const std::vector<int64_t>& shape, const int32_t* a, size_t na, const int32_t* b, size_t nb,
                 tp::v1::Tensor* out) {
  out->Clear();
  for (int64_t extent : shape) out->add_shape(extent);
  out->set_dtype(tp::v1::DTYPE_INT32);
  std::string* data = out->mutable_data();
  data->resize((na + nb) * 4);
  if (na > 0) std::memcpy(data->data(), a, na * 4);
  if (nb > 0) std::memcpy(data->data() + na * 4, b, nb * 4);
}

}  // namespace

tp::v1::TrainStepRequest MakeTrainStepRequest(const std::string& model, const nn::data::LabeledBatch& batch,
                                              double learning_rate, double momentum) {
  tp::v1::TrainStepRequest request;
  request.set_model(model);
  EncodeGraphBatch(batch.graphs, request.mutable_graphs());
  EncodeFloat64(batch.targets, batch.graphs.num_graphs, batch.num_targets, request.mutable_targets());
  request.set_learning_rate(learning_rate);
  request.set_momentum(momentum);
  return request;
}

void EncodeGraphBatch(const nn::GraphBatch& g, tp::v1::GraphBatch* out) {
  const int64_t nodes = g.num_nodes(), edges = g.num_edges();
  Int32Tensor({nodes}, g.species.data(), g.species.size(), nullptr, 0, out->mutable_species());
  EncodeFloat64(g.positions, nodes, 3, out->mutable_positions());
  Int32Tensor({2, edges}, g.edge_src.data(), g.edge_src.size(), g.edge_dst.data(), g.edge_dst.size(),
              out->mutable_edge_index());
  Int32Tensor({nodes}, g.graph_index.data(), g.graph_index.size(), nullptr, 0, out->mutable_graph_index());
  out->set_num_graphs(g.num_graphs);
}

void EncodeFloat64(const std::vector<double>& values, int64_t rows, int64_t cols, tp::v1::Tensor* out) {
  out->Clear();
  out->add_shape(rows);
  out->add_shape(cols);
  out->set_dtype(tp::v1::DTYPE_FLOAT64);
  out->mutable_data()->assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(double));
}

std::vector<double> TensorToDoubles(const tp::v1::Tensor& t) {
  std::vector<double> values;
  if (t.dtype() == tp::v1::DTYPE_FLOAT64 && t.data().size() % 8 == 0) {
    values.resize(t.data().size() / 8);
    std::memcpy(values.data(), t.data().data(), t.data().size());
  } else if (t.dtype() == tp::v1::DTYPE_FLOAT32 && t.data().size() % 4 == 0) {
    values.resize(t.data().size() / 4);
    for (size_t i = 0; i < values.size(); ++i) {
      float v;
      std::memcpy(&v, t.data().data() + 4 * i, 4);
      values[i] = v;
    }
  }
  return values;
}

}  // namespace tpserve::wire
