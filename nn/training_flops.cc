// The floors of one training step and of one Predict (issue 19 asks for each benchmark figure
// with its floor): FLOPs of the dense formulas and the memory traffic no implementation avoids.
#include "nn/qm9_network.h"
#include "nn/qm9_structure.h"

namespace tpserve::nn {
namespace {

// Multiply-adds of the forward pass (backward = false) or of forward + backward (true).
// Backward: weight gradient once, input gradient once, except for layer 0's constant input; the
// radial MLP's input gradient is not needed for its first matrix.
double MultiplyAdds(const Qm9NetworkStructure& structure, int64_t num_nodes, int64_t num_edges, bool backward) {
  double total = 0;
  bool first = true;
  for (const ConvLayer& conv : structure.convs) {
    const double fctp_factor = backward ? (first ? 2.0 : 3.0) : 1.0;
    const double factor = backward ? 3.0 : 1.0;
    total += fctp_factor * conv.sc_plan().ForwardFlops(num_nodes);
    total += fctp_factor * conv.lin1_plan().ForwardFlops(num_nodes);
    total += factor * conv.tp_plan().ForwardFlops(num_edges);
    total += factor * conv.lin2_plan().ForwardFlops(num_nodes);
    const RadialMlp& mlp = conv.mlp();
    total += factor * mlp.ForwardMultiplyAdds(num_edges);
    if (backward) total -= static_cast<double>(num_edges) * static_cast<double>(mlp.matrix_numel(0));
    first = false;
  }
  return total;
}

}  // namespace

// Counted at 2 FLOPs per multiply-add: the tensor products' GEMM-shaped work as the plan counts it,
// the radial MLP, and SGD with momentum (4 FLOPs per parameter). Not counted: elementwise work
// (activations, gates, gather/scatter, the sc/lin2 combination), O(nodes * dim), under 2% at
// mul >= 32.
double TrainingStepFlops(const Qm9NetworkConfig& config, int64_t num_nodes, int64_t num_edges) {
  auto structure = BuildQm9Structure(config, nullptr);
  if (!structure.ok()) return 0;
  return 2.0 * MultiplyAdds(**structure, num_nodes, num_edges, true) +
         4.0 * static_cast<double>((*structure)->num_parameters);
}

double PredictFlops(const Qm9NetworkConfig& config, int64_t num_nodes, int64_t num_edges) {
  auto structure = BuildQm9Structure(config, nullptr);
  if (!structure.ok()) return 0;
  return 2.0 * MultiplyAdds(**structure, num_nodes, num_edges, false);
}

// Unavoidable traffic: every parameter read by the forward pass, read again by the backward pass,
// its gradient written once, and SGD reading parameter, velocity and gradient and writing
// parameter and velocity: 8 accesses per parameter; plus the batch (species, positions, edges,
// graph index) read once and the predictions written once. Activations are left out: a fused
// implementation could keep them on chip.
double TrainingStepBytes(const Qm9NetworkConfig& config, int64_t num_nodes, int64_t num_edges,
                         int bytes_per_value) {
  auto structure = BuildQm9Structure(config, nullptr);
  if (!structure.ok()) return 0;
  const double parameters = static_cast<double>((*structure)->num_parameters);
  const double batch = static_cast<double>(num_nodes) * (4 + 3 * bytes_per_value + 4) + 8.0 * num_edges;
  return 8.0 * parameters * bytes_per_value + batch;
}

}  // namespace tpserve::nn
