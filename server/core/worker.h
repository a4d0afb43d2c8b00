// A worker owns one backend (one GPU with its own stream, or the CPU) and runs the batches it
// takes from the shared Batcher. It holds, per model, a replica of the weights in its device's
// memory (refreshed when the model's version changes) and its share of the model's gradient
// buffer (the model's gradient is the sum over workers).
//
// Gradient operations (read, zero) run under the worker's lock, serialized with its launches.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "server/core/batcher.h"
#include "server/core/observer.h"

namespace tpserve::server {

class Worker {
 public:
  // `index` names this worker to the observer (workers may share a device).
  Worker(int index, std::unique_ptr<Backend> backend, Batcher* batcher, CoreObserver* observer);
  ~Worker();

  const std::string& device() const { return device_; }
  Backend& backend() const { return *backend_; }
  // Called once (on the launching thread) when this worker finds its device lost after a failed
  // launch (Backend::CheckDevice). Set before Start(); the core tells the observer.
  void SetDeviceLostHandler(std::function<void(const std::string& device, const std::string& why)> handler) {
    on_lost_ = std::move(handler);
  }
  // After a device fault every launch answers UNAVAILABLE without touching the device.
  bool lost() const { return lost_.load(); }
  // Marks the device lost (this or another worker on it found the fault); idempotent. With
  // `retire`, also takes the worker out of the queue's rotation for good: its thread stops taking
  // batches, TryClaim() fails, and a batch it took just before goes back to the queue, so the
  // workers that remain get all the work. The core retires a lost device's workers only while
  // another device still serves; the last device's workers keep answering UNAVAILABLE.
  void MarkLost(const std::string& why, bool retire);
  // OK, or DATA_LOSS when this worker's device is lost holding a part of `model`'s gradient buffer
  // that was accumulated and not zeroed since (the model's gradient can no longer be summed).
  absl::Status GradientReadable(const Model& model);
  void Start();
  // Returns once the batcher is shut down and drained and the last launch has finished.
  void Join();

  // Zeroes this worker's part of `model`'s gradient buffer; on a lost device the part is forgotten.
  absl::Status ZeroGradient(const Model& model);
  // Prepares the plan and uploads the current weights now, so that the first request does not pay.
  absl::Status Warm(const Model& model);
  // Frees the replica of a deleted model.
  void DropModel(const Model& model);

  // Runs one batch now on the calling thread (the worker thread calls this; tests may too).
  void Execute(std::vector<std::unique_ptr<PendingRequest>> batch);
  // Claims this worker for one Execute() on the calling thread, if it is idle (neither running a
  // launch nor claimed); Release() after. Launches are serialized by the worker's lock either way,
  // so a race with the worker's own thread costs a wait, never correctness.
  bool TryClaim() {
    int idle = 0;
    if (!busy_.compare_exchange_strong(idle, 1)) return false;
    device_load_->fetch_add(1);
    return true;
  }
  void Release() {
    busy_.fetch_sub(1);
    device_load_->fetch_sub(1);
    batcher_->Wake();
  }

  // ---- several devices (least-loaded dispatch: batcher.h, Next) ----
  // Launches running or claimed on this worker's device, over its workers: the core gives the
  // workers of one device the same counter before Start().
  // Also registers the worker with the batcher (least-loaded dispatch looks at every registered worker).
  void ShareDeviceLoad(std::shared_ptr<std::atomic<int>> load) {
    device_load_ = std::move(load);
    batcher_->RegisterWorker(&busy_, device_load_.get());
  }
  int device_load() const { return device_load_->load(); }

  // ---- the model's gradient summed over devices (gradient_sum.h; worker_gradient.cc) ----
  // Copies this worker's part of `model`'s gradient buffer into `dst` (memory of `to`, ordered on
  // `to_ctx`), directly where the backends can (CopyAcrossBackends). nullopt when the worker holds
  // no part (nothing accumulated on it, or its device is lost with nothing accumulated: DATA_LOSS
  // when it held some, as GradientReadable). `accumulations` gets the part's count of launches
  // that added to it, for TakeOutGradient.
  absl::StatusOr<std::optional<CopyPath>> CopyGradientTo(const Model& model, Backend& to, void* dst,
                                                         const ExecutionContext& to_ctx,
                                                         std::vector<char>& host_staging, uint64_t& accumulations);
  // Takes `part` (what CopyGradientTo copied when the count was `accumulations`; memory of `from`)
  // out of this worker's part, in one step under the lock: zeroed when nothing was added since,
  // else `part` is subtracted (an SGD step zeroes the gradient it applied, never a later one).
  absl::Status TakeOutGradient(const Model& model, uint64_t accumulations, Backend& from, const void* part,
                               const ExecutionContext& from_ctx, std::vector<char>& host_staging);

 private:
  struct Replica {
    std::unique_ptr<PreparedPlan> prepared;
    std::unique_ptr<BackendBuffer> weights;
    uint64_t version = 0;
    bool loaded = false;
    std::unique_ptr<BackendBuffer> grad;  // allocated on first accumulation
    bool grad_dirty = false;              // accumulated into since it was last zeroed
    uint64_t grad_accumulations = 0;      // launches that added to grad (TakeOutGradient)
  };
  // A growable buffer, in device memory (Allocate) or in host memory the device copies at full
  // speed (AllocateHost).
  struct Staging {
    std::unique_ptr<BackendBuffer> buffer;
    bool host = false;
    float* floats() const { return buffer ? static_cast<float*>(buffer->data()) : nullptr; }
  };

  void Loop();
  absl::StatusOr<Replica*> ReplicaFor(const Model& model, const WeightsSnapshot& weights);
  absl::Status EnsureStaging(Staging& staging, size_t bytes);
  // One launch of `batch` on `replica`, in steps: plan where its tensors go, stage the inputs on
  // the device, compute, copy the outputs back, scatter them into each request's result.
  using Batch = std::vector<std::unique_ptr<PendingRequest>>;
  struct Launch;
  // Answers and removes the requests whose caller gave up or whose deadline passed.
  void DropAbandoned(Batch& batch);
  absl::Status RunBatch(Batch& batch, Replica& replica, std::vector<InferenceResult>& results);
  Launch PlanLaunch(const Batch& batch) const;
  absl::Status StageInputs(const Batch& batch, const Launch& launch, double* gather_seconds);
  absl::Status Compute(const Launch& launch, Replica& replica);
  absl::Status CopyOutputsBack(const Batch& batch, const Launch& launch, std::vector<InferenceResult>& results);
  void ScatterOutputs(const Batch& batch, const Launch& launch, std::vector<InferenceResult>& results) const;
  void ReportMemory();
  absl::Status GradientReadableLocked(const Model& model);  // with mu_ held
  // Retired by MarkLost (the only writer of Batcher::kRetired into busy_, under mu_).
  bool retired() const { return busy_.load() >= Batcher::kRetired; }

  const int index_;
  std::unique_ptr<Backend> backend_;
  const std::string device_;
  Batcher* batcher_;
  CoreObserver* observer_;
  ExecutionContext ctx_;
  void* stream_ = nullptr;  // owned CUDA stream (nullptr on CPU)

  std::atomic<int> busy_{0};  // launches running or claimed
  std::shared_ptr<std::atomic<int>> device_load_ = std::make_shared<std::atomic<int>>(0);  // over the device's workers
  std::mutex mu_;  // replicas_ and staging, held for each launch
  std::map<uint64_t, Replica> replicas_;  // by Model::instance_id()
  int failures_logged_ = 0;               // failed launches written to stderr (the first few)
  std::atomic<bool> lost_{false};
  std::string lost_why_;  // set once, under mu_, before lost_
  std::function<void(const std::string&, const std::string&)> on_lost_;
  // A launch's inputs (x1 | x2 | grad_out) and outputs (out | grad_x1 | grad_x2), each set in one
  // buffer on the device and one pinned on the host with the same layout, so that each direction
  // is a single copy; reused across launches. The returned weight gradient has its own.
  Staging device_in_, device_out_, host_in_{nullptr, true}, host_out_{nullptr, true}, grad_weight_;
  std::thread thread_;
};

}  // namespace tpserve::server
