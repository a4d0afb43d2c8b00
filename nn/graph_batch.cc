#include "nn/graph_batch.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace tpserve::nn {
namespace {

absl::Status CheckSizes(const GraphBatch& batch) {
  const int64_t num_nodes = batch.num_nodes();
  if (batch.num_graphs < 0 || batch.num_graphs > kMaxGraphs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_graphs must be in [0, %d], got %d", kMaxGraphs, batch.num_graphs));
  }
  if (static_cast<int64_t>(batch.positions.size()) != 3 * num_nodes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "positions must hold 3 numbers per node: expected %d (3 x %d nodes), got %d", 3 * num_nodes, num_nodes,
        batch.positions.size()));
  }
  if (batch.edge_dst.size() != batch.edge_src.size()) {
    return absl::InvalidArgumentError(absl::StrFormat("edge_src and edge_dst must have equal lengths, got %d and %d",
                                                      batch.edge_src.size(), batch.edge_dst.size()));
  }
  if (static_cast<int64_t>(batch.graph_index.size()) != num_nodes) {
    return absl::InvalidArgumentError(absl::StrFormat("graph_index must have one entry per node: expected %d, got %d",
                                                      num_nodes, batch.graph_index.size()));
  }
  return absl::OkStatus();
}

absl::Status CheckNodes(const GraphBatch& batch, int num_elements) {
  for (int64_t node = 0; node < batch.num_nodes(); ++node) {
    const int32_t species = batch.species[node];
    if (species < 0 || species >= num_elements) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "unknown species %d at node %d: expected 0..%d (H, C, N, O, F)", species, node, num_elements - 1));
    }
    for (int axis = 0; axis < 3; ++axis) {
      if (!std::isfinite(batch.positions[3 * node + axis])) {
        return absl::InvalidArgumentError(absl::StrFormat("position of node %d is not finite: (%g, %g, %g)", node,
                                                          batch.positions[3 * node], batch.positions[3 * node + 1],
                                                          batch.positions[3 * node + 2]));
      }
    }
    const int32_t graph = batch.graph_index[node];
    if (graph < 0 || graph >= batch.num_graphs) {
      return absl::InvalidArgumentError(absl::StrFormat("graph_index %d of node %d is out of range [0, %d)", graph,
                                                        node, batch.num_graphs));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckEdges(const GraphBatch& batch) {
  const int64_t num_nodes = batch.num_nodes();
  for (int64_t edge = 0; edge < batch.num_edges(); ++edge) {
    for (const auto* list : {&batch.edge_src, &batch.edge_dst}) {
      const int32_t index = (*list)[edge];
      if (index < 0 || index >= num_nodes) {
        return absl::InvalidArgumentError(absl::StrFormat("%s[%d] = %d is out of range [0, %d)",
                                                          list == &batch.edge_src ? "edge_src" : "edge_dst", edge,
                                                          index, num_nodes));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGraphBatch(const GraphBatch& batch, int num_elements) {
  if (absl::Status status = CheckSizes(batch); !status.ok()) return status;
  if (absl::Status status = CheckNodes(batch, num_elements); !status.ok()) return status;
  return CheckEdges(batch);
}

}  // namespace tpserve::nn
