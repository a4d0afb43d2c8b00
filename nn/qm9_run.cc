// The forward and backward passes of Qm9Network (one template for float and double).
#include <cmath>

#include "absl/strings/str_format.h"
#include "kernels/core/status_macros.h"
#include "nn/qm9_network.h"
#include "nn/qm9_structure.h"
#include "nn/radial.h"
#include "nn/spherical_harmonics.h"

namespace tpserve::nn {
namespace {

// Everything the backward pass reads from the forward pass.
template <class T>
struct ForwardState {
  std::vector<T> attr, edge_sh, edge_basis;
  NodesBySpecies nodes_by_species;
  std::vector<std::vector<T>> layer_inputs;  // input of conv l (layer_inputs[0] = attr)
  std::vector<std::vector<T>> conv_outputs;  // output of conv l (the gate's input for l < layers-1)
  std::vector<ConvCache<T>> caches;
  std::vector<T> predictions;  // [num_graphs, num_targets]
};

template <class T>
ConvInputs<T> LayerInputs(const GraphBatch& batch, const ForwardState<T>& state, size_t layer) {
  ConvInputs<T> in;
  in.num_nodes = batch.num_nodes();
  in.num_edges = batch.num_edges();
  in.x = state.layer_inputs[layer].data();
  in.attr = state.attr.data();
  in.edge_src = batch.edge_src.data();
  in.edge_dst = batch.edge_dst.data();
  in.edge_sh = state.edge_sh.data();
  in.edge_basis = state.edge_basis.data();
  in.nodes_by_species = &state.nodes_by_species;
  return in;
}

// Node attributes (one-hot * sqrt(num_elements)), edge harmonics and radial basis.
template <class T>
void Embed(const Qm9NetworkConfig& config, const GraphBatch& batch, ForwardState<T>* state) {
  const int64_t n = batch.num_nodes(), e = batch.num_edges();
  state->attr.assign(n * config.num_elements, T(0));
  const T one_hot = std::sqrt(static_cast<T>(config.num_elements));
  state->nodes_by_species.assign(config.num_elements, {});
  for (int64_t node = 0; node < n; ++node) {
    state->attr[node * config.num_elements + batch.species[node]] = one_hot;
    state->nodes_by_species[batch.species[node]].push_back(static_cast<int32_t>(node));
  }
  std::vector<T> vectors(e * 3), lengths(e);
  for (int64_t edge = 0; edge < e; ++edge) {
    T squared = 0;
    for (int axis = 0; axis < 3; ++axis) {
      // edge vector pos[dst] - pos[src], in the arithmetic of T as the reference does
      const T v = static_cast<T>(batch.positions[3 * batch.edge_dst[edge] + axis]) -
                  static_cast<T>(batch.positions[3 * batch.edge_src[edge] + axis]);
      vectors[3 * edge + axis] = v;
      squared += v * v;
    }
    lengths[edge] = std::sqrt(squared);
  }
  state->edge_sh.resize(e * SphericalHarmonicsDim(config.lmax));
  SphericalHarmonics(config.lmax, vectors.data(), e, state->edge_sh.data());
  state->edge_basis.resize(e * config.num_basis);
  SmoothFiniteBasis(lengths.data(), e, config.num_basis, config.max_radius, RadialBasisScale(),
                    state->edge_basis.data());
}

template <class T>
absl::Status RunForward(const Qm9NetworkStructure& s, const std::vector<T>& params, const GraphBatch& batch,
                        ForwardState<T>* state) {
  const Qm9NetworkConfig& config = s.config;
  const int64_t n = batch.num_nodes();
  Embed(config, batch, state);
  const size_t layers = s.convs.size();
  state->layer_inputs.assign(layers, {});
  state->conv_outputs.assign(layers, {});
  state->caches.assign(layers, {});
  state->layer_inputs[0] = state->attr;
  for (size_t l = 0; l < layers; ++l) {
    state->conv_outputs[l].resize(n * s.convs[l].irreps_out().dim());
    RETURN_IF_ERROR(s.convs[l].Forward(params.data() + s.layer_offsets[l], LayerInputs(batch, *state, l),
                                       &state->caches[l], state->conv_outputs[l].data()));
    if (l + 1 < layers) {
      state->layer_inputs[l + 1].resize(n * s.gates[l].irreps_out().dim());
      s.gates[l].Forward(state->conv_outputs[l].data(), n, state->layer_inputs[l + 1].data());
    }
  }
  state->predictions.assign(int64_t{batch.num_graphs} * config.num_targets, T(0));
  const std::vector<T>& out = state->conv_outputs.back();
  const int num_targets = config.num_targets;
  for (int64_t node = 0; node < n; ++node) {
    T* graph = state->predictions.data() + int64_t{batch.graph_index[node]} * num_targets;
    for (int t = 0; t < num_targets; ++t) graph[t] += out[node * num_targets + t];
  }
  return absl::OkStatus();
}

// grad (+=) of the loss whose gradient with respect to the predictions is grad_predictions.
template <class T>
absl::Status RunBackward(const Qm9NetworkStructure& s, const std::vector<T>& params, const GraphBatch& batch,
                         const ForwardState<T>& state, const std::vector<T>& grad_predictions, std::vector<T>* grad) {
  const int64_t n = batch.num_nodes();
  const int num_targets = s.config.num_targets;
  std::vector<T> grad_y(n * num_targets);
  for (int64_t node = 0; node < n; ++node) {
    for (int t = 0; t < num_targets; ++t) {
      grad_y[node * num_targets + t] = grad_predictions[int64_t{batch.graph_index[node]} * num_targets + t];
    }
  }
  for (size_t l = s.convs.size(); l-- > 0;) {
    std::vector<T> grad_x(l > 0 ? n * s.convs[l].irreps_in().dim() : 0);
    RETURN_IF_ERROR(s.convs[l].Backward(params.data() + s.layer_offsets[l], LayerInputs(batch, state, l),
                                        state.caches[l], grad_y.data(), grad->data() + s.layer_offsets[l],
                                        l > 0 ? grad_x.data() : nullptr));
    if (l == 0) break;
    grad_y.assign(n * s.gates[l - 1].irreps_in().dim(), T(0));
    s.gates[l - 1].Backward(state.conv_outputs[l - 1].data(), n, grad_x.data(), grad_y.data());
  }
  return absl::OkStatus();
}

template <class T>
absl::Status CheckCall(const Qm9NetworkStructure& s, const std::vector<T>& params, const GraphBatch& batch) {
  if (static_cast<int64_t>(params.size()) != s.num_parameters) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "params: expected %d values (the network's num_parameters), got %d", s.num_parameters, params.size()));
  }
  return ValidateGraphBatch(batch, s.config.num_elements);
}

template <class T>
absl::StatusOr<std::vector<T>> PredictTyped(const Qm9NetworkStructure& s, const std::vector<T>& params,
                                            const GraphBatch& batch) {
  RETURN_IF_ERROR(CheckCall(s, params, batch));
  ForwardState<T> state;
  RETURN_IF_ERROR(RunForward(s, params, batch, &state));
  return std::move(state.predictions);
}

template <class T>
absl::StatusOr<LossAndGradient<T>> LossGradientTyped(const Qm9NetworkStructure& s, const std::vector<T>& params,
                                                     const GraphBatch& batch, const std::vector<T>& targets) {
  RETURN_IF_ERROR(CheckCall(s, params, batch));
  const int64_t count = int64_t{batch.num_graphs} * s.config.num_targets;
  if (static_cast<int64_t>(targets.size()) != count) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "targets: expected num_graphs * num_targets = %d * %d = %d values, got %d", batch.num_graphs,
        s.config.num_targets, count, targets.size()));
  }
  ForwardState<T> state;
  RETURN_IF_ERROR(RunForward(s, params, batch, &state));
  LossAndGradient<T> result;
  std::vector<T> grad_predictions(count);
  for (int64_t i = 0; i < count; ++i) {
    const T diff = state.predictions[i] - targets[i];
    result.loss += std::abs(diff);
    grad_predictions[i] = (diff > T(0) ? T(1) : diff < T(0) ? T(-1) : T(0)) / static_cast<T>(count);
  }
  if (count > 0) result.loss /= static_cast<T>(count);
  result.gradient.assign(params.size(), T(0));
  RETURN_IF_ERROR(RunBackward(s, params, batch, state, grad_predictions, &result.gradient));
  result.predictions = std::move(state.predictions);
  return result;
}

}  // namespace

absl::StatusOr<std::vector<double>> Qm9Network::Predict(const std::vector<double>& params,
                                                        const GraphBatch& batch) const {
  return PredictTyped(*structure_, params, batch);
}
absl::StatusOr<std::vector<float>> Qm9Network::Predict(const std::vector<float>& params,
                                                       const GraphBatch& batch) const {
  return PredictTyped(*structure_, params, batch);
}
absl::StatusOr<LossAndGradient<double>> Qm9Network::LossGradient(const std::vector<double>& params,
                                                                 const GraphBatch& batch,
                                                                 const std::vector<double>& targets) const {
  return LossGradientTyped(*structure_, params, batch, targets);
}
absl::StatusOr<LossAndGradient<float>> Qm9Network::LossGradient(const std::vector<float>& params,
                                                                const GraphBatch& batch,
                                                                const std::vector<float>& targets) const {
  return LossGradientTyped(*structure_, params, batch, targets);
}

absl::StatusOr<std::vector<std::vector<double>>> Qm9Network::LayerFeatures(const std::vector<double>& params,
                                                                           const GraphBatch& batch) const {
  RETURN_IF_ERROR(CheckCall(*structure_, params, batch));
  ForwardState<double> state;
  RETURN_IF_ERROR(RunForward(*structure_, params, batch, &state));
  return std::vector<std::vector<double>>(state.layer_inputs.begin() + 1, state.layer_inputs.end());
}

}  // namespace tpserve::nn
