#include "server/grpc/graph_codec.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "wire/tensor_bytes.h"

namespace tpserve::wire {
namespace {

std::string ShapeText(const tp::v1::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.shape(), ", "), "]"); }

absl::Status CheckBytes(const tp::v1::Tensor& t, const char* what, size_t element_bytes) {
  const int64_t numel = ShapeElements(t);
  if (numel < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", ShapeText(t), " is not valid"));
  if (t.data().size() != static_cast<size_t>(numel) * element_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", t.data().size(), " bytes; shape ", ShapeText(t), " of ",
                                                   element_bytes, "-byte elements needs ", numel * element_bytes));
  }
  return absl::OkStatus();
}

// Integer tensor of `rank` dimensions as int32 values.
absl::StatusOr<std::vector<int32_t>> DecodeIntegers(const tp::v1::Tensor& t, const char* what, int rank,
                                                    const char* expected) {
  if (t.shape_size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected shape ", expected, ", got ", ShapeText(t)));
  }
  std::vector<int32_t> values;
  if (t.dtype() == tp::v1::DTYPE_INT32) {
    if (absl::Status s = CheckBytes(t, what, 4); !s.ok()) return s;
    values.resize(t.data().size() / 4);
    std::memcpy(values.data(), t.data().data(), t.data().size());
  } else if (t.dtype() == tp::v1::DTYPE_INT64) {
    if (absl::Status s = CheckBytes(t, what, 8); !s.ok()) return s;
    values.resize(t.data().size() / 8);
    for (size_t i = 0; i < values.size(); ++i) {
      int64_t v;
      std::memcpy(&v, t.data().data() + 8 * i, 8);
      if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": value ", v, " at [", i, "] does not fit int32"));
      }
      values[i] = static_cast<int32_t>(v);
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": dtype ", static_cast<int>(t.dtype()), "; expected int32 or int64"));
  }
  return values;
}

}  // namespace

absl::StatusOr<std::vector<double>> DecodeDoubles(const tp::v1::Tensor& t, const char* what,
                                                  const std::vector<int64_t>& expected_shape) {
  if (!expected_shape.empty() && std::vector<int64_t>(t.shape().begin(), t.shape().end()) != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected shape [", absl::StrJoin(expected_shape, ", "),
                                                   "], got ", ShapeText(t)));
  }
  std::vector<double> values;
  if (t.dtype() == tp::v1::DTYPE_FLOAT64) {
    if (absl::Status s = CheckBytes(t, what, 8); !s.ok()) return s;
    values.resize(t.data().size() / 8);
    std::memcpy(values.data(), t.data().data(), t.data().size());
  } else if (t.dtype() == tp::v1::DTYPE_FLOAT32) {
    if (absl::Status s = CheckBytes(t, what, 4); !s.ok()) return s;
    values.resize(t.data().size() / 4);
    for (size_t i = 0; i < values.size(); ++i) {
      float v;
      std::memcpy(&v, t.data().data() + 4 * i, 4);
      values[i] = v;
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": dtype ", static_cast<int>(t.dtype()), "; expected float32 or float64"));
  }
  return values;
}

absl::StatusOr<nn::GraphBatch> DecodeGraphBatch(const tp::v1::GraphBatch& wire) {
  nn::GraphBatch graphs;
  graphs.num_graphs = wire.num_graphs();
  absl::StatusOr<std::vector<int32_t>> species = DecodeIntegers(wire.species(), "graphs.species", 1, "[num_nodes]");
  if (!species.ok()) return species.status();
  graphs.species = *std::move(species);
  const int64_t num_nodes = graphs.num_nodes();
  absl::StatusOr<std::vector<double>> positions = DecodeDoubles(wire.positions(), "graphs.positions", {num_nodes, 3});
  if (!positions.ok()) return positions.status();
  graphs.positions = *std::move(positions);
  absl::StatusOr<std::vector<int32_t>> edges = DecodeIntegers(wire.edge_index(), "graphs.edge_index", 2, "[2, num_edges]");
  if (!edges.ok()) return edges.status();
  if (wire.edge_index().shape(0) != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("graphs.edge_index: expected shape [2, num_edges], got ", ShapeText(wire.edge_index())));
  }
  const size_t num_edges = edges->size() / 2;
  graphs.edge_src.assign(edges->begin(), edges->begin() + num_edges);
  graphs.edge_dst.assign(edges->begin() + num_edges, edges->end());
  absl::StatusOr<std::vector<int32_t>> graph_index =
      DecodeIntegers(wire.graph_index(), "graphs.graph_index", 1, "[num_nodes]");
  if (!graph_index.ok()) return graph_index.status();
  if (static_cast<int64_t>(graph_index->size()) != num_nodes) {
    return absl::InvalidArgumentError(absl::StrCat("graphs.graph_index: expected shape [", num_nodes,
                                                   "] (one per node), got ", ShapeText(wire.graph_index())));
  }
  graphs.graph_index = *std::move(graph_index);
  return graphs;
}

void EncodeDoubles(const std::vector<double>& values, int64_t rows, int64_t cols, tp::v1::DType dtype,
                   tp::v1::Tensor* out) {
  out->Clear();
  out->add_shape(rows);
  out->add_shape(cols);
  if (dtype == tp::v1::DTYPE_FLOAT32) {
    out->set_dtype(tp::v1::DTYPE_FLOAT32);
    std::string* data = out->mutable_data();
    data->resize(values.size() * 4);
    for (size_t i = 0; i < values.size(); ++i) {
      const float v = static_cast<float>(values[i]);
      std::memcpy(data->data() + 4 * i, &v, 4);
    }
    return;
  }
  out->set_dtype(tp::v1::DTYPE_FLOAT64);
  out->mutable_data()->assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(double));
}

}  // namespace tpserve::wire
