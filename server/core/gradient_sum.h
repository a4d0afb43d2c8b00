// A model's weight gradient summed over the workers that accumulated it (each device keeps its
// own part, see worker.h), formed on one device: the first worker whose device still serves (the
// root). Each part is copied to the root device directly where the backends can (CUDA peer
// copies, CopyAcrossBackends), else through host memory, and added there; only the sum then goes
// to the host. An SGD step takes each part it applied back out of its worker's buffer (TakeOut).
//
// The caller holds the model's update_mutex (a sum and a step never interleave).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "server/core/model.h"
#include "server/core/observer.h"
#include "server/core/worker.h"

namespace tpserve::server {

class GradientSum {
 public:
  // Copies every serving worker's part to the root device and adds them up in worker order (the
  // same float32 additions as adding them on the host). `keep_parts`: keep each copy for TakeOut
  // (an SGD step). DATA_LOSS, naming the device, when a lost device held a part.
  static absl::StatusOr<std::unique_ptr<GradientSum>> Gather(const std::vector<std::unique_ptr<Worker>>& workers,
                                                             const Model& model, bool keep_parts,
                                                             CoreObserver* observer);
  ~GradientSum();

  // The sum in host memory.
  absl::StatusOr<std::vector<float>> ToHost();
  // Takes each part out of its worker's buffer (Worker::TakeOutGradient); needs keep_parts.
  absl::Status TakeOut(const Model& model);

  // Bytes of host memory a Gather on `workers` holds besides the returned sum (its buffers when the
  // root is a CPU backend), for the memory budget.
  static int64_t HostScratchBytes(const std::vector<std::unique_ptr<Worker>>& workers, const Model& model,
                                  bool keep_parts);

 private:
  GradientSum() = default;
  struct Part {
    Worker* worker;
    std::unique_ptr<BackendBuffer> copy;  // on the root device
    uint64_t accumulations;
  };
  Worker* root_ = nullptr;
  ExecutionContext ctx_;  // a stream of the root's backend, for the sum's own work
  int64_t numel_ = 0;
  std::unique_ptr<BackendBuffer> sum_;  // null: no worker held a part (the sum is zero)
  std::vector<Part> parts_;
  std::vector<char> host_staging_;
  CoreObserver* observer_ = nullptr;
};

}  // namespace tpserve::server
