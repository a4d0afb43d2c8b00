#include "server/core/network_runner.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "server/core/network_model.h"

namespace tpserve::server {
namespace {

class CpuNetworkRunner final : public NetworkRunner {
 public:
  explicit CpuNetworkRunner(const nn::Qm9Network& network) : network_(network) {}

  absl::StatusOr<std::vector<double>> Predict(const NetworkState& state, const nn::GraphBatch& graphs) override {
    return network_.Predict(*state.parameters, graphs);
  }

  absl::StatusOr<NetworkStep> TrainStep(const NetworkState& state, const nn::GraphBatch& graphs,
                                        const std::vector<double>& targets,
                                        const nn::SgdMomentumOptions& sgd) override {
    ASSIGN_OR_RETURN(nn::LossAndGradient<double> loss, network_.LossGradient(*state.parameters, graphs, targets));
    RETURN_IF_ERROR(CheckFiniteStep(loss.loss, loss.gradient));
    NetworkStep step;
    step.loss = loss.loss;
    step.predictions = std::move(loss.predictions);
    step.parameters = *state.parameters;
    step.velocity = *state.velocity;
    nn::SgdMomentumStep(step.parameters, step.velocity, loss.gradient, sgd);
    return step;
  }

 private:
  const nn::Qm9Network& network_;
};

class CpuNetworkRunners final : public NetworkRunnerFactory {
 public:
  std::string device() const override { return "cpu"; }
  absl::StatusOr<std::unique_ptr<NetworkRunner>> MakeRunner(const nn::Qm9Network& network) override {
    return std::unique_ptr<NetworkRunner>(std::make_unique<CpuNetworkRunner>(network));
  }
};

}  // namespace

std::unique_ptr<NetworkRunnerFactory> MakeCpuNetworkRunners() { return std::make_unique<CpuNetworkRunners>(); }

absl::Status CheckFiniteStep(double loss, const std::vector<double>& values) {
  bool finite = std::isfinite(loss);
  for (size_t i = 0; finite && i < values.size(); ++i) finite = std::isfinite(values[i]);
  if (finite) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("the loss or its gradient is not finite on this batch (loss ", loss,
                                                 "); the model is unchanged"));
}

}  // namespace tpserve::server
