// The FLOP floor of one training step (issue 19 asks for each benchmark figure with its floor).
#include "nn/qm9_network.h"
#include "nn/qm9_structure.h"

namespace tpserve::nn {

// Counted, at 2 FLOPs per multiply-add: the tensor products' GEMM-shaped work as the plan counts it
// (forward once; backward: weight gradient once, input gradient once except for the first
// layer's, whose input is constant), the radial MLP (forward; weight gradients; input gradients
// of all but the first matrix), and SGD with momentum (4 FLOPs per parameter). Not counted:
// elementwise work (activations, gates, gather/scatter, the sc/lin2 combination), O(nodes * dim),
// under 2% of the total at mul >= 32.
double TrainingStepFlops(const Qm9NetworkConfig& config, int64_t num_nodes, int64_t num_edges) {
  auto structure = BuildQm9Structure(config, nullptr);
  if (!structure.ok()) return 0;
  double multiply_adds = 0;
  bool first = true;
  for (const ConvLayer& conv : (*structure)->convs) {
    const double input_grad = first ? 0.0 : 1.0;
    multiply_adds += (2.0 + input_grad) * conv.sc_plan().ForwardFlops(num_nodes);
    multiply_adds += (2.0 + input_grad) * conv.lin1_plan().ForwardFlops(num_nodes);
    multiply_adds += 3.0 * conv.tp_plan().ForwardFlops(num_edges);
    multiply_adds += 3.0 * conv.lin2_plan().ForwardFlops(num_nodes);
    const RadialMlp& mlp = conv.mlp();
    multiply_adds += 3.0 * mlp.ForwardMultiplyAdds(num_edges) -
                     static_cast<double>(num_edges) * static_cast<double>(mlp.matrix_numel(0));
    first = false;
  }
  return 2.0 * multiply_adds + 4.0 * static_cast<double>((*structure)->num_parameters);
}

}  // namespace tpserve::nn
