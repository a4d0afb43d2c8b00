// What the core reports about its work, so that a metrics module (server/metrics) can record it
// without the core knowing about Prometheus. Calls come from worker threads; implementations
// must be thread-safe. The default implementation records nothing.
#pragma once

#include <cstdint>
#include <string>

namespace tpserve::server {

class CoreObserver {
 public:
  virtual ~CoreObserver() = default;
  // One launch on `device` that merged `requests` requests of `model` into `batch` samples.
  virtual void OnBatch(const std::string& model, const std::string& device, int64_t batch, int requests,
                       double compute_seconds) {}
  // Where one launch's time went on the host's side: copying inputs into staging (`gather`), the
  // device's part (copy in, compute, copy out, until synchronized) and splitting results (`scatter`).
  virtual void OnLaunchStages(const std::string& device, double gather_seconds, double device_seconds,
                              double scatter_seconds) {}
  // A request waited `queue_seconds` between admission and the start of its launch.
  virtual void OnQueueTime(const std::string& model, const std::string& device, double queue_seconds) {}
  // Bytes worker `worker` (0-based, unique in the core) holds in its device's memory (replicas,
  // gradient buffers, staging). Several workers may share a device.
  virtual void OnDeviceMemory(const std::string& device, int worker, int64_t bytes) {}
  // Requests waiting for a worker, over all models.
  virtual void OnQueueDepth(int64_t requests) {}
  // A model now exists (loaded at start or created) / no longer does (deleted): what is recorded
  // per model is labelled with its name only in between, and removed with it (bounded labels).
  virtual void OnModelAdded(const std::string& model) {}
  virtual void OnModelRemoved(const std::string& model) {}
  // `device` faulted (Backend::CheckDevice): its workers answer UNAVAILABLE from now on. Once per device.
  virtual void OnDeviceLost(const std::string& device, const std::string& why) {}
  // The memory budget (memory_budget.h) changed: `used_bytes` of `limit_bytes` are reserved.
  virtual void OnMemoryBudget(int64_t used_bytes, int64_t limit_bytes) {}
  // A model's plan was built (create, or load at start-up) in `seconds`.
  virtual void OnPlanBuilt(double seconds) {}
  // One device's part of a gradient was copied to `to` (the device that sums the parts) by `path`:
  // "peer" (directly, e.g. a CUDA peer copy) or "host" (staged through host memory).
  virtual void OnGradientCopy(const std::string& from, const std::string& to, const char* path) {}
};

}  // namespace tpserve::server
