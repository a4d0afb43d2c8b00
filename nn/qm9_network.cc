#include "nn/qm9_network.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/core/status_macros.h"
#include "nn/conv_layer.h"
#include "nn/gate.h"
#include "nn/irreps_ops.h"
#include "nn/qm9_structure.h"
#include "nn/radial.h"
#include "nn/spherical_harmonics.h"

namespace tpserve::nn {


namespace {

absl::Status CheckRange(const char* field, double value, double low, double high) {
  if (!(value >= low && value <= high)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Qm9NetworkConfig.%s = %g: expected a value in [%g, %g]", field, value, low, high));
  }
  return absl::OkStatus();
}

// mul x (0e, 0o, 1e, 1o, ..., lmax e, lmax o): the hidden irreps before filtering.
Irreps HiddenIrreps(int lmax, int mul) {
  std::vector<MulIrrep> entries;
  for (int l = 0; l <= lmax; ++l) {
    entries.push_back({mul, Irrep{l, 1}});
    entries.push_back({mul, Irrep{l, -1}});
  }
  return Irreps(std::move(entries));
}

}  // namespace

absl::StatusOr<std::shared_ptr<Qm9NetworkStructure>> BuildQm9Structure(const Qm9NetworkConfig& config,
                                                                   Backend* backend) {
  RETURN_IF_ERROR(config.Validate());
  auto s = std::make_shared<Qm9NetworkStructure>();
  s->config = config;
  s->irreps_sh = SphericalHarmonicsIrreps(config.lmax);
  s->irreps_attr = Irreps({{config.num_elements, Irrep{0, 1}}});
  const Irreps hidden = HiddenIrreps(config.lmax, config.mul);
  ConvLayerOptions options;
  options.irreps_attr = s->irreps_attr;
  options.irreps_sh = s->irreps_sh;
  options.radial_hidden.assign(config.radial_layers, config.radial_hidden);
  options.num_basis = config.num_basis;
  options.num_neighbors = config.num_neighbors;
  options.attr_value = std::sqrt(static_cast<double>(config.num_elements));
  Irreps irreps = s->irreps_attr;
  for (int layer = 0; layer < config.layers; ++layer) {
    options.irreps_in = irreps;
    if (layer + 1 < config.layers) {
      // gate_points_2101: keep only the hidden irreps this layer's convolution can reach.
      std::vector<MulIrrep> scalars, gated;
      for (const MulIrrep& entry : hidden.entries()) {
        if (!PathExists(irreps, s->irreps_sh, entry.ir)) continue;
        (entry.ir.l == 0 ? scalars : gated).push_back(entry);
      }
      s->gates.push_back(Gate::Create(Irreps(scalars), Irreps(gated)));
      options.irreps_out = s->gates.back().irreps_in();
      irreps = s->gates.back().irreps_out();
    } else {
      options.irreps_out = Irreps({{config.num_targets, Irrep{0, 1}}});
    }
    ASSIGN_OR_RETURN(ConvLayer conv, ConvLayer::Create(options, backend));
    s->layer_offsets.push_back(s->num_parameters);
    s->num_parameters += conv.num_parameters();
    s->convs.push_back(std::move(conv));
  }
  return s;
}


absl::Status Qm9NetworkConfig::Validate() const {
  RETURN_IF_ERROR(CheckRange("lmax", lmax, 0, 2));
  RETURN_IF_ERROR(CheckRange("mul", mul, 1, 4096));
  RETURN_IF_ERROR(CheckRange("layers", layers, 1, 64));
  RETURN_IF_ERROR(CheckRange("num_elements", num_elements, 1, 128));
  RETURN_IF_ERROR(CheckRange("num_targets", num_targets, 1, 4096));
  RETURN_IF_ERROR(CheckRange("num_basis", num_basis, 1, 1024));
  RETURN_IF_ERROR(CheckRange("max_radius", max_radius, 1e-6, 1e6));
  RETURN_IF_ERROR(CheckRange("radial_hidden", radial_hidden, 1, 4096));
  RETURN_IF_ERROR(CheckRange("radial_layers", radial_layers, 0, 16));
  RETURN_IF_ERROR(CheckRange("num_neighbors", num_neighbors, 1e-6, 1e6));
  return absl::OkStatus();
}

absl::StatusOr<Qm9Network> Qm9Network::Create(const Qm9NetworkConfig& config, Backend* backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("Qm9Network::Create: backend is null");
  if (backend->memory_space() != MemorySpace::kHost) {
    return absl::InvalidArgumentError(
        absl::StrCat("Qm9Network runs its non-tensor-product steps on the host: expected a host-memory backend "
                     "(cpu), got ",
                     backend->name()));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Qm9NetworkStructure> structure, BuildQm9Structure(config, backend));
  return Qm9Network(std::move(structure));
}

const Qm9NetworkConfig& Qm9Network::config() const { return structure_->config; }
int64_t Qm9Network::num_parameters() const { return structure_->num_parameters; }

std::vector<ParameterBlock> Qm9Network::parameter_layout() const {
  std::vector<ParameterBlock> layout;
  for (size_t l = 0; l < structure_->convs.size(); ++l) {
    for (const LayerParameterBlock& block : structure_->convs[l].parameter_blocks()) {
      layout.push_back({absl::StrCat("layer", l, ".", block.name), structure_->layer_offsets[l] + block.offset,
                        block.numel, block.shape});
    }
  }
  return layout;
}

std::vector<double> Qm9Network::InitialParameters(uint64_t seed) const {
  // splitmix64 + Box-Muller: the same numbers on every platform (std::normal_distribution is not).
  uint64_t state = seed;
  auto next_uniform = [&state]() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (static_cast<double>(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);  // (0, 1)
  };
  std::vector<double> params(num_parameters());
  for (size_t i = 0; i < params.size(); i += 2) {
    const double radius = std::sqrt(-2.0 * std::log(next_uniform()));
    const double angle = 2.0 * M_PI * next_uniform();
    params[i] = radius * std::cos(angle);
    if (i + 1 < params.size()) params[i + 1] = radius * std::sin(angle);
  }
  return params;
}

std::vector<std::string> Qm9Network::LayerIrreps() const {
  std::vector<std::string> irreps;
  for (const Gate& gate : structure_->gates) irreps.push_back(gate.irreps_out().ToString());
  return irreps;
}

}  // namespace tpserve::nn
