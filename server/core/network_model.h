// A network model (kind "qm9"): a named QM9 network (nn/qm9_network.h) with its parameters and
// optimizer state, an immutable versioned snapshot swapped atomically by every training step, so
// that a Predict reads one consistent version without waiting for a step in progress.
//
// Parameters and momentum velocity are float64: the CPU backend computes the network in float64
// (matching e3nn's float64 reference to rounding), the state is small next to a batch's
// activations (lmax 1, mul 128: a few MB), and an SGD update in float64 loses nothing to rounding
// over many steps. A device runner (network_runner.h; the CUDA one computes in float32) takes a
// float32 copy of the version it computes on and hands back float64 results, so that this state
// stays the one persisted source of truth whichever device computes.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nn/graph_batch.h"
#include "nn/qm9_network.h"
#include "server/core/memory_budget.h"
#include "server/core/model.h"
#include "server/core/network_runner.h"
#include "server/core/network_spec.h"

namespace tpserve::server {

// The spec as the network library's config (the architecture's other fields at their defaults).
nn::Qm9NetworkConfig NetworkConfigFor(const NetworkSpec& spec);
// INVALID_ARGUMENT naming the field: the network's own checks (lmax 1 or 2, ...) and the
// server's bounds (mul <= kMaxNetworkMul, layers <= kMaxNetworkLayers).
absl::Status ValidateNetworkSpec(const NetworkSpec& spec);
inline constexpr int kMaxNetworkMul = 1024;
inline constexpr int kMaxNetworkLayers = 32;

// Parameters and optimizer state at one version.
struct NetworkState {
  uint64_t version = 0;
  std::shared_ptr<const std::vector<double>> parameters;
  std::shared_ptr<const std::vector<double>> velocity;  // SGD momentum, same length
};
NetworkState MakeNetworkState(uint64_t version, std::vector<double> parameters, std::vector<double> velocity);

class NetworkModel {
 public:
  NetworkModel(std::string name, NetworkSpec spec, nn::Qm9Network network, NetworkState state);

  const std::string& name() const { return name_; }
  const NetworkSpec& spec() const { return spec_; }
  const nn::Qm9Network& network() const { return network_; }
  // Makes this model's runner (once, before the model is served).
  absl::Status AttachRunner(NetworkRunnerFactory& runners);
  NetworkRunner& runner() const { return *runner_; }
  const std::string& device() const { return device_; }  // where the runner computes: "cpu", "cuda:0"

  NetworkState state() const;
  void SetState(NetworkState state);
  // The version in the repository: state().version at creation and load, then moved by the saves
  // (CoreConfig::network_save_every); 0 for a server without a repository. Set under update_mutex.
  uint64_t saved_version() const { return saved_version_.load(); }
  void SetSavedVersion(uint64_t version) { saved_version_.store(version); }
  ModelInfo Info() const;

  // Serializes training steps (and delete) of this model.
  std::mutex& update_mutex() { return update_mu_; }
  void MarkDeleted() { deleted_.store(true); }
  bool deleted() const { return deleted_.load(); }
  void HoldMemory(MemoryBudget::Reservation reservation) { memory_ = std::move(reservation); }

 private:
  const std::string name_;
  const NetworkSpec spec_;
  const nn::Qm9Network network_;
  mutable std::mutex mu_;
  NetworkState state_;
  std::mutex update_mu_;
  std::atomic<bool> deleted_{false};
  std::atomic<uint64_t> saved_version_{0};
  // The checksum ModelInfo reports (FNV-1a of the parameters' float64 bytes), computed when Info asks
  // for a version it has not seen rather than on every training step: at mul 128 one pass over the
  // 60 MB of parameters costs tens of ms, next to a ~5 ms step on a GPU.
  mutable std::mutex checksum_mu_;
  mutable uint64_t checksum_version_ = 0;
  mutable uint64_t checksum_ = 0;
  MemoryBudget::Reservation memory_;
  std::string device_;
  std::unique_ptr<NetworkRunner> runner_;  // uses network_: declared after it, destroyed before it
};

// Results of the network calls (InferenceCore::Predict, InferenceCore::TrainStep).
struct NetworkPrediction {
  std::vector<double> outputs;  // [num_graphs * num_targets]
  int num_targets = 0;
  uint64_t version = 0;
};
struct NetworkTrainResult {
  double loss = 0;
  std::vector<double> predictions;  // before the update, [num_graphs * num_targets]
  int num_targets = 0;
  uint64_t version = 0;  // committed by this step
};

}  // namespace tpserve::server
