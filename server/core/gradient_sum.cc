#include "server/core/gradient_sum.h"

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tpserve::server {
namespace {

Worker* RootOf(const std::vector<std::unique_ptr<Worker>>& workers) {
  for (const auto& worker : workers) {
    if (!worker->lost()) return worker.get();
  }
  return nullptr;
}

}  // namespace

int64_t GradientSum::HostScratchBytes(const std::vector<std::unique_ptr<Worker>>& workers, const Model& model,
                                      bool keep_parts) {
  Worker* root = RootOf(workers);
  if (root == nullptr || root->backend().memory_space() != MemorySpace::kHost) return 0;
  const int64_t bytes = model.plan().weight_numel() * static_cast<int64_t>(sizeof(float));
  // The sum, and one part at a time or every part.
  return bytes * (1 + (keep_parts ? static_cast<int64_t>(workers.size()) : 1));
}

absl::StatusOr<std::unique_ptr<GradientSum>> GradientSum::Gather(const std::vector<std::unique_ptr<Worker>>& workers,
                                                                 const Model& model, bool keep_parts,
                                                                 CoreObserver* observer) {
  std::unique_ptr<GradientSum> sum(new GradientSum());
  sum->observer_ = observer;
  sum->numel_ = model.plan().weight_numel();
  // A lost part fails the sum before anything is copied.
  for (const auto& worker : workers) {
    if (absl::Status readable = worker->GradientReadable(model); !readable.ok()) {
      return WithDevice(readable, worker->device());
    }
  }
  sum->root_ = RootOf(workers);
  if (sum->root_ == nullptr) return sum;  // every device lost, none held a part: zero
  Backend& root = sum->root_->backend();
  absl::StatusOr<void*> stream = root.CreateStream();
  if (stream.ok()) sum->ctx_.stream = *stream;
  const size_t bytes = static_cast<size_t>(sum->numel_) * sizeof(float);
  std::unique_ptr<BackendBuffer> scratch;
  for (const auto& worker : workers) {
    if (worker->lost()) continue;
    if (scratch == nullptr) {
      ASSIGN_OR_RETURN(scratch, root.Allocate(bytes));
    }
    uint64_t accumulations = 0;
    absl::StatusOr<std::optional<CopyPath>> copied =
        worker->CopyGradientTo(model, root, scratch->data(), sum->ctx_, sum->host_staging_, accumulations);
    if (!copied.ok()) return WithDevice(copied.status(), worker->device());
    if (!copied->has_value()) continue;  // nothing accumulated there
    if (observer != nullptr) observer->OnGradientCopy(worker->device(), sum->root_->device(), CopyPathName(**copied));
    if (sum->sum_ == nullptr) {
      ASSIGN_OR_RETURN(sum->sum_, root.Allocate(bytes));
      RETURN_IF_ERROR(root.FillZero(sum->sum_->data(), bytes, sum->ctx_));
    }
    RETURN_IF_ERROR(root.AddScaled(static_cast<float*>(sum->sum_->data()), static_cast<const float*>(scratch->data()),
                                   sum->numel_, 1.0f, sum->ctx_));
    // The addition has read the copy before the next part overwrites it (or before it is kept).
    RETURN_IF_ERROR(root.Synchronize(sum->ctx_));
    if (keep_parts) sum->parts_.push_back(Part{worker.get(), std::move(scratch), accumulations});
  }
  RETURN_IF_ERROR(root.Synchronize(sum->ctx_));
  return sum;
}

GradientSum::~GradientSum() {
  // Buffers go before the stream they were used on.
  parts_.clear();
  sum_.reset();
  if (root_ != nullptr && ctx_.stream != nullptr) root_->backend().DestroyStream(ctx_.stream);
}

absl::StatusOr<std::vector<float>> GradientSum::ToHost() {
  std::vector<float> host(static_cast<size_t>(numel_), 0.0f);
  if (sum_ == nullptr) return host;
  Backend& root = root_->backend();
  RETURN_IF_ERROR(root.CopyToHost(host.data(), sum_->data(), host.size() * sizeof(float), ctx_));
  RETURN_IF_ERROR(root.Synchronize(ctx_));
  return host;
}

absl::Status GradientSum::TakeOut(const Model& model) {
  for (Part& part : parts_) {
    absl::Status taken = part.worker->TakeOutGradient(model, part.accumulations, root_->backend(), part.copy->data(),
                                                      ctx_, host_staging_);
    if (!taken.ok()) return WithDevice(taken, part.worker->device());
  }
  return absl::OkStatus();
}

}  // namespace tpserve::server
