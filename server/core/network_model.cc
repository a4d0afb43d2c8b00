#include "server/core/network_model.h"

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tpserve::server {

nn::Qm9NetworkConfig NetworkConfigFor(const NetworkSpec& spec) {
  nn::Qm9NetworkConfig config;
  config.lmax = spec.lmax;
  config.mul = spec.mul;
  config.layers = spec.layers;
  config.num_elements = spec.num_elements;
  config.num_targets = spec.num_targets;
  return config;
}

absl::Status ValidateNetworkSpec(const NetworkSpec& spec) {
  if (spec.mul < 1 || spec.mul > kMaxNetworkMul) {
    return absl::InvalidArgumentError(absl::StrCat("qm9.mul ", spec.mul, ": expected 1 to ", kMaxNetworkMul));
  }
  if (spec.layers < 1 || spec.layers > kMaxNetworkLayers) {
    return absl::InvalidArgumentError(absl::StrCat("qm9.layers ", spec.layers, ": expected 1 to ", kMaxNetworkLayers));
  }
  return NetworkConfigFor(spec).Validate();
}

NetworkState MakeNetworkState(uint64_t version, std::vector<double> parameters, std::vector<double> velocity) {
  NetworkState state;
  state.version = version;
  state.parameters = std::make_shared<const std::vector<double>>(std::move(parameters));
  state.velocity = std::make_shared<const std::vector<double>>(std::move(velocity));
  return state;
}

NetworkModel::NetworkModel(std::string name, NetworkSpec spec, nn::Qm9Network network, NetworkState state)
    : name_(std::move(name)), spec_(spec), network_(std::move(network)), state_(std::move(state)) {}

NetworkState NetworkModel::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

void NetworkModel::SetState(NetworkState state) {
  std::lock_guard<std::mutex> lock(mu_);
  state_ = std::move(state);
}

absl::Status NetworkModel::AttachRunner(NetworkRunnerFactory& runners) {
  ASSIGN_OR_RETURN(runner_, runners.MakeRunner(network_));
  device_ = runners.device();
  return absl::OkStatus();
}

ModelInfo NetworkModel::Info() const {
  // The saved version first: it is set after the state it names, so saved_version <= version.
  const uint64_t saved = saved_version();
  NetworkState snapshot = state();
  ModelInfo info;
  info.name = name_;
  info.kind = kQm9Kind;
  info.network = spec_;
  info.weight_numel = network_.num_parameters();
  info.version = snapshot.version;
  {
    std::lock_guard<std::mutex> lock(checksum_mu_);
    if (checksum_version_ != snapshot.version || snapshot.version == 0) {
      checksum_ = Fnv1a64(snapshot.parameters->data(), snapshot.parameters->size() * sizeof(double));
      checksum_version_ = snapshot.version;
    }
    info.weights_fnv1a64 = checksum_;
  }
  info.device = device_;
  info.saved_version = saved;
  return info;
}

}  // namespace tpserve::server
