// Worker: its part of a model's gradient moved to and from the device that sums the parts
// (gradient_sum.h). Apart from worker.cc, whose launches fill these buffers.
#include "kernels/core/status_macros.h"
#include "server/core/worker.h"

namespace tpserve::server {

absl::StatusOr<std::optional<CopyPath>> Worker::CopyGradientTo(const Model& model, Backend& to, void* dst,
                                                               const ExecutionContext& to_ctx,
                                                               std::vector<char>& host_staging,
                                                               uint64_t& accumulations) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(GradientReadableLocked(model));
  auto it = replicas_.find(model.instance_id());
  if (it == replicas_.end() || !it->second.grad || lost_.load()) return std::nullopt;
  const size_t bytes = static_cast<size_t>(model.plan().weight_numel()) * sizeof(float);
  // On this worker's stream: after its launches (each synchronized before it let go of the lock).
  ASSIGN_OR_RETURN(CopyPath path, CopyAcrossBackends(to, dst, to_ctx, *backend_, it->second.grad->data(), ctx_,
                                                     bytes, host_staging));
  accumulations = it->second.grad_accumulations;
  return path;
}

absl::Status Worker::TakeOutGradient(const Model& model, uint64_t accumulations, Backend& from, const void* part,
                                     const ExecutionContext& from_ctx, std::vector<char>& host_staging) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(GradientReadableLocked(model));
  auto it = replicas_.find(model.instance_id());
  if (it == replicas_.end() || !it->second.grad || lost_.load()) return absl::OkStatus();
  Replica& replica = it->second;
  const int64_t n = model.plan().weight_numel();
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  if (replica.grad_accumulations == accumulations) {
    // Nothing added since the copy: what remains after taking it out is exactly zero.
    RETURN_IF_ERROR(backend_->FillZero(replica.grad->data(), bytes, ctx_));
    RETURN_IF_ERROR(backend_->Synchronize(ctx_));
    replica.grad_dirty = false;
    return absl::OkStatus();
  }
  // Launches added to it meanwhile: subtract the part that was applied, here on the device.
  ASSIGN_OR_RETURN(std::unique_ptr<BackendBuffer> applied, backend_->Allocate(bytes));
  RETURN_IF_ERROR(CopyAcrossBackends(*backend_, applied->data(), ctx_, from, part, from_ctx, bytes, host_staging)
                      .status());
  RETURN_IF_ERROR(backend_->AddScaled(static_cast<float*>(replica.grad->data()),
                                      static_cast<const float*>(applied->data()), n, -1.0f, ctx_));
  return backend_->Synchronize(ctx_);
}

}  // namespace tpserve::server
