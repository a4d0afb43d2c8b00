#include "server/cuda_network_runner.h"

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/cuda/device_memory.h"
#include "nn/cuda/qm9_cuda_network.h"
#include "server/core/model.h"
#include "server/core/network_model.h"

namespace tpserve::server {
namespace {

std::vector<float> ToFloat(const std::vector<double>& values) { return {values.begin(), values.end()}; }
std::vector<double> ToDouble(const std::vector<float>& values) { return {values.begin(), values.end()}; }

class CudaNetworkRunner final : public NetworkRunner {
 public:
  CudaNetworkRunner(const nn::Qm9NetworkConfig& config, int device) : config_(config), device_(device) {}
  ~CudaNetworkRunner() override {
    if (network_ == nullptr) return;
    cuda::DeviceScope scope(device_);  // its buffers, stream and handles are freed on their device
    network_.reset();
  }

  absl::StatusOr<std::vector<double>> Predict(const NetworkState& state, const nn::GraphBatch& graphs) override {
    std::lock_guard<std::mutex> lock(mu_);
    cuda::DeviceScope scope(device_);
    RETURN_IF_ERROR(Load(state));
    RETURN_IF_ERROR(network_->SetBatch(graphs, {}));
    RETURN_IF_ERROR(network_->EnqueueForward());
    ASSIGN_OR_RETURN(std::vector<float> predictions, network_->Predictions());
    return ToDouble(predictions);
  }

  absl::StatusOr<NetworkStep> TrainStep(const NetworkState& state, const nn::GraphBatch& graphs,
                                        const std::vector<double>& targets,
                                        const nn::SgdMomentumOptions& sgd) override {
    std::lock_guard<std::mutex> lock(mu_);
    cuda::DeviceScope scope(device_);
    RETURN_IF_ERROR(Load(state));
    RETURN_IF_ERROR(network_->SetBatch(graphs, ToFloat(targets)));
    held_version_.reset();  // from here on the device holds a step in progress
    RETURN_IF_ERROR(network_->EnqueueLossGradient());
    RETURN_IF_ERROR(network_->EnqueueSgdStep(sgd));
    NetworkStep step;
    ASSIGN_OR_RETURN(const float loss, network_->Loss());
    step.loss = loss;
    ASSIGN_OR_RETURN(std::vector<float> predictions, network_->Predictions());
    ASSIGN_OR_RETURN(std::vector<float> parameters, network_->Parameters());
    ASSIGN_OR_RETURN(std::vector<float> velocity, network_->Velocity());
    step.predictions = ToDouble(predictions);
    step.parameters = ToDouble(parameters);
    step.velocity = ToDouble(velocity);
    // A non-finite gradient leaves a non-finite velocity (the gradient itself stays on the device).
    RETURN_IF_ERROR(CheckFiniteStep(step.loss, step.velocity));
    // What the core commits when its save succeeds; a state of another version (the save failed,
    // or Predict runs on the version before) is uploaded again on the next call. The version alone
    // names the state: this runner serves one model, whose steps are serialized and each commit
    // the version after the state they started from (a failed step leaves the model at `state`,
    // and the next call, from `state`, uploads it again), so no two states of one version meet here.
    held_version_ = state.version + 1;
    return step;
  }

 private:
  // Makes the device network on first use and uploads `state` unless the device holds it.
  absl::Status Load(const NetworkState& state) {
    if (network_ == nullptr) {
      nn::Qm9CudaOptions options;
      options.device = device_;
      absl::StatusOr<std::unique_ptr<nn::Qm9CudaNetwork>> network = nn::Qm9CudaNetwork::Create(config_, options);
      if (!network.ok()) {
        return absl::Status(network.status().code(),
                            absl::StrCat("cuda:", device_, ": the network: ", network.status().message()));
      }
      network_ = *std::move(network);
    }
    if (held_version_ == state.version) return absl::OkStatus();
    held_version_.reset();
    RETURN_IF_ERROR(network_->SetParameters(ToFloat(*state.parameters)));
    RETURN_IF_ERROR(network_->SetVelocity(ToFloat(*state.velocity)));
    held_version_ = state.version;
    return absl::OkStatus();
  }

  const nn::Qm9NetworkConfig config_;
  const int device_;
  std::mutex mu_;  // everything below, and the device network's stream
  std::unique_ptr<nn::Qm9CudaNetwork> network_;
  std::optional<uint64_t> held_version_;  // the version on the device (none: unknown, upload before use)
};

class CudaNetworkRunners final : public NetworkRunnerFactory {
 public:
  explicit CudaNetworkRunners(int device) : device_(device) {}
  std::string device() const override { return absl::StrCat("cuda:", device_); }
  absl::StatusOr<std::unique_ptr<NetworkRunner>> MakeRunner(const nn::Qm9Network& network) override {
    return std::unique_ptr<NetworkRunner>(std::make_unique<CudaNetworkRunner>(network.config(), device_));
  }

 private:
  const int device_;
};

}  // namespace

std::unique_ptr<NetworkRunnerFactory> MakeCudaNetworkRunners(int device) {
  return std::make_unique<CudaNetworkRunners>(device);
}

}  // namespace tpserve::server
