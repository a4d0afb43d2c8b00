// InferenceCore's network models (kind "qm9"): create, load, find, Predict and TrainStep. The
// tensor-product half of the core is in inference_core.cc; both share the models' namespace.
#include <algorithm>
#include <cmath>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "server/core/inference_core.h"

namespace tpserve::server {
namespace {

absl::Status NetworkNotFound(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("model '", name, "' not found"));
}

absl::Status NoNetworkBackend() {
  return absl::FailedPreconditionError(
      "this server has no network backend (network models run on the CPU backend; tpserve always makes one)");
}

// Index of the first non-finite value, or -1.
int64_t FirstNonFinite(const std::vector<double>& values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace

absl::Status InferenceCore::WrongKind(const std::string& name, const char* wanted) const {
  if (std::string(wanted) == kTensorProductKind) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", name, "' is a network model (kind qm9); this call serves tensor-product models (kind tp): "
        "use NetworkService.Predict / TrainStep"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "model '", name, "' is a tensor-product model (kind tp); Predict and TrainStep serve network models (kind qm9)"));
}

absl::Status InferenceCore::AddStoredNetwork(StoredNetwork stored) {
  const std::string where = absl::StrCat("model '", stored.name, "': ", config_.model_dir, "/", stored.name,
                                         "/config.json: ");
  if (network_backend_ == nullptr) return absl::DataLossError(absl::StrCat(where, NoNetworkBackend().message()));
  if (absl::Status valid = ValidateNetworkSpec(stored.spec); !valid.ok()) {
    return absl::DataLossError(absl::StrCat(where, valid.message()));
  }
  absl::StatusOr<nn::Qm9Network> network = nn::Qm9Network::Create(NetworkConfigFor(stored.spec), network_backend_.get());
  if (!network.ok()) return absl::DataLossError(absl::StrCat(where, network.status().message()));
  if (network->num_parameters() != static_cast<int64_t>(stored.parameters.size())) {
    return absl::DataLossError(absl::StrCat(where, stored.parameters.size(), " parameters on disk, the network needs ",
                                            network->num_parameters()));
  }
  // Counted even past the limit: a model on disk is served (as tensor-product models are).
  MemoryBudget::Reservation memory = budget_->ForceReserve(NetworkMemoryBytes(network->num_parameters()));
  auto model = std::make_shared<NetworkModel>(
      stored.name, stored.spec, *std::move(network),
      MakeNetworkState(stored.version, std::move(stored.parameters), std::move(stored.velocity)));
  model->HoldMemory(std::move(memory));
  model->SetSavedVersion(stored.version);
  if (absl::Status attached = model->AttachRunner(*network_runners_); !attached.ok()) {
    return absl::DataLossError(absl::StrCat(where, attached.message()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  networks_[model->name()] = std::move(model);
  return absl::OkStatus();
}

absl::StatusOr<ModelInfo> InferenceCore::CreateNetworkModel(const std::string& name, const NetworkSpec& spec,
                                                            uint64_t seed) {
  RETURN_IF_ERROR(ValidateModelName(name));
  RETURN_IF_ERROR(ValidateNetworkSpec(spec));
  if (network_backend_ == nullptr) return NoNetworkBackend();
  ASSIGN_OR_RETURN(nn::Qm9Network network, nn::Qm9Network::Create(NetworkConfigFor(spec), network_backend_.get()));
  const int64_t num_parameters = network.num_parameters();
  if (num_parameters > kMaxServedWeightNumel) {
    return absl::InvalidArgumentError(absl::StrCat("qm9: ", num_parameters, " parameters, more than the ",
                                                   kMaxServedWeightNumel, " a model may have"));
  }
  ASSIGN_OR_RETURN(MemoryBudget::Reservation memory,
                   budget_->Reserve(NetworkMemoryBytes(num_parameters), absl::StrCat("model '", name, "'")));
  std::lock_guard<std::mutex> create_lock(create_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (models_.count(name) || networks_.count(name)) {
      return absl::AlreadyExistsError(absl::StrCat("model '", name, "' already exists"));
    }
  }
  std::vector<double> parameters = network.InitialParameters(seed);
  std::vector<double> velocity(parameters.size(), 0.0);
  auto model = std::make_shared<NetworkModel>(name, spec, std::move(network),
                                              MakeNetworkState(1, parameters, velocity));
  RETURN_IF_ERROR(model->AttachRunner(*network_runners_));
  RETURN_IF_ERROR(repository_.CreateNetwork(StoredNetwork{name, spec, 1, std::move(parameters), std::move(velocity)}));
  model->SetSavedVersion(repository_.persistent() ? 1 : 0);
  model->HoldMemory(std::move(memory));
  ModelInfo info = model->Info();
  {
    std::lock_guard<std::mutex> lock(mu_);
    networks_[name] = std::move(model);
  }
  observer_->OnModelAdded(name);
  return info;
}

absl::StatusOr<std::shared_ptr<NetworkModel>> InferenceCore::FindNetworkModel(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = networks_.find(name);
  if (it == networks_.end()) return models_.count(name) ? WrongKind(name, kQm9Kind) : NetworkNotFound(name);
  return it->second;
}

absl::Status InferenceCore::ValidateGraphs(const nn::GraphBatch& graphs, int num_elements) const {
  if (graphs.num_nodes() > config_.max_graph_nodes) {
    return absl::InvalidArgumentError(absl::StrCat("graphs: ", graphs.num_nodes(), " nodes, more than the server's ",
                                                   "max_graph_nodes ", config_.max_graph_nodes));
  }
  if (graphs.num_edges() > config_.max_graph_edges) {
    return absl::InvalidArgumentError(absl::StrCat("graphs: ", graphs.num_edges(), " edges, more than the server's ",
                                                   "max_graph_edges ", config_.max_graph_edges));
  }
  if (graphs.num_graphs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("graphs: num_graphs ", graphs.num_graphs, "; expected >= 1"));
  }
  return nn::ValidateGraphBatch(graphs, num_elements);
}

absl::StatusOr<NetworkPrediction> InferenceCore::Predict(const std::string& name, const nn::GraphBatch& graphs) {
  ASSIGN_OR_RETURN(std::shared_ptr<NetworkModel> model, FindNetworkModel(name));
  RETURN_IF_ERROR(ValidateGraphs(graphs, model->spec().num_elements));
  const NetworkState state = model->state();
  NetworkPrediction prediction;
  ASSIGN_OR_RETURN(prediction.outputs, model->runner().Predict(state, graphs));
  prediction.num_targets = model->spec().num_targets;
  prediction.version = state.version;
  return prediction;
}

absl::StatusOr<NetworkTrainResult> InferenceCore::TrainStep(const std::string& name, const nn::GraphBatch& graphs,
                                                            const std::vector<double>& targets, double learning_rate,
                                                            double momentum, uint64_t expected_version) {
  if (!std::isfinite(learning_rate) || learning_rate <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("learning_rate: expected a finite number > 0, got ", learning_rate));
  }
  if (!(momentum >= 0 && momentum < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("momentum: expected a number in [0, 1), got ", momentum));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<NetworkModel> model, FindNetworkModel(name));
  RETURN_IF_ERROR(ValidateGraphs(graphs, model->spec().num_elements));
  const int num_targets = model->spec().num_targets;
  const int64_t expected_targets = int64_t{graphs.num_graphs} * num_targets;
  if (static_cast<int64_t>(targets.size()) != expected_targets) {
    return absl::InvalidArgumentError(absl::StrCat("targets: ", targets.size(), " values; expected [", graphs.num_graphs,
                                                   ", ", num_targets, "] ([num_graphs, num_targets])"));
  }
  if (const int64_t bad = FirstNonFinite(targets); bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("targets: non-finite value at [", bad / num_targets, ", ",
                                                   bad % num_targets, "]"));
  }
  const int64_t num_parameters = model->network().num_parameters();
  // The gradient, and the new parameters and velocity, while the step runs.
  ASSIGN_OR_RETURN(MemoryBudget::Reservation memory,
                   budget_->Reserve(3 * num_parameters * int64_t{sizeof(double)},
                                    absl::StrCat("a training step of model '", name, "'")));
  std::lock_guard<std::mutex> update_lock(model->update_mutex());
  if (model->deleted()) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' was deleted while this call ran"));
  }
  const NetworkState state = model->state();
  if (expected_version != 0 && expected_version != state.version) {
    return absl::FailedPreconditionError(absl::StrCat("model '", name, "' is at version ", state.version,
                                                      ", the step expected ", expected_version));
  }
  ASSIGN_OR_RETURN(NetworkStep step, model->runner().TrainStep(state, graphs, targets,
                                                               nn::SgdMomentumOptions{learning_rate, momentum}));
  if (static_cast<int64_t>(step.parameters.size()) != num_parameters ||
      static_cast<int64_t>(step.velocity.size()) != num_parameters) {
    return absl::InternalError(absl::StrCat("model '", name, "': the ", model->device(), " runner returned ",
                                            step.parameters.size(), " parameters, expected ", num_parameters));
  }
  std::vector<double> parameters = std::move(step.parameters);
  std::vector<double> velocity = std::move(step.velocity);
  const uint64_t version = state.version + 1;
  // Saved first when this step makes network_save_every steps since the version on disk (every
  // step by default), or once Shutdown began (its save may have passed this model already): a
  // failed save leaves the model as it was, in memory and on disk. Otherwise the new version is
  // served from memory until a later step's save or Shutdown's.
  const bool save = repository_.persistent() &&
                    (shut_down_.load() || version - model->saved_version() >=
                                              static_cast<uint64_t>(std::max<int64_t>(config_.network_save_every, 1)));
  if (save) RETURN_IF_ERROR(repository_.WriteNetworkState(name, model->spec(), version, parameters, velocity));
  model->SetState(MakeNetworkState(version, std::move(parameters), std::move(velocity)));
  if (save) model->SetSavedVersion(version);  // after the state: Info never shows saved > version
  NetworkTrainResult result;
  result.loss = step.loss;
  result.predictions = std::move(step.predictions);
  result.num_targets = num_targets;
  result.version = version;
  return result;
}

absl::Status InferenceCore::SaveNetworkModels() {
  std::vector<std::shared_ptr<NetworkModel>> models;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, model] : networks_) models.push_back(model);
  }
  absl::Status first_error;
  for (const std::shared_ptr<NetworkModel>& model : models) {
    // After any step in progress; a deleted model's directory is gone (nothing to save).
    std::lock_guard<std::mutex> update_lock(model->update_mutex());
    const NetworkState state = model->state();
    const uint64_t saved = model->saved_version();
    if (!repository_.persistent() || model->deleted() || state.version == saved) continue;
    absl::Status written =
        repository_.WriteNetworkState(model->name(), model->spec(), state.version, *state.parameters, *state.velocity);
    if (!written.ok()) {
      std::cerr << "tpserve: network model '" << model->name() << "': version " << state.version
                << " not saved (" << written.message() << "); the repository keeps version " << saved << std::endl;
      first_error.Update(written);
      continue;
    }
    model->SetSavedVersion(state.version);
    std::cout << "tpserve: network model '" << model->name() << "': saved version " << state.version << " ("
              << state.version - saved << " steps since the last save)" << std::endl;
  }
  return first_error;
}

}  // namespace tpserve::server
