// A backend that runs the CPU backend and fails on demand like a GPU can: a launch error that
// leaves the device usable, or a device fault after which Backend::CheckDevice reports the device
// lost. Tests of how the server reacts to device faults, which a CPU-only machine cannot produce.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/core/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace tpserve::testing {

enum class InjectedFault : int { kNone = 0, kLaunchError = 1, kDeviceFault = 2 };

// What backends on one device share: the switch the test flips, and whether the device has faulted
// (after which every launch on it fails, whatever the switch says, as on a poisoned CUDA context).
struct FakeDevice {
  std::atomic<InjectedFault> fault{InjectedFault::kNone};
  std::atomic<bool> faulted{false};
  // Every launch takes at least this long (a slow device: work in flight that a test can act on).
  std::atomic<int> launch_delay_ms{0};
  // Copies from another host-memory backend are direct (CopyFromPeer, as CUDA peers); false: they
  // stage through the host (CopyAcrossBackends' fallback, as devices without a peer path).
  std::atomic<bool> direct_copies{false};
  // Every CopyFromHost: (source, bytes), for tests that count host copies.
  std::mutex copies_mu;
  std::vector<std::pair<const void*, size_t>> host_copies;
  // Host-to-device copies made (what a staging layout saves).
  std::atomic<int> copies_from_host{0};
};

class FaultInjectingBackend final : public Backend {
 public:
  // `device` is shared with the test, which flips its switch while the server owns the backend.
  // `name` is the device the server sees (workers with the same name share a device).
  explicit FaultInjectingBackend(std::shared_ptr<FakeDevice> device, std::string name = "cpu")
      : inner_(CpuBackendOptions{1}), device_(std::move(device)), name_(std::move(name)) {}

  std::string name() const override { return name_; }
  MemorySpace memory_space() const override { return inner_.memory_space(); }
  bool SupportsDType(DType dtype) const override { return inner_.SupportsDType(dtype); }
  absl::StatusOr<std::unique_ptr<PreparedPlan>> Prepare(const TensorProductPlan& plan) override {
    return inner_.Prepare(plan);
  }
  absl::Status Forward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                       TensorView out, const ExecutionContext& ctx) override {
    if (absl::Status injected = Injected(); !injected.ok()) return injected;
    return inner_.Forward(plan, weight, x1, x2, out, ctx);
  }
  absl::Status Backward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                        ConstTensorView grad_out, const GradientOutputs& grads,
                        const ExecutionContext& ctx) override {
    if (absl::Status injected = Injected(); !injected.ok()) return injected;
    return inner_.Backward(plan, weight, x1, x2, grad_out, grads, ctx);
  }
  absl::Status LossGradient(const PreparedPlan& plan, Loss loss, ConstTensorView weight, ConstTensorView x1,
                            ConstTensorView x2, TensorView out, const GradientOutputs& grads,
                            const ExecutionContext& ctx) override {
    if (absl::Status injected = Injected(); !injected.ok()) return injected;
    return inner_.LossGradient(plan, loss, weight, x1, x2, out, grads, ctx);
  }
  absl::StatusOr<std::unique_ptr<BackendBuffer>> Allocate(size_t bytes) override { return inner_.Allocate(bytes); }
  absl::StatusOr<std::unique_ptr<BackendBuffer>> AllocateHost(size_t bytes) override {
    return inner_.AllocateHost(bytes);
  }
  absl::Status CopyFromHost(void* dst, const void* host_src, size_t bytes, const ExecutionContext& ctx) override {
    {
      std::lock_guard<std::mutex> lock(device_->copies_mu);
      device_->host_copies.emplace_back(host_src, bytes);
    }
    device_->copies_from_host.fetch_add(1);
    return inner_.CopyFromHost(dst, host_src, bytes, ctx);
  }
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes, const ExecutionContext& ctx) override {
    return inner_.CopyToHost(host_dst, src, bytes, ctx);
  }
  absl::Status Synchronize(const ExecutionContext& ctx) override { return inner_.Synchronize(ctx); }
  absl::Status CopyFromPeer(void* dst, const Backend& from, const void* src, size_t bytes,
                            const ExecutionContext& from_ctx) override {
    if (!device_->direct_copies.load()) return Backend::CopyFromPeer(dst, from, src, bytes, from_ctx);
    return inner_.CopyFromPeer(dst, from, src, bytes, from_ctx);
  }
  absl::Status AddScaled(float* y, const float* x, int64_t n, float alpha, const ExecutionContext& ctx) override {
    return inner_.AddScaled(y, x, n, alpha, ctx);
  }
  absl::Status FillZero(void* dst, size_t bytes, const ExecutionContext& ctx) override {
    return inner_.FillZero(dst, bytes, ctx);
  }
  // A device fault stays: the context is poisoned even if the test clears the switch.
  absl::Status CheckDevice() override {
    if (device_->faulted.load()) return absl::InternalError("injected device fault (illegal address)");
    return absl::OkStatus();
  }

 private:
  absl::Status Injected() {
    if (int delay = device_->launch_delay_ms.load(); delay > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    }
    if (device_->faulted.load()) return absl::InternalError("injected device fault (illegal address)");
    switch (device_->fault.load()) {
      case InjectedFault::kNone: return absl::OkStatus();
      case InjectedFault::kLaunchError: return absl::InternalError("injected launch error");
      case InjectedFault::kDeviceFault:
        device_->faulted.store(true);
        return absl::InternalError("injected device fault (illegal address)");
    }
    return absl::OkStatus();
  }
  CpuBackend inner_;
  std::shared_ptr<FakeDevice> device_;
  std::string name_;
};

}  // namespace tpserve::testing
