// A batch of molecular graphs as raw tensors: what the QM9 network (and the service's Predict /
// TrainStep RPCs) take. Nodes of all graphs are concatenated; edges are directed and index nodes
// of the whole batch; graph_index says which graph each node belongs to.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace tpserve::nn {

// The QM9 elements, in the order of the one-hot node input (species 0..4).
enum class Element : int32_t { H = 0, C = 1, N = 2, O = 3, F = 4 };

struct GraphBatch {
  std::vector<int32_t> species;      // [num_nodes], 0..num_elements-1 (0..4 = H, C, N, O, F)
  std::vector<double> positions;     // [num_nodes * 3], x y z per node (Angstrom)
  std::vector<int32_t> edge_src;     // [num_edges], directed: messages flow src -> dst
  std::vector<int32_t> edge_dst;     // [num_edges]
  std::vector<int32_t> graph_index;  // [num_nodes], graph of each node, 0..num_graphs-1
  int32_t num_graphs = 0;

  int64_t num_nodes() const { return static_cast<int64_t>(species.size()); }
  int64_t num_edges() const { return static_cast<int64_t>(edge_src.size()); }
};

// At most this many graphs per batch (the outputs are num_graphs * num_targets values, allocated
// before any node is read: a bound keeps a bad request from allocating without limit).
inline constexpr int32_t kMaxGraphs = 1 << 20;

// OK for a well-formed batch; otherwise INVALID_ARGUMENT naming what is wrong: a size mismatch
// (positions not 3 per node, edge_src/edge_dst or graph_index of the wrong length), an unknown
// species (with the node), a NaN or infinite position (with the node), an edge index out of range
// (with the edge position and the index), a graph_index out of range, num_graphs outside [0, kMaxGraphs].
// Graphs without nodes and nodes without edges are allowed (they contribute zero / self terms).
absl::Status ValidateGraphBatch(const GraphBatch& batch, int num_elements = 5);

}  // namespace tpserve::nn
