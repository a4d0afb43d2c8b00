// Where a network model's Predict and TrainStep compute: the CPU network (nn/qm9_network.h, fp64,
// on the calling thread) or a device's. The core owns the persisted state (NetworkState, float64)
// and commits a step; a runner only computes, from the state it is given, the step's results.
//
// The server core links no device runtime (issue 17: the backend owns devices): the CPU runner is
// here, the CUDA one is made outside the core (server/network_device.h) and handed to
// InferenceCore::Create as a NetworkRunnerFactory.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nn/graph_batch.h"
#include "nn/qm9_network.h"
#include "nn/sgd.h"

namespace tpserve::server {

struct NetworkState;

// What a training step computed; the core saves and commits parameters and velocity.
struct NetworkStep {
  double loss = 0;
  std::vector<double> predictions;  // before the update, [num_graphs * num_targets]
  std::vector<double> parameters;   // after the update
  std::vector<double> velocity;     // after the update
};

// One network model's computation on one device. Thread-safe: Predicts may run concurrently;
// TrainStep calls of one model are serialized by the core (NetworkModel::update_mutex).
class NetworkRunner {
 public:
  virtual ~NetworkRunner() = default;
  // The graphs are validated by the caller (InferenceCore::ValidateGraphs).
  virtual absl::StatusOr<std::vector<double>> Predict(const NetworkState& state, const nn::GraphBatch& graphs) = 0;
  // Loss, gradient and one SGD-with-momentum update from `state` (its velocity carried over).
  // INVALID_ARGUMENT when the loss or the gradient is not finite (nothing to commit).
  virtual absl::StatusOr<NetworkStep> TrainStep(const NetworkState& state, const nn::GraphBatch& graphs,
                                                const std::vector<double>& targets,
                                                const nn::SgdMomentumOptions& sgd) = 0;
};

// Makes each network model's runner; one per server, naming the device all of them use.
class NetworkRunnerFactory {
 public:
  virtual ~NetworkRunnerFactory() = default;
  // "cpu" or "cuda:N": reported in ModelInfo, the metrics and at start-up.
  virtual std::string device() const = 0;
  // `network` (the CPU network of the model's config) outlives the runner; a device runner may
  // use it for its config only, and may defer device work (memory, streams) to its first call.
  virtual absl::StatusOr<std::unique_ptr<NetworkRunner>> MakeRunner(const nn::Qm9Network& network) = 0;
};

// The CPU network on the calling thread, fp64 (its backend is the one the network was made with).
std::unique_ptr<NetworkRunnerFactory> MakeCpuNetworkRunners();

// INVALID_ARGUMENT when the loss or one of `values` (the gradient, or the new velocity, which a
// non-finite gradient makes non-finite) is not finite: the same message on every device.
absl::Status CheckFiniteStep(double loss, const std::vector<double>& values);

}  // namespace tpserve::server
