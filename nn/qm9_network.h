// The QM9 network of issue 19 ("6 Conv + Gate, FC [64, 64]", after e3nn's gate_points_2101 and
// e3nn-jax's examples/qm9.py): node input and attributes are one-hot(species) * sqrt(5); each
// layer is a point convolution (self-connection, per-edge 'uvu' tensor product with the edge's
// spherical harmonics and weights from a radial MLP, scatter-sum to dst) followed by a Gate; the
// last convolution maps to num_targets x 0e, summed per graph. nn/README.md describes exactly what
// is built and where it differs from e3nn.
//
// The parameters are one flat vector (parameter_layout() names its blocks), owned by the caller:
// a Qm9Network holds only the structure (irreps, prepared tensor-product plans), so one network
// serves any number of weight sets. Tensor products run through the given Backend (the CPU
// backend today); everything else is plain C++ on the host.
//
// Thread-safety: Predict and LossGradient are const and may be called from several threads.
// A Qm9Network is cheap to copy (its structure is shared); the Backend must outlive it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "nn/graph_batch.h"

namespace tpserve::nn {

struct Qm9NetworkConfig {
  int lmax = 1;            // 1 or 2: spherical harmonics and hidden irreps up to this l
  int mul = 128;           // multiplicity of every hidden irrep
  int layers = 6;          // convolutions: layers-1 Conv+Gate, then one Conv to the targets
  int num_elements = 5;    // species 0..num_elements-1 (H, C, N, O, F)
  int num_targets = 4;     // outputs per graph (num_targets x 0e)
  int num_basis = 10;      // radial basis functions ('smooth_finite', cutoff)
  double max_radius = 1.9;
  int radial_hidden = 64;  // width of the radial MLP's hidden layers
  int radial_layers = 2;   // hidden layers of the radial MLP (num_basis -> 64 -> 64 -> weight_numel)
  double num_neighbors = 2.1;  // the aggregation divides by sqrt(num_neighbors)

  // INVALID_ARGUMENT naming the field and its allowed range.
  absl::Status Validate() const;
};

// One named block of the flat parameter vector: params[offset, offset + numel) viewed as `shape`
// (row-major). Names: "layer{i}.sc", "layer{i}.lin1", "layer{i}.radial.w{k}", "layer{i}.lin2".
struct ParameterBlock {
  std::string name;
  int64_t offset = 0;
  int64_t numel = 0;
  std::vector<int64_t> shape;
};

template <class T>
struct LossAndGradient {
  T loss = 0;                    // see Qm9Network::LossGradient
  std::vector<T> gradient;       // d loss / d params, [num_parameters]
  std::vector<T> predictions;    // the forward result, [num_graphs * num_targets]
};

struct Qm9NetworkStructure;  // internal: irreps, plans and layout of every layer

class Qm9Network {
 public:
  // Validates the config, builds every layer's irreps and tensor-product plans and prepares the
  // plans on `backend` (a host-memory backend: the CPU backend). `backend` must outlive the network.
  static absl::StatusOr<Qm9Network> Create(const Qm9NetworkConfig& config, Backend* backend);

  const Qm9NetworkConfig& config() const;
  int64_t num_parameters() const;
  // The blocks of the flat parameter vector, in order; they tile [0, num_parameters()).
  std::vector<ParameterBlock> parameter_layout() const;
  // e3nn's initialization: every entry N(0, 1) (tensor-product weights and radial MLP weights;
  // the normalization lives in the forward pass). Deterministic for a seed.
  std::vector<double> InitialParameters(uint64_t seed) const;
  // Hidden irreps of the Conv+Gate layers (what a gate outputs), e.g. "4x0e+4x0o+4x1e+4x1o" ... as
  // e3nn prints them; for the docs and the reference tool.
  std::vector<std::string> LayerIrreps() const;

  // Node features after each Conv+Gate layer ([layers-1] entries of [num_nodes * dim]), for
  // comparing layer by layer with the reference; float64 only.
  absl::StatusOr<std::vector<std::vector<double>>> LayerFeatures(const std::vector<double>& params,
                                                                 const GraphBatch& batch) const;

  // Per-graph outputs, [num_graphs * num_targets] (graph-major). INVALID_ARGUMENT for a bad batch
  // or a params vector of the wrong size.
  absl::StatusOr<std::vector<double>> Predict(const std::vector<double>& params, const GraphBatch& batch) const;
  absl::StatusOr<std::vector<float>> Predict(const std::vector<float>& params, const GraphBatch& batch) const;

  // loss = mean over all num_graphs * num_targets entries of |prediction - target|
  //      = (1 / (num_graphs * num_targets)) * sum_{g, t} |pred[g, t] - target[g, t]|
  // (torch's L1Loss with reduction='mean' on [num_graphs, num_targets] tensors), and its gradient
  // with respect to every parameter (d|x|/dx taken as sign(x), 0 at 0, as torch does).
  // targets: [num_graphs * num_targets].
  absl::StatusOr<LossAndGradient<double>> LossGradient(const std::vector<double>& params, const GraphBatch& batch,
                                                       const std::vector<double>& targets) const;
  absl::StatusOr<LossAndGradient<float>> LossGradient(const std::vector<float>& params, const GraphBatch& batch,
                                                      const std::vector<float>& targets) const;

  // Internal: the shared structure (for the tests and tools of this library).
  const Qm9NetworkStructure& structure() const { return *structure_; }

 private:
  explicit Qm9Network(std::shared_ptr<const Qm9NetworkStructure> structure) : structure_(std::move(structure)) {}
  std::shared_ptr<const Qm9NetworkStructure> structure_;
};

// Floating-point operations of one training step (forward, backward, SGD update) on a batch of
// num_nodes nodes and num_edges directed edges, counting a multiply-add as 2 FLOPs: the tensor
// products' GEMM-shaped work, the radial MLP and the optimizer (elementwise work is left out); the
// floor of issue 19. 0 for an invalid config. nn/README.md lists the figures of the four shapes.
double TrainingStepFlops(const Qm9NetworkConfig& config, int64_t num_nodes, int64_t num_edges);
// FLOPs of one forward pass (Predict), counted the same way.
double PredictFlops(const Qm9NetworkConfig& config, int64_t num_nodes, int64_t num_edges);
// Bytes a training step must move at least: 8 accesses per parameter (forward read, backward read,
// gradient write; SGD reads parameter, velocity, gradient and writes parameter, velocity) of
// bytes_per_value each (4: fp32, 8: fp64), plus the batch in and the predictions out.
double TrainingStepBytes(const Qm9NetworkConfig& config, int64_t num_nodes, int64_t num_edges, int bytes_per_value);

}  // namespace tpserve::nn
