#include "server/injected_fault.h"

#include <atomic>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tpserve::server {
namespace {

// What the wrapped backends of one device share: launches so far, and whether it has faulted.
struct FaultCountdown {
  int64_t launches_before_fault = 0;
  std::atomic<int64_t> launches{0};
  std::atomic<bool> faulted{false};
};

class InjectedFaultBackend final : public Backend {
 public:
  InjectedFaultBackend(std::unique_ptr<Backend> inner, std::shared_ptr<FaultCountdown> countdown)
      : inner_(std::move(inner)), countdown_(std::move(countdown)) {}

  std::string name() const override { return inner_->name(); }
  MemorySpace memory_space() const override { return inner_->memory_space(); }
  bool SupportsDType(DType dtype) const override { return inner_->SupportsDType(dtype); }
  absl::StatusOr<std::unique_ptr<PreparedPlan>> Prepare(const TensorProductPlan& plan) override {
    return inner_->Prepare(plan);
  }
  absl::Status Forward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                       TensorView out, const ExecutionContext& ctx) override {
    if (absl::Status fault = Launch(); !fault.ok()) return fault;
    return inner_->Forward(plan, weight, x1, x2, out, ctx);
  }
  absl::Status Backward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                        ConstTensorView grad_out, const GradientOutputs& grads,
                        const ExecutionContext& ctx) override {
    if (absl::Status fault = Launch(); !fault.ok()) return fault;
    return inner_->Backward(plan, weight, x1, x2, grad_out, grads, ctx);
  }
  absl::Status LossGradient(const PreparedPlan& plan, Loss loss, ConstTensorView weight, ConstTensorView x1,
                            ConstTensorView x2, TensorView out, const GradientOutputs& grads,
                            const ExecutionContext& ctx) override {
    if (absl::Status fault = Launch(); !fault.ok()) return fault;
    return inner_->LossGradient(plan, loss, weight, x1, x2, out, grads, ctx);
  }
  absl::StatusOr<std::unique_ptr<BackendBuffer>> Allocate(size_t bytes) override { return inner_->Allocate(bytes); }
  absl::StatusOr<std::unique_ptr<BackendBuffer>> AllocateHost(size_t bytes) override {
    return inner_->AllocateHost(bytes);
  }
  absl::Status CopyFromHost(void* dst, const void* host_src, size_t bytes, const ExecutionContext& ctx) override {
    return inner_->CopyFromHost(dst, host_src, bytes, ctx);
  }
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes, const ExecutionContext& ctx) override {
    return inner_->CopyToHost(host_dst, src, bytes, ctx);
  }
  absl::Status Synchronize(const ExecutionContext& ctx) override { return inner_->Synchronize(ctx); }
  absl::Status CheckDevice() override {
    if (countdown_->faulted.load()) return Fault();
    return inner_->CheckDevice();
  }
  absl::StatusOr<void*> CreateStream() override { return inner_->CreateStream(); }
  void DestroyStream(void* stream) override { inner_->DestroyStream(stream); }
  absl::Status CopyFromPeer(void* dst, const Backend& from, const void* src, size_t bytes,
                            const ExecutionContext& from_ctx) override {
    const auto* wrapped = dynamic_cast<const InjectedFaultBackend*>(&from);
    return inner_->CopyFromPeer(dst, wrapped != nullptr ? *wrapped->inner_ : from, src, bytes, from_ctx);
  }
  absl::Status AddScaled(float* y, const float* x, int64_t n, float alpha, const ExecutionContext& ctx) override {
    return inner_->AddScaled(y, x, n, alpha, ctx);
  }
  absl::Status FillZero(void* dst, size_t bytes, const ExecutionContext& ctx) override {
    return inner_->FillZero(dst, bytes, ctx);
  }

 private:
  absl::Status Fault() const {
    return absl::InternalError(
        absl::StrCat("injected device fault on ", inner_->name(), " (", kInjectDeviceFaultEnv, ", a test aid)"));
  }
  absl::Status Launch() {
    if (countdown_->faulted.load()) return Fault();
    if (countdown_->launches.fetch_add(1) >= countdown_->launches_before_fault) {
      countdown_->faulted.store(true);
      return Fault();
    }
    return absl::OkStatus();
  }

  std::unique_ptr<Backend> inner_;
  std::shared_ptr<FaultCountdown> countdown_;
};

}  // namespace

absl::StatusOr<std::string> InjectDeviceFault(const char* spec, std::vector<std::unique_ptr<Backend>>& backends) {
  if (spec == nullptr || *spec == '\0') return std::string();
  const std::string text(spec);
  const size_t at = text.rfind('@');
  int64_t launches = 0;
  if (at == std::string::npos || at == 0 || !absl::SimpleAtoi(text.substr(at + 1), &launches) || launches < 0) {
    return absl::InvalidArgumentError(absl::StrCat(kInjectDeviceFaultEnv, "='", text,
                                                   "': expected <device>@<launches before the fault>, e.g. cuda:1@500"));
  }
  const std::string device = text.substr(0, at);
  auto countdown = std::make_shared<FaultCountdown>();
  countdown->launches_before_fault = launches;
  int wrapped = 0;
  for (auto& backend : backends) {
    if (backend->name() != device) continue;
    backend = std::make_unique<InjectedFaultBackend>(std::move(backend), countdown);
    ++wrapped;
  }
  if (wrapped == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kInjectDeviceFaultEnv, "='", text, "': no backend is device '", device, "'"));
  }
  return absl::StrCat("test aid ", kInjectDeviceFaultEnv, " is on: ", device, " faults after ", launches,
                      " launches (", wrapped, " worker(s))");
}

}  // namespace tpserve::server
