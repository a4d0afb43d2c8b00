// The CUDA backend: tensor products on one NVIDIA GPU, float32 tensors in device memory.
//
// Every 'uvw' path with shared weights is a GEMM whose A operand is generated on the fly from
// x1, x2 and the path's sparse 3j block (see docs in kernels/cuda/tp_gemm.cu):
//   forward       out[z,w,k] = a sum_{u,v} W[u,v,w] T[z,k,u,v]        (M = batch(2l3+1), K = UV, N = W)
//   weight grad   dW[u,v,w]  = a sum_{z,k} T[z,k,u,v] g[z,w,k]        (M = UV, K = batch(2l3+1), N = W)
//   input grads   dx1, dx2 as the same forward-shaped GEMM with the roles of x1, x2 and g permuted.
// All paths of a plan go into one launch per GEMM kind (a list of tiles), never one launch per path.
// Arithmetic on tensor cores (mma.sync): Precision::kFp32 uses error-corrected 3xTF32,
// kTf32 plain TF32, kBf16 bf16 operands; accumulation is always fp32.
//
// Plans with per-sample weights or any 'uvu' path (the QM9 convolution's per-edge TP) run on the
// per-sample kernels instead (tp_per_sample.cu): fp32 on CUDA cores for every Precision (tf32 and
// bf16 requests get the fp32 result), one block per sample, memory-bound; 'uvw' paths with
// per-sample weights run there too (correct, not tuned). Shared-weight 'uvu' plans sum dW over the
// batch with atomics. LossGradient on them takes at most one [batch, dim_out] workspace (out, when
// the caller gives none; the backward derives g from it on the fly).
// Not supported (UNIMPLEMENTED): float64 tensors.
// Memory: Prepare uploads small tables (path descriptors, 3j nonzeros); Forward/Backward take
// no workspace; LossGradient takes [batch, dim_out] floats (two when `out` is not given)
// from the stream-ordered pool for the duration of the call.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "kernels/cuda/cuda_backend_options.h"

namespace tpserve {

class CudaBackend final : public Backend {
 public:
  // Number of usable CUDA devices; 0 when there is no driver or no GPU (never fails).
  static int DeviceCount();
  // A backend on device `device` (0-based); UNAVAILABLE without such a device, INVALID_ARGUMENT
  // for options out of range.
  static absl::StatusOr<std::unique_ptr<Backend>> Create(int device, const CudaBackendOptions& options = {});

  ~CudaBackend() override;

  std::string name() const override;
  MemorySpace memory_space() const override { return MemorySpace::kCudaDevice; }
  bool SupportsDType(DType dtype) const override { return dtype == DType::kFloat32; }

  absl::StatusOr<std::unique_ptr<PreparedPlan>> Prepare(const TensorProductPlan& plan) override;
  absl::Status Forward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                       TensorView out, const ExecutionContext& ctx) override;
  absl::Status Backward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                        ConstTensorView grad_out, const GradientOutputs& grads,
                        const ExecutionContext& ctx) override;
  absl::Status LossGradient(const PreparedPlan& plan, Loss loss, ConstTensorView weight, ConstTensorView x1,
                            ConstTensorView x2, TensorView out, const GradientOutputs& grads,
                            const ExecutionContext& ctx) override;

  // Fused gather / TP / scatter-sum on the per-sample kernels (plans with per-sample weights or
  // 'uvu' paths; others UNIMPLEMENTED). out and grad_x1 are summed into with atomics, so their
  // float sums are not bitwise deterministic. Edge indices are not checked here (see EdgeIndex).
  absl::Status EdgeForward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1, ConstTensorView x2,
                           const EdgeIndex& edges, TensorView out, const ExecutionContext& ctx) override;
  absl::Status EdgeBackward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                            ConstTensorView x2, const EdgeIndex& edges, ConstTensorView grad_out,
                            const GradientOutputs& grads, const ExecutionContext& ctx) override;

  absl::StatusOr<std::unique_ptr<BackendBuffer>> Allocate(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<BackendBuffer>> AllocateHost(size_t bytes) override;
  absl::Status CopyFromHost(void* dst, const void* host_src, size_t bytes, const ExecutionContext& ctx) override;
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes, const ExecutionContext& ctx) override;
  absl::Status Synchronize(const ExecutionContext& ctx) override;
  absl::Status CheckDevice() override;
  absl::StatusOr<void*> CreateStream() override;  // a non-blocking cudaStream_t on this device
  void DestroyStream(void* stream) override;

  int device() const { return device_; }
  const CudaBackendOptions& options() const { return options_; }

 private:
  CudaBackend(int device, int num_sms, bool wgmma_usable, const CudaBackendOptions& options)
      : device_(device), num_sms_(num_sms), wgmma_usable_(wgmma_usable), options_(options) {}

  int device_;
  int num_sms_;
  bool wgmma_usable_;  // the factored forward may run on wgmma (sm_90 device, sm_90a image)
  CudaBackendOptions options_;
};

}  // namespace tpserve
