#include "nn/qm9_network.h"

namespace tpserve::nn {

struct Qm9NetworkStructure {
  Qm9NetworkConfig config;
};

absl::Status Qm9NetworkConfig::Validate() const { return absl::OkStatus(); }

absl::StatusOr<Qm9Network> Qm9Network::Create(const Qm9NetworkConfig& config, Backend* backend) {
  (void)backend;
  auto structure = std::make_shared<Qm9NetworkStructure>();
  structure->config = config;
  return Qm9Network(std::move(structure));
}

const Qm9NetworkConfig& Qm9Network::config() const { return structure_->config; }
int64_t Qm9Network::num_parameters() const { return 0; }
std::vector<ParameterBlock> Qm9Network::parameter_layout() const { return {}; }
std::vector<double> Qm9Network::InitialParameters(uint64_t) const { return {}; }
std::vector<std::string> Qm9Network::LayerIrreps() const { return {}; }

absl::StatusOr<std::vector<double>> Qm9Network::Predict(const std::vector<double>&, const GraphBatch&) const {
  return absl::UnimplementedError("Qm9Network::Predict: not yet implemented");
}
absl::StatusOr<std::vector<float>> Qm9Network::Predict(const std::vector<float>&, const GraphBatch&) const {
  return absl::UnimplementedError("Qm9Network::Predict: not yet implemented");
}
absl::StatusOr<LossAndGradient<double>> Qm9Network::LossGradient(const std::vector<double>&, const GraphBatch&,
                                                                 const std::vector<double>&) const {
  return absl::UnimplementedError("Qm9Network::LossGradient: not yet implemented");
}
absl::StatusOr<LossAndGradient<float>> Qm9Network::LossGradient(const std::vector<float>&, const GraphBatch&,
                                                                const std::vector<float>&) const {
  return absl::UnimplementedError("Qm9Network::LossGradient: not yet implemented");
}

double TrainingStepFlops(const Qm9NetworkConfig&, int64_t, int64_t) { return 0; }

}  // namespace tpserve::nn
