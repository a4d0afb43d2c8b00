// The CPU backend: the reference implementation and the server's backend on machines without a
// GPU. float32 and float64; GEMM-shaped work goes through BLAS (OpenBLAS), the generation of the
// T operand and the 3j contractions through blocked loops, spread over a pool of threads.
#pragma once

#include <memory>
#include <string>

#include "kernels/core/backend.h"

namespace tpserve {

struct CpuBackendOptions {
  int num_threads = 0;  // 0: one per hardware thread
  // The device name the server sees: "cpu", or "cpu:N" for several CPU backends that stand in for
  // distinct devices (tests of multi-device serving on a machine without GPUs).
  std::string name = "cpu";
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(CpuBackendOptions options = {});
  ~CpuBackend() override;

  std::string name() const override { return name_; }
  MemorySpace memory_space() const override { return MemorySpace::kHost; }
  bool SupportsDType(DType) const override { return true; }

  absl::StatusOr<std::unique_ptr<PreparedPlan>> Prepare(const TensorProductPlan& plan) override;
  absl::Status Forward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                       TensorView out, const ExecutionContext& ctx) override;
  absl::Status Backward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                        ConstTensorView grad_out, const GradientOutputs& grads,
                        const ExecutionContext& ctx) override;
  absl::Status LossGradient(const PreparedPlan& plan, Loss loss, ConstTensorView weight, ConstTensorView x1,
                            ConstTensorView x2, TensorView out, const GradientOutputs& grads,
                            const ExecutionContext& ctx) override;

  absl::StatusOr<std::unique_ptr<BackendBuffer>> Allocate(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<BackendBuffer>> AllocateHost(size_t bytes) override;
  absl::Status CopyFromHost(void* dst, const void* host_src, size_t bytes, const ExecutionContext& ctx) override;
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes, const ExecutionContext& ctx) override;
  absl::Status Synchronize(const ExecutionContext&) override { return absl::OkStatus(); }
  // Any backend whose memory is host memory (another CPU backend): a memcpy.
  absl::Status CopyFromPeer(void* dst, const Backend& from, const void* src, size_t bytes,
                            const ExecutionContext& from_ctx) override;
  absl::Status AddScaled(float* y, const float* x, int64_t n, float alpha, const ExecutionContext& ctx) override;
  absl::Status FillZero(void* dst, size_t bytes, const ExecutionContext& ctx) override;

 private:
  int num_threads_;
  std::string name_;
};

}  // namespace tpserve
