// The inference core: models (in memory and in the repository), the batcher and the workers.
// Everything the server does goes through this class, which knows nothing of gRPC; the transport
// (server/grpc) converts wire messages to these calls and back.
//
// Threading: every method is thread-safe. Submit() validates, admits the request into the batcher
// (or fails fast) and returns; the callback runs on a worker thread. A caller that is going to
// wait anyway (a unary RPC) may offer its own thread: when the server batches greedily, nothing is
// queued and a worker is idle, the launch runs right there, which saves two thread hand-offs and
// keeps the request's bytes in the cache of the core that received them.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "server/core/batcher.h"
#include "server/core/call_buffers.h"
#include "server/core/config.h"
#include "server/core/host_pool.h"
#include "server/core/memory_budget.h"
#include "server/core/model.h"
#include "server/core/model_repository.h"
#include "server/core/network_model.h"
#include "server/core/observer.h"
#include "server/core/request.h"
#include "server/core/worker.h"

namespace tpserve::server {

// Assembles a flat weight vector from chunks sent in order (offset = elements already received).
class WeightsAssembler {
 public:
  explicit WeightsAssembler(int64_t weight_numel);
  absl::Status Append(int64_t offset, std::vector<float> values);
  // FAILED_PRECONDITION unless exactly weight_numel elements arrived.
  absl::StatusOr<std::vector<float>> Finish() &&;
  int64_t received() const { return static_cast<int64_t>(weights_.size()); }

 private:
  int64_t weight_numel_;
  std::vector<float> weights_;
};

class InferenceCore {
 public:
  // One worker per backend (one per GPU, or a single CPU backend). Loads every model of the
  // repository named by config.model_dir. `observer` may be null; it must outlive the core.
  // `network_backend` (a host-memory backend: the CPU backend) runs the network models; without
  // one they cannot be created, and a stored one counts as damaged. `network_runners` computes
  // their Predict and TrainStep (network_runner.h); null: the CPU network on `network_backend`.
  static absl::StatusOr<std::unique_ptr<InferenceCore>> Create(
      CoreConfig config, std::vector<std::unique_ptr<Backend>> backends, CoreObserver* observer,
      std::unique_ptr<Backend> network_backend = nullptr,
      std::unique_ptr<NetworkRunnerFactory> network_runners = nullptr);
  ~InferenceCore();

  const CoreConfig& config() const { return config_; }
  std::vector<std::string> devices() const;
  // Launches running or claimed now on each device, over its workers (least-loaded dispatch).
  std::map<std::string, int> DeviceLoads() const;

  // ---- models --------------------------------------------------------------------------
  // The plan of `spec` within the server's limits (config().max_paths, checked before any work);
  // CANCELLED when `should_stop` (may be null) turns true during the build.
  absl::StatusOr<TensorProductPlan> BuildPlan(const ModelSpec& spec,
                                              std::function<bool()> should_stop = nullptr) const;
  // `weights` absent: seeded N(0, 1) initialization. Durable before it returns. The first form
  // builds the plan (BuildPlan); the second takes one already built, so that a caller that needed
  // the plan first (to size an upload) does not build it twice.
  absl::StatusOr<ModelInfo> CreateModel(const std::string& name, const ModelSpec& spec,
                                        std::optional<std::vector<float>> weights, uint64_t seed);
  absl::StatusOr<ModelInfo> CreateModel(const std::string& name, TensorProductPlan plan,
                                        std::optional<std::vector<float>> weights, uint64_t seed);
  // Models of both kinds (a network model's ModelInfo has kind "qm9").
  absl::StatusOr<ModelInfo> GetModel(const std::string& name) const;
  // A tensor-product model: NOT_FOUND, or FAILED_PRECONDITION naming the kind when `name` is a
  // network model (so Forward, Backward, weight and gradient calls refuse one).
  absl::StatusOr<std::shared_ptr<Model>> FindModel(const std::string& name) const;
  std::vector<ModelInfo> ListModels() const;
  absl::Status DeleteModel(const std::string& name);
  // Commits new weights as the next version (durable before it returns). expected_version 0:
  // unconditional. The second form commits to `model` (found when the call began, e.g. an upload's
  // first message): NOT_FOUND once that model is deleted, even if one of its name exists again.
  absl::StatusOr<ModelInfo> ReplaceWeights(const std::string& name, std::vector<float> weights,
                                           uint64_t expected_version);
  absl::StatusOr<ModelInfo> ReplaceWeights(const std::shared_ptr<Model>& model, std::vector<float> weights,
                                           uint64_t expected_version);
  absl::StatusOr<WeightsSnapshot> GetWeights(const std::string& name) const;

  // ---- gradient buffer -----------------------------------------------------------------
  // Each device accumulates into its own part; GetGradient and SgdStep sum the parts on one device
  // (peer copies where the backends have them, else through host memory: gradient_sum.h).
  absl::StatusOr<std::vector<float>> GetGradient(const std::string& name);
  absl::Status ZeroGradient(const std::string& name);
  // weights -= learning_rate * gradient, committed as the next version. All or nothing: the new
  // weights are saved, then swapped in, then (zero_gradient) the gradient that went into them is
  // taken out of the buffer; a failed save leaves weights, version and gradient as they were.
  absl::StatusOr<ModelInfo> SgdStep(const std::string& name, double learning_rate, bool zero_gradient);

  // ---- network models (kind "qm9", network_model.h) ------------------------------------
  // Runs on the calling thread through the model's runner: the CPU network on the network
  // backend, or a device's (network_runner.h); not through the batcher and workers, since a
  // network call is a whole forward/backward pass.
  // Seeded initialization (e3nn's N(0, 1)) and zero velocity, durable before it returns.
  absl::StatusOr<ModelInfo> CreateNetworkModel(const std::string& name, const NetworkSpec& spec, uint64_t seed);
  // NOT_FOUND, or FAILED_PRECONDITION naming the kind when `name` is a tensor-product model.
  absl::StatusOr<std::shared_ptr<NetworkModel>> FindNetworkModel(const std::string& name) const;
  // INVALID_ARGUMENT for a graph batch past max_graph_nodes / max_graph_edges (naming the limit)
  // or failing nn::ValidateGraphBatch (naming what is wrong).
  absl::Status ValidateGraphs(const nn::GraphBatch& graphs, int num_elements = 5) const;
  // Per-graph outputs at the model's current version.
  absl::StatusOr<NetworkPrediction> Predict(const std::string& name, const nn::GraphBatch& graphs);
  // One SGD-with-momentum step on the L1 loss, all or nothing: steps on one model run one at a
  // time; the new parameters and velocity are saved, then swapped in (Predict sees the old or the
  // new version, never a mix). expected_version 0: unconditional.
  // With config().network_save_every N > 1, only a step that makes N steps since the version on
  // disk is saved first; the others are swapped in at once and saved later (SaveNetworkModels).
  absl::StatusOr<NetworkTrainResult> TrainStep(const std::string& name, const nn::GraphBatch& graphs,
                                               const std::vector<double>& targets, double learning_rate,
                                               double momentum, uint64_t expected_version);
  // Writes every network model whose served version is not yet in the repository (steps kept in
  // memory by network_save_every > 1), one line each on stdout; a failure is a line on stderr and
  // the first one is returned after trying the rest. Shutdown calls it.
  absl::Status SaveNetworkModels();

  // ---- compute -------------------------------------------------------------------------
  // Checks a request against its model (NOT_FOUND, INVALID_ARGUMENT naming expected shapes).
  absl::Status Validate(const InferenceRequest& request, const Model& model) const;
  // The shape checks of Validate alone (cheap): for a caller that allocates for the result first.
  absl::Status ValidateShapes(const InferenceRequest& request, const Model& model) const;
  enum class Dispatch { kQueue, kCallerMayRun };
  // `done` is called exactly once: inline with an admission error, later with the result (or
  // inline with it, when kCallerMayRun ran the launch on the calling thread).
  void Submit(InferenceRequest request, ResultCallback done, Dispatch dispatch = Dispatch::kQueue);
  // What a caller that waits for its result (Run) tells the core about itself.
  struct CallerWatch {
    absl::Time deadline = absl::InfiniteFuture();  // set as the request's deadline
    // Asked while waiting (every 20 ms); true once the caller gave up (a cancelled RPC).
    std::function<bool()> gave_up;
  };
  // Submit and wait. With `watch`: once the caller gives up, the request is marked cancelled (the
  // batcher drops it if still queued) and Run returns CANCELLED (DEADLINE_EXCEEDED past the
  // deadline) when the core is done with it (the request may borrow the caller's memory until
  // then); except that a gradient accumulation whose launch ran returns its result (it was applied).
  absl::StatusOr<InferenceResult> Run(InferenceRequest request, Dispatch dispatch = Dispatch::kQueue,
                                      const CallerWatch* watch = nullptr);

  // For a transport that reads a call's tensor bytes itself: looks up `request`'s model, checks
  // its shapes (x1, x2 and grad_out with shapes set and no values yet) and leases page-locked
  // buffers in the workers' staging layout into `buffers` (call_buffers.h). Then `request` borrows
  // them: with kLeaseInputs its x1, x2 (and grad_out) point into them, for the transport to write
  // their values; with kLeaseOut (a Forward) its out is written into them. One lookup of the
  // model: Submit uses the one the buffers carry. NOT_FOUND / INVALID_ARGUMENT as Validate.
  enum LeaseParts : unsigned { kLeaseInputs = 1, kLeaseOut = 2 };
  absl::Status LeaseBuffers(InferenceRequest& request, unsigned parts, CallBuffers* buffers) const;

  // Page-locked host memory (host_pool.h), which LeaseBuffers hands out.
  HostPool& host_pool() const { return *host_pool_; }

  // The server's memory budget: the core reserves models' weights, gradient sums and SGD steps'
  // copies; the transport reserves uploads, downloads and unsent results (memory_budget.h).
  MemoryBudget& memory_budget() const { return *budget_; }
  // Gives memory kept for reuse back to the system (free page-locked leases, malloc's free pages):
  // for an idle server, so that a past burst does not stay resident. Returns the pool's bytes freed.
  size_t ReleaseIdleMemory();

  // Stops admission, finishes everything admitted, joins the workers, then saves the network
  // models' unsaved steps (SaveNetworkModels; a step that ends after that saves itself). Idempotent.
  void Shutdown();

  // Device faults (Backend::CheckDevice after a failed launch): `listener` is called once per lost
  // device, on the thread that found it, and at once for devices lost before it was added; it runs
  // under the core's lock, so it must be quick and must not call the three below (AllDevicesLost is
  // fine: the device's workers are marked lost before the listeners run). The id removes it
  // (before the listener's captures go away); after RemoveDeviceLostListener returns it is not called.
  using DeviceLostListener = std::function<void(const std::string& device, const std::string& why)>;
  int AddDeviceLostListener(DeviceLostListener listener);
  void RemoveDeviceLostListener(int id);
  std::vector<std::string> LostDevices() const;
  // True when every worker's device is lost (nothing can serve a launch any more).
  bool AllDevicesLost() const;

 private:
  InferenceCore(CoreConfig config, CoreObserver* observer);
  absl::Status CommitWeights(Model& model, std::vector<float> weights);
  // NOT_FOUND when `model` was deleted (call with its update_mutex held: DeleteModel marks it so).
  static absl::Status CheckNotDeleted(const Model& model);
  // The workers, those on the device with the fewest launches running first (a caller's thread
  // that may run a launch claims an idle worker of the least-loaded device).
  std::vector<Worker*> WorkersByDeviceLoad() const;
  // Budget bytes a model holds while it exists: its weights, plus weights and gradient buffer of
  // each worker that keeps them in host memory (CPU backends).
  int64_t ModelMemoryBytes(const TensorProductPlan& plan) const;
  // ValidateShapes; with `check_sizes` off, the values held are not counted (LeaseBuffers).
  absl::Status CheckShapes(const InferenceRequest& request, const Model& model, bool check_sizes) const;

  const CoreConfig config_;
  CoreObserver* observer_;
  CoreObserver null_observer_;
  ModelRepository repository_;
  std::unique_ptr<Batcher> batcher_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::shared_ptr<HostPool> host_pool_;
  std::unique_ptr<MemoryBudget> budget_;
  int host_workers_ = 0;  // workers whose replicas live in host memory (see ModelMemoryBytes)

  absl::Status AddStoredNetwork(StoredNetwork stored);
  // FAILED_PRECONDITION naming the kind that `name` has instead (call with mu_ held).
  absl::Status WrongKind(const std::string& name, const char* wanted) const;
  // Budget bytes a network model holds while it exists: parameters and velocity.
  static int64_t NetworkMemoryBytes(int64_t num_parameters) { return num_parameters * 2 * int64_t{sizeof(double)}; }

  mutable std::mutex mu_;  // models_, networks_ (one namespace: a name is one model of one kind)
  std::map<std::string, std::shared_ptr<Model>> models_;
  std::map<std::string, std::shared_ptr<NetworkModel>> networks_;
  std::unique_ptr<Backend> network_backend_;
  std::unique_ptr<NetworkRunnerFactory> network_runners_;  // set when network_backend_ is
  std::mutex create_mu_;  // serializes create/delete with their disk writes
  std::atomic<bool> shut_down_{false};

  void NotifyDeviceLost(const std::string& device, const std::string& why);
  mutable std::mutex lost_mu_;  // the three below
  std::vector<std::pair<std::string, std::string>> lost_devices_;  // (device, why)
  std::map<int, DeviceLostListener> lost_listeners_;
  int next_lost_listener_ = 0;
};

}  // namespace tpserve::server
