#include "server/core/inference_core.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <condition_variable>
#include <optional>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/core/status_macros.h"
#include "server/core/gradient_sum.h"

namespace tpserve::server {
namespace {

WeightsSnapshot MakeSnapshot(uint64_t version, std::vector<float> weights) {
  WeightsSnapshot snapshot;
  snapshot.version = version;
  snapshot.fnv1a64 = Fnv1a64(weights.data(), weights.size() * sizeof(float));
  snapshot.weights = std::make_shared<const std::vector<float>>(std::move(weights));
  return snapshot;
}

absl::Status NotFound(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("model '", name, "' not found"));
}

// INVALID_ARGUMENT naming the expected [batch, dim] when `t` is not exactly that.
absl::Status CheckMatrix(const HostTensor& t, const char* what, int64_t batch, int64_t dim, const char* dim_name,
                         bool check_size) {
  if (t.shape.size() != 2 || t.shape[0] != batch || t.shape[1] != dim) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected shape [", batch, ", ", dim, "] ([batch, ",
                                                   dim_name, "]), got ", ShapeString(t.shape)));
  }
  if (check_size && static_cast<int64_t>(t.size()) != batch * dim) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": holds ", t.size(), " values, expected ", batch * dim));
  }
  return absl::OkStatus();
}

// True when any of the n values is NaN or +-Inf (all exponent bits set). No early exit and no
// floating-point compare, so the loop vectorizes: a seed-sized request scans in microseconds.
// An AVX2 clone is chosen at load time where the CPU has it (twice the width of the baseline SSE2).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
bool AnyNonFinite(const float* values, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, values + i, 4);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad != 0;
}

// Index of the first NaN or +-Inf among the n values, or -1. The usual all-finite case costs the
// one vectorized pass; only a bad array is scanned again to name the element.
int64_t FirstNonFinite(const float* values, size_t n) {
  if (!AnyNonFinite(values, n)) return -1;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) return static_cast<int64_t>(i);
  }
  return -1;
}

absl::Status CheckFiniteWeights(const std::vector<float>& weights) {
  const int64_t i = FirstNonFinite(weights.data(), weights.size());
  if (i < 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "weights: non-finite value %f at [%d] (the server rejects NaN and Inf; see --non_finite)", weights[i], i));
}

absl::Status CheckFinite(const HostTensor& t, const char* what) {
  const int64_t i = FirstNonFinite(t.values(), t.size());
  if (i < 0) return absl::OkStatus();
  const int64_t cols = t.shape.size() == 2 ? t.shape[1] : 1;
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: non-finite value %f at [%d, %d] (the server rejects NaN and Inf; see --non_finite)", what,
                      t.values()[i], i / cols, i % cols));
}

}  // namespace

// ---- WeightsAssembler -----------------------------------------------------------------------

WeightsAssembler::WeightsAssembler(int64_t weight_numel) : weight_numel_(weight_numel) {
  weights_.reserve(static_cast<size_t>(weight_numel));
}

absl::Status WeightsAssembler::Append(int64_t offset, std::vector<float> values) {
  if (offset != received()) {
    return absl::InvalidArgumentError(absl::StrCat("weights chunk at offset ", offset, ": expected offset ",
                                                   received(), " (chunks in order, no gaps or overlaps)"));
  }
  if (received() + static_cast<int64_t>(values.size()) > weight_numel_) {
    return absl::InvalidArgumentError(absl::StrCat("weights chunk [", offset, ", ", offset + values.size(),
                                                   ") runs past weight_numel ", weight_numel_));
  }
  weights_.insert(weights_.end(), values.begin(), values.end());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> WeightsAssembler::Finish() && {
  if (received() != weight_numel_) {
    return absl::FailedPreconditionError(
        absl::StrCat("weights upload ended after ", received(), " of ", weight_numel_, " elements"));
  }
  return std::move(weights_);
}

// ---- InferenceCore --------------------------------------------------------------------------

InferenceCore::InferenceCore(CoreConfig config, CoreObserver* observer)
    : config_(std::move(config)),
      observer_(observer != nullptr ? observer : &null_observer_),
      repository_(config_.model_dir),
      budget_(std::make_unique<MemoryBudget>(config_.max_memory_bytes, [this](int64_t used, int64_t limit) {
        observer_->OnMemoryBudget(used, limit);
      })) {}

absl::StatusOr<std::unique_ptr<InferenceCore>> InferenceCore::Create(CoreConfig config,
                                                                     std::vector<std::unique_ptr<Backend>> backends,
                                                                     CoreObserver* observer,
                                                                     std::unique_ptr<Backend> network_backend,
                                                                     std::unique_ptr<NetworkRunnerFactory> network_runners) {
  if (backends.empty()) return absl::InvalidArgumentError("the inference core needs at least one backend");
  if (config.max_batch_size < 1 || config.max_queued_requests < 1 || config.max_queue_delay_us < 0) {
    return absl::InvalidArgumentError(
        "max_batch_size and max_queued_requests must be >= 1, max_queue_delay_us >= 0");
  }
  std::unique_ptr<InferenceCore> core(new InferenceCore(std::move(config), observer));
  core->network_backend_ = std::move(network_backend);
  if (core->network_backend_ != nullptr) {
    core->network_runners_ = network_runners != nullptr ? std::move(network_runners) : MakeCpuNetworkRunners();
  }
  RETURN_IF_ERROR(core->repository_.Init());
  ASSIGN_OR_RETURN(RepositoryContents stored, core->repository_.Scan());
  std::vector<DamagedModel> damaged = std::move(stored.damaged);
  // How many host-memory workers each model's budget share counts (ModelMemoryBytes).
  for (const auto& backend : backends) core->host_workers_ += backend->memory_space() == MemorySpace::kHost ? 1 : 0;
  for (StoredModel& m : stored.models) {
    // Models already stored load whatever the current --max_paths (they were accepted once).
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<TensorProductPlan> plan = PlanForSpec(m.spec, PlanLimits{/*max_paths=*/0});
    core->observer_->OnPlanBuilt(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    const std::string config_path = core->config_.model_dir + "/" + m.name + "/config.json";
    absl::Status why;
    if (!plan.ok()) {
      why = absl::DataLossError(absl::StrCat("model '", m.name, "': ", config_path, ": ", plan.status().message()));
    } else if (plan->weight_numel() != static_cast<int64_t>(m.weights.size())) {
      why = absl::DataLossError(absl::StrCat("model '", m.name, "': ", config_path, ": ", m.weights.size(),
                                             " weights on disk, its irreps need ", plan->weight_numel()));
    }
    if (!why.ok()) {
      damaged.push_back(DamagedModel{m.name, core->config_.model_dir + "/" + m.name, why});
      continue;
    }
    // Counted even past the limit: a model on disk is served; new work then finds less room.
    MemoryBudget::Reservation memory = core->budget_->ForceReserve(core->ModelMemoryBytes(*plan));
    auto model = std::make_shared<Model>(m.name, *std::move(plan), MakeSnapshot(m.version, std::move(m.weights)));
    model->HoldMemory(std::move(memory));
    core->models_[m.name] = std::move(model);
  }
  for (StoredNetwork& n : stored.networks) {
    const std::string name = n.name;
    if (absl::Status added = core->AddStoredNetwork(std::move(n)); !added.ok()) {
      damaged.push_back(DamagedModel{name, core->config_.model_dir + "/" + name, added});
    }
  }
  std::sort(damaged.begin(), damaged.end(),
            [](const DamagedModel& a, const DamagedModel& b) { return a.name < b.name; });
  for (const DamagedModel& d : damaged) {
    // Refusing to start is the default: serving without a model that clients expect (or with
    // wrong weights) is worse than not serving. On request the model is kept aside for a person.
    if (!core->config_.skip_damaged_models) return d.why;
    ASSIGN_OR_RETURN(std::string aside, core->repository_.MoveAside(d.name));
    std::cerr << "tpserve: skipping damaged model '" << d.name << "' (" << d.why.message() << "); moved to "
              << aside << "\n";
  }
  for (const auto& [name, model] : core->models_) core->observer_->OnModelAdded(name);
  for (const auto& [name, model] : core->networks_) core->observer_->OnModelAdded(name);
  core->batcher_ = std::make_unique<Batcher>(BatcherConfig{core->config_.max_batch_size,
                                                           core->config_.max_queue_delay_us,
                                                           core->config_.max_queued_requests,
                                                           core->config_.max_queued_bytes});
  for (auto& backend : backends) {
    const int index = static_cast<int>(core->workers_.size());
    core->workers_.push_back(
        std::make_unique<Worker>(index, std::move(backend), core->batcher_.get(), core->observer_));
  }
  // Workers of one device share its load (least-loaded dispatch, batcher.h).
  std::map<std::string, std::shared_ptr<std::atomic<int>>> device_loads;
  for (auto& worker : core->workers_) {
    auto& load = device_loads[worker->device()];
    if (load == nullptr) load = std::make_shared<std::atomic<int>>(0);
    worker->ShareDeviceLoad(load);
  }
  // Leases are page-locked through the first worker's backend (CUDA allocates them portable, so
  // every device's copies use them at full speed). The default 256 MiB holds ~280 seed-sized calls.
  Backend* first = &core->workers_.front()->backend();
  core->host_pool_ = HostPool::Create([first](size_t bytes) { return first->AllocateHost(bytes); },
                                      static_cast<size_t>(std::max<int64_t>(core->config_.max_pinned_host_bytes, 0)));
  for (auto& worker : core->workers_) {
    InferenceCore* self = core.get();
    worker->SetDeviceLostHandler(
        [self](const std::string& device, const std::string& why) { self->NotifyDeviceLost(device, why); });
    for (const auto& [name, model] : core->models_) RETURN_IF_ERROR(worker->Warm(*model));
    worker->Start();
  }
  return core;
}

void InferenceCore::NotifyDeviceLost(const std::string& device, const std::string& why) {
  // Listeners run under the lock, so that one removed is never called afterwards.
  std::lock_guard<std::mutex> lock(lost_mu_);
  for (const auto& [lost, unused] : lost_devices_) {
    if (lost == device) return;  // workers sharing a device report it once
  }
  lost_devices_.emplace_back(device, why);
  // Every worker on the device stops launching (not only the one that found the fault). While
  // another device still serves, they also leave the queue's rotation, so requests go there; the
  // last device's workers keep answering UNAVAILABLE, so that nothing waits on a queue nobody takes.
  bool others_serve = false;
  for (auto& worker : workers_) others_serve = others_serve || (worker->device() != device && !worker->lost());
  for (auto& worker : workers_) {
    if (worker->device() == device) worker->MarkLost(why, /*retire=*/others_serve);
  }
  observer_->OnDeviceLost(device, why);
  for (const auto& [id, listener] : lost_listeners_) listener(device, why);
}

int InferenceCore::AddDeviceLostListener(DeviceLostListener listener) {
  std::lock_guard<std::mutex> lock(lost_mu_);
  const int id = next_lost_listener_++;
  for (const auto& [device, why] : lost_devices_) listener(device, why);
  lost_listeners_[id] = std::move(listener);
  return id;
}

void InferenceCore::RemoveDeviceLostListener(int id) {
  std::lock_guard<std::mutex> lock(lost_mu_);
  lost_listeners_.erase(id);
}

bool InferenceCore::AllDevicesLost() const {
  for (const auto& worker : workers_) {
    if (!worker->lost()) return false;
  }
  return true;
}

std::vector<std::string> InferenceCore::LostDevices() const {
  std::lock_guard<std::mutex> lock(lost_mu_);
  std::vector<std::string> devices;
  for (const auto& [device, why] : lost_devices_) devices.push_back(device);
  return devices;
}

InferenceCore::~InferenceCore() { Shutdown(); }

void InferenceCore::Shutdown() {
  if (shut_down_.exchange(true)) return;
  // Create may fail (a damaged repository) before the batcher and the workers exist.
  if (batcher_ != nullptr) batcher_->Shutdown();
  for (auto& worker : workers_) worker->Join();
  SaveNetworkModels().IgnoreError();  // each failure is logged; the repository keeps its last version
}

std::vector<std::string> InferenceCore::devices() const {
  std::vector<std::string> names;
  for (const auto& worker : workers_) names.push_back(worker->device());
  return names;
}

absl::StatusOr<std::shared_ptr<Model>> InferenceCore::FindModel(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return networks_.count(name) ? WrongKind(name, kTensorProductKind) : NotFound(name);
  return it->second;
}

absl::StatusOr<TensorProductPlan> InferenceCore::BuildPlan(const ModelSpec& spec,
                                                          std::function<bool()> should_stop) const {
  const auto start = std::chrono::steady_clock::now();
  PlanLimits limits;
  limits.max_paths = std::max<int64_t>(config_.max_paths, 1);
  limits.should_stop = std::move(should_stop);
  absl::StatusOr<TensorProductPlan> plan = PlanForSpec(spec, limits);
  // Refusals by the limits cost no build; only builds are counted.
  if (plan.ok() || absl::IsCancelled(plan.status())) {
    observer_->OnPlanBuilt(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return plan;
}

int64_t InferenceCore::ModelMemoryBytes(const TensorProductPlan& plan) const {
  return plan.weight_numel() * static_cast<int64_t>(sizeof(float)) * (1 + 2 * host_workers_);
}

size_t InferenceCore::ReleaseIdleMemory() {
  const size_t freed = host_pool_->ReleaseFree();
  malloc_trim(0);
  return freed;
}

absl::StatusOr<ModelInfo> InferenceCore::CreateModel(const std::string& name, const ModelSpec& spec,
                                                     std::optional<std::vector<float>> weights, uint64_t seed) {
  RETURN_IF_ERROR(ValidateModelName(name));
  ASSIGN_OR_RETURN(TensorProductPlan plan, BuildPlan(spec));
  return CreateModel(name, std::move(plan), std::move(weights), seed);
}

absl::StatusOr<ModelInfo> InferenceCore::CreateModel(const std::string& name, TensorProductPlan plan,
                                                     std::optional<std::vector<float>> weights, uint64_t seed) {
  RETURN_IF_ERROR(ValidateModelName(name));
  ASSIGN_OR_RETURN(MemoryBudget::Reservation memory,
                   budget_->Reserve(ModelMemoryBytes(plan), absl::StrCat("model '", name, "'")));
  if (weights.has_value() && static_cast<int64_t>(weights->size()) != plan.weight_numel()) {
    return absl::InvalidArgumentError(absl::StrCat("weights: expected [", plan.weight_numel(),
                                                   "] (weight_numel of this plan), got [", weights->size(), "]"));
  }
  if (weights.has_value() && config_.reject_non_finite) RETURN_IF_ERROR(CheckFiniteWeights(*weights));
  std::lock_guard<std::mutex> create_lock(create_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (models_.count(name) || networks_.count(name)) {
      return absl::AlreadyExistsError(absl::StrCat("model '", name, "' already exists"));
    }
  }
  std::vector<float> initial = weights.has_value() ? *std::move(weights) : SeededWeights(plan.weight_numel(), seed);
  WeightsSnapshot snapshot = MakeSnapshot(1, std::move(initial));
  StoredModel stored{name, NormalizedSpec(plan), snapshot.version, *snapshot.weights, snapshot.fnv1a64};
  RETURN_IF_ERROR(repository_.Create(stored));
  auto model = std::make_shared<Model>(name, std::move(plan), std::move(snapshot));
  model->HoldMemory(std::move(memory));
  // Replicas on every device before the model is visible. A failure (out of device memory)
  // undoes the create, so disk and memory agree.
  for (auto& worker : workers_) {
    absl::Status warmed = worker->Warm(*model);
    if (!warmed.ok()) {
      for (auto& w : workers_) w->DropModel(*model);
      repository_.Remove(name).IgnoreError();
      return WithDevice(warmed, worker->device());
    }
  }
  ModelInfo info = model->Info();
  {
    std::lock_guard<std::mutex> lock(mu_);
    models_[name] = std::move(model);
  }
  observer_->OnModelAdded(name);
  return info;
}

absl::StatusOr<ModelInfo> InferenceCore::GetModel(const std::string& name) const {
  if (absl::StatusOr<std::shared_ptr<NetworkModel>> network = FindNetworkModel(name); network.ok()) {
    return (*network)->Info();
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, FindModel(name));
  return model->Info();
}

std::vector<ModelInfo> InferenceCore::ListModels() const {
  std::vector<ModelInfo> infos;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, model] : models_) infos.push_back(model->Info());
  for (const auto& [name, model] : networks_) infos.push_back(model->Info());
  std::sort(infos.begin(), infos.end(), [](const ModelInfo& a, const ModelInfo& b) { return a.name < b.name; });
  return infos;
}

absl::Status InferenceCore::DeleteModel(const std::string& name) {
  std::lock_guard<std::mutex> create_lock(create_mu_);
  if (absl::StatusOr<std::shared_ptr<NetworkModel>> network = FindNetworkModel(name); network.ok()) {
    // After any training step in progress (it commits to this model's directory).
    std::lock_guard<std::mutex> update_lock((*network)->update_mutex());
    RETURN_IF_ERROR(repository_.Remove(name));
    {
      std::lock_guard<std::mutex> lock(mu_);
      networks_.erase(name);
    }
    (*network)->MarkDeleted();
    observer_->OnModelRemoved(name);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, FindModel(name));
  std::lock_guard<std::mutex> update_lock(model->update_mutex());
  RETURN_IF_ERROR(repository_.Remove(name));
  {
    std::lock_guard<std::mutex> lock(mu_);
    models_.erase(name);
  }
  model->MarkDeleted();
  observer_->OnModelRemoved(name);
  // Requests already admitted keep the model alive (shared_ptr) and finish; replicas go now or
  // are rebuilt and dropped with the last reference.
  for (auto& worker : workers_) worker->DropModel(*model);
  return absl::OkStatus();
}

absl::Status InferenceCore::CommitWeights(Model& model, std::vector<float> weights) {
  WeightsSnapshot next = MakeSnapshot(model.weights().version + 1, std::move(weights));
  RETURN_IF_ERROR(repository_.WriteWeights(model.name(), model.spec(), next.version, *next.weights, next.fnv1a64));
  model.SetWeights(std::move(next));
  return absl::OkStatus();
}

absl::Status InferenceCore::CheckNotDeleted(const Model& model) {
  if (!model.deleted()) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("model '", model.name(),
                                          "' was deleted while this call ran (a model created since under its "
                                          "name is another model)"));
}

absl::StatusOr<ModelInfo> InferenceCore::ReplaceWeights(const std::string& name, std::vector<float> weights,
                                                        uint64_t expected_version) {
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, FindModel(name));
  return ReplaceWeights(model, std::move(weights), expected_version);
}

absl::StatusOr<ModelInfo> InferenceCore::ReplaceWeights(const std::shared_ptr<Model>& model,
                                                        std::vector<float> weights, uint64_t expected_version) {
  const std::string& name = model->name();
  if (static_cast<int64_t>(weights.size()) != model->plan().weight_numel()) {
    return absl::InvalidArgumentError(absl::StrCat("weights of '", name, "': expected [", model->plan().weight_numel(),
                                                   "], got [", weights.size(), "]"));
  }
  if (config_.reject_non_finite) RETURN_IF_ERROR(CheckFiniteWeights(weights));
  std::lock_guard<std::mutex> update_lock(model->update_mutex());
  // By identity, not by name: a delete that won the race may have been followed by a create of
  // the same name, whose directory this model's spec and weights must not overwrite.
  RETURN_IF_ERROR(CheckNotDeleted(*model));
  uint64_t current = model->weights().version;
  if (expected_version != 0 && expected_version != current) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", name, "' is at version ", current, ", upload expected ", expected_version));
  }
  RETURN_IF_ERROR(CommitWeights(*model, std::move(weights)));
  return model->Info();
}

absl::StatusOr<WeightsSnapshot> InferenceCore::GetWeights(const std::string& name) const {
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, FindModel(name));
  return model->weights();
}

absl::StatusOr<std::vector<float>> InferenceCore::GetGradient(const std::string& name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, FindModel(name));
  // Never between a step's swap of the weights and its taking the applied gradient out.
  std::lock_guard<std::mutex> update_lock(model->update_mutex());
  // The sum returned (and its buffers, when it is formed in host memory).
  ASSIGN_OR_RETURN(MemoryBudget::Reservation memory,
                   budget_->Reserve(model->plan().weight_numel() * int64_t{sizeof(float)} +
                                        GradientSum::HostScratchBytes(workers_, *model, /*keep_parts=*/false),
                                    absl::StrCat("the gradient of model '", name, "'")));
  ASSIGN_OR_RETURN(std::unique_ptr<GradientSum> sum,
                   GradientSum::Gather(workers_, *model, /*keep_parts=*/false, observer_));
  return sum->ToHost();
}

absl::Status InferenceCore::ZeroGradient(const std::string& name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, FindModel(name));
  // Serialized with SgdStep, which reads the gradient before its save and takes it out after.
  std::lock_guard<std::mutex> update_lock(model->update_mutex());
  for (auto& worker : workers_) {
    if (absl::Status zeroed = worker->ZeroGradient(*model); !zeroed.ok()) return WithDevice(zeroed, worker->device());
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelInfo> InferenceCore::SgdStep(const std::string& name, double learning_rate, bool zero_gradient) {
  if (!std::isfinite(learning_rate)) {
    return absl::InvalidArgumentError(absl::StrCat("learning_rate: expected a finite number, got ", learning_rate));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Model> model, FindModel(name));
  // The summed gradient and the new weights (and the sum's buffers, when it is formed in host memory).
  ASSIGN_OR_RETURN(MemoryBudget::Reservation memory,
                   budget_->Reserve(2 * model->plan().weight_numel() * int64_t{sizeof(float)} +
                                        GradientSum::HostScratchBytes(workers_, *model, zero_gradient),
                                    absl::StrCat("an SGD step of model '", name, "'")));
  std::lock_guard<std::mutex> update_lock(model->update_mutex());
  RETURN_IF_ERROR(CheckNotDeleted(*model));
  // The parts are summed on one device (GradientSum) and kept there, not zeroed; the new weights
  // are saved and swapped in; only then is each part taken out of its buffer. A part lost with its
  // device fails the step before anything changes, a failed save changes nothing, and
  // accumulations that land meanwhile stay in the buffer for the next step.
  ASSIGN_OR_RETURN(std::unique_ptr<GradientSum> sum, GradientSum::Gather(workers_, *model, zero_gradient, observer_));
  ASSIGN_OR_RETURN(std::vector<float> gradient, sum->ToHost());
  std::vector<float> weights = *model->weights().weights;
  for (size_t i = 0; i < weights.size(); ++i) weights[i] -= static_cast<float>(learning_rate * gradient[i]);
  std::vector<float>().swap(gradient);
  RETURN_IF_ERROR(CommitWeights(*model, std::move(weights)));
  if (zero_gradient) {
    if (absl::Status taken = sum->TakeOut(*model); !taken.ok()) {
      const std::string why = absl::StrCat("the step was committed as version ", model->weights().version,
                                           ", but the gradient could not be zeroed on ", DeviceOf(taken), ": ",
                                           taken.message(), " (zero it before the next step)");
      return WithDevice(absl::Status(taken.code(), why), DeviceOf(taken));
    }
  }
  // Every replica takes the new version now (one host copy of the weights, read by each device),
  // so that the next launch on any device does not pay for it; a device that fails it here
  // retries at its next launch.
  for (auto& worker : workers_) worker->Warm(*model).IgnoreError();
  return model->Info();
}

absl::Status InferenceCore::ValidateShapes(const InferenceRequest& r, const Model& model) const {
  return CheckShapes(r, model, /*check_sizes=*/true);
}

absl::Status InferenceCore::CheckShapes(const InferenceRequest& r, const Model& model, bool check_sizes) const {
  const TensorProductPlan& plan = model.plan();
  int64_t batch = r.x1.rows();
  if (r.x1.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("x1: expected shape [batch, ", plan.dim_in1(), "], got ",
                                                   ShapeString(r.x1.shape)));
  }
  if (batch < 1 || batch > config_.max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("batch ", batch, ": expected 1 to ", config_.max_batch_size,
                                                   " samples (the server's max_batch_size)"));
  }
  RETURN_IF_ERROR(CheckMatrix(r.x1, "x1", batch, plan.dim_in1(), "dim_in1", check_sizes));
  RETURN_IF_ERROR(CheckMatrix(r.x2, "x2", batch, plan.dim_in2(), "dim_in2", check_sizes));
  if (r.op == Op::kBackward) {
    if (r.grad_out.present()) {
      RETURN_IF_ERROR(CheckMatrix(r.grad_out, "grad_out", batch, plan.dim_out(), "dim_out", check_sizes));
      if (r.want_out) {
        return absl::InvalidArgumentError("want_out: only with a named loss (with grad_out, out is not computed)");
      }
    } else if (!r.loss.has_value()) {
      return absl::InvalidArgumentError("backward: expected grad_out [batch, dim_out] or a loss (sum, sum_tanh)");
    }
    if (!r.want_grad_x1 && !r.want_grad_x2 && r.weight_grad == WeightGradMode::kNone && !r.want_out) {
      return absl::InvalidArgumentError(
          "backward requests nothing: set want_grad_x1, want_grad_x2, want_out or a weight_grad mode");
    }
  }
  return absl::OkStatus();
}

absl::Status InferenceCore::Validate(const InferenceRequest& r, const Model& model) const {
  RETURN_IF_ERROR(ValidateShapes(r, model));
  if (config_.reject_non_finite) {
    RETURN_IF_ERROR(CheckFinite(r.x1, "x1"));
    RETURN_IF_ERROR(CheckFinite(r.x2, "x2"));
    if (r.grad_out.present()) RETURN_IF_ERROR(CheckFinite(r.grad_out, "grad_out"));
  }
  return absl::OkStatus();
}

absl::Status InferenceCore::LeaseBuffers(InferenceRequest& request, unsigned parts, CallBuffers* buffers) const {
  ASSIGN_OR_RETURN(buffers->model_, FindModel(request.model));
  const Model& model = *buffers->model_;
  // Shapes before anything is allocated: an x1 of [4096, 0] must not buy batch x dim_out floats.
  RETURN_IF_ERROR(CheckShapes(request, model, /*check_sizes=*/(parts & kLeaseInputs) == 0));
  const TensorProductPlan& plan = model.plan();
  const int64_t batch = request.x1.rows();
  const StagingWants want = StagingWantsOf(request);
  buffers->layout_ = StagingLayout::For(batch, plan.dim_in1(), plan.dim_in2(), plan.dim_out(), want);
  if ((parts & kLeaseInputs) != 0) {
    buffers->in_ = host_pool_->Acquire(static_cast<size_t>(buffers->layout_.in_floats) * sizeof(float));
    buffers->has_grad_out_ = want.grad_out;
    const bool pinned = buffers->in_->pinned();
    auto borrow = [&](HostTensor& t, float* values) {
      t = HostTensor::Borrow(std::move(t.shape), values, static_cast<size_t>(t.numel()));
      t.pinned = pinned;
    };
    borrow(request.x1, buffers->x1());
    borrow(request.x2, buffers->x2());
    if (want.grad_out) borrow(request.grad_out, buffers->grad_out());
  }
  if ((parts & kLeaseOut) != 0 && request.op == Op::kForward) {
    buffers->out_floats_ = static_cast<size_t>(batch * plan.dim_out());
    buffers->out_ = host_pool_->Acquire(buffers->out_floats_ * sizeof(float));
    request.out_into = buffers->out();
    request.out_into_size = buffers->out_floats_;
    request.out_into_pinned = buffers->out_->pinned();
  }
  request.buffers = buffers;
  return absl::OkStatus();
}

void InferenceCore::Submit(InferenceRequest request, ResultCallback done, Dispatch dispatch) {
  // A request with leased buffers carries its model (looked up once, by LeaseBuffers).
  absl::StatusOr<std::shared_ptr<Model>> model =
      request.buffers != nullptr ? request.buffers->model() : FindModel(request.model);
  if (!model.ok()) return done(model.status());
  if ((*model)->deleted()) return done(NotFound(request.model));
  if (absl::Status status = Validate(request, **model); !status.ok()) return done(status);
  auto pending = std::make_unique<PendingRequest>();
  pending->batch = request.x1.rows();
  pending->bytes = static_cast<int64_t>(
      (request.x1.size() + request.x2.size() + request.grad_out.size()) * sizeof(float));
  pending->request = std::move(request);
  pending->model = *std::move(model);
  pending->done = std::move(done);
  // On the caller's thread only when that changes nothing else: greedy batching (a queued request
  // would launch at once too), no one queued ahead, and a worker with nothing to do.
  if (dispatch == Dispatch::kCallerMayRun && config_.max_queue_delay_us == 0 && !shut_down_.load() &&
      batcher_->queued() == 0) {
    for (Worker* worker : WorkersByDeviceLoad()) {
      if (!worker->TryClaim()) continue;
      pending->enqueue_time = absl::Now();
      std::vector<std::unique_ptr<PendingRequest>> batch;
      batch.push_back(std::move(pending));
      worker->Execute(std::move(batch));
      worker->Release();
      return;
    }
  }
  absl::Status status = batcher_->Enqueue(pending);
  observer_->OnQueueDepth(batcher_->queued());
  // On error the batcher left the request with us.
  if (!status.ok()) pending->done(status);
}

std::map<std::string, int> InferenceCore::DeviceLoads() const {
  std::map<std::string, int> loads;
  for (const auto& worker : workers_) loads[worker->device()] = worker->device_load();
  return loads;
}

std::vector<Worker*> InferenceCore::WorkersByDeviceLoad() const {
  std::vector<Worker*> workers;
  for (const auto& worker : workers_) workers.push_back(worker.get());
  if (workers.size() > 1) {
    std::stable_sort(workers.begin(), workers.end(),
                     [](const Worker* a, const Worker* b) { return a->device_load() < b->device_load(); });
  }
  return workers;
}

absl::StatusOr<InferenceResult> InferenceCore::Run(InferenceRequest request, Dispatch dispatch,
                                                   const CallerWatch* watch) {
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<absl::StatusOr<InferenceResult>> result;
  };
  auto waiter = std::make_shared<Waiter>();
  std::shared_ptr<std::atomic<bool>> cancelled;
  if (watch != nullptr) {
    request.deadline = watch->deadline;
    cancelled = std::make_shared<std::atomic<bool>>(false);
    request.cancelled = cancelled;
  }
  const bool changes_state = request.op == Op::kBackward && request.weight_grad == WeightGradMode::kAccumulate;
  Submit(
      std::move(request),
      [waiter](absl::StatusOr<InferenceResult> result) {
        std::lock_guard<std::mutex> lock(waiter->mu);
        waiter->result = std::move(result);
        waiter->cv.notify_one();
      },
      dispatch);
  std::unique_lock<std::mutex> lock(waiter->mu);
  std::optional<absl::Status> gave_up;
  while (!waiter->result.has_value()) {
    if (watch == nullptr || !watch->gave_up) {
      waiter->cv.wait(lock, [&] { return waiter->result.has_value(); });
      break;
    }
    // The callback wakes us; the timeout only bounds how late we notice that the caller gave up.
    waiter->cv.wait_for(lock, std::chrono::milliseconds(20));
    if (!waiter->result.has_value() && !gave_up.has_value() && watch->gave_up()) {
      // Queued: the batcher drops it at its next look. Running: it finishes. Either way the
      // callback comes soon, and the request may borrow the caller's memory until then.
      cancelled->store(true);
      gave_up = absl::Now() >= watch->deadline ? absl::DeadlineExceededError("deadline exceeded")
                                               : absl::CancelledError("cancelled by the client");
    }
  }
  // A launch that added to the gradient buffer is answered OK (that is what happened), never with
  // the status of a caller that gave up meanwhile (docs/SERVER.md, "Calls that fail on the client").
  if (gave_up.has_value() && !(changes_state && waiter->result->ok())) return *gave_up;
  return *std::move(waiter->result);
}

std::string CoreConfig::DebugString() const {
  return absl::StrFormat(
      "model_dir=%s skip_damaged_models=%s max_batch_size=%d max_queue_delay_us=%d max_queued_requests=%d "
      "max_queued_bytes=%d non_finite=%s max_inline_grad_bytes=%d max_pinned_host_bytes=%d max_paths=%d "
      "max_memory_bytes=%s max_graph_nodes=%d max_graph_edges=%d network_save_every=%d",
      model_dir.empty() ? "(memory)" : model_dir, skip_damaged_models ? "on" : "off", max_batch_size,
      max_queue_delay_us, max_queued_requests, max_queued_bytes, reject_non_finite ? "reject" : "pass",
      max_inline_grad_bytes, max_pinned_host_bytes, max_paths,
      max_memory_bytes > 0 ? absl::StrCat(max_memory_bytes)
                           : absl::StrCat(MemoryBudget::DefaultLimitBytes(), " (half of RAM)"),
      max_graph_nodes, max_graph_edges, network_save_every);
}

}  // namespace tpserve::server
