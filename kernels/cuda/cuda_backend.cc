// The CUDA backend's Backend methods: validation, the device scope, workspaces, copies. The prepared
// plan and its work lists are in prepared_plan.{h,cc}, the launch sequences in launches.{h,cc}, the
// kernels in tp_gemm.cu, tp_forward_factored.cu, tp_forward_wgmma.cu, tp_weight_grad.cu, loss_grad.cu.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/launches.h"
#include "kernels/cuda/prepared_plan.h"
#include "kernels/cuda/tp_kernels.h"

namespace tpserve {
namespace {

using cuda::CudaBuffer;
using cuda::CudaPreparedPlan;
using cuda::DeviceScope;
using cuda::PinnedHostBuffer;
using cuda::RunBackward;
using cuda::RunForward;

cudaStream_t StreamOf(const ExecutionContext& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

absl::Status CheckFloat32(DType dtype) {
  if (dtype != DType::kFloat32) {
    return absl::UnimplementedError(
        absl::StrCat("CUDA backend: tensors must be float32, got ", DTypeName(dtype), " (use the cpu backend)"));
  }
  return absl::OkStatus();
}

const CudaPreparedPlan* AsCuda(const PreparedPlan& plan) { return dynamic_cast<const CudaPreparedPlan*>(&plan); }

// LossGradient of a plan on the per-sample kernels: the backward derives g from out itself
// (sum tanh) or takes g = 1 (sum), so the only workspace is out when the caller gives none.
absl::Status PerSampleLossGradient(const CudaPreparedPlan& prepared, Loss loss, const ConstTensorView& weight,
                                   const ConstTensorView& x1, const ConstTensorView& x2, const TensorView& out,
                                   const GradientOutputs& grads, cudaStream_t stream) {
  const int64_t batch = x1.shape[0];
  const bool need_out = out.present() || loss == Loss::kSumTanh;
  float* out_ptr = out.typed<float>();
  float* workspace = nullptr;
  if (need_out && out_ptr == nullptr) {
    CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&workspace),
                                         sizeof(float) * std::max<int64_t>(batch * prepared.plan().dim_out(), 1),
                                         stream));
    out_ptr = workspace;
  }
  absl::Status status = [&]() -> absl::Status {
    if (need_out) {
      RETURN_IF_ERROR(cuda::RunPerSampleForward(prepared, weight.typed<float>(), x1.typed<float>(),
                                                x2.typed<float>(), out_ptr, batch, stream));
    }
    const auto mode = loss == Loss::kSumTanh ? cuda::PsGradMode::kSumTanh : cuda::PsGradMode::kOne;
    return cuda::RunPerSampleBackward(prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(),
                                      loss == Loss::kSumTanh ? out_ptr : nullptr, mode, grads, batch, stream);
  }();
  const cudaError_t free_error = workspace != nullptr ? cudaFreeAsync(workspace, stream) : cudaSuccess;
  RETURN_IF_ERROR(status);
  CUDA_RETURN_IF_ERROR(free_error);
  return absl::OkStatus();
}

}  // namespace

int CudaBackend::DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return count;
}

absl::StatusOr<std::unique_ptr<Backend>> CudaBackend::Create(int device, const CudaBackendOptions& options) {
  RETURN_IF_ERROR(ValidateCudaBackendOptions(options));
  const int count = DeviceCount();
  if (device < 0 || device >= count) {
    return absl::UnavailableError(
        absl::StrCat("cuda:", device, ": no such CUDA device (this machine has ", count, ")"));
  }
  cudaDeviceProp prop{};
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  if (prop.major < 8) {
    return absl::UnavailableError(absl::StrCat("cuda:", device, " (", prop.name, ", sm_", prop.major, prop.minor,
                                               "): the CUDA backend needs compute capability 8.0 or newer"));
  }
  DeviceScope scope(device);
  CUDA_RETURN_IF_ERROR(cuda::ConfigureTpGemmKernels());
  CUDA_RETURN_IF_ERROR(cuda::ConfigureFactoredForwardKernels());
  CUDA_RETURN_IF_ERROR(cuda::ConfigureFactoredWgmmaKernels());
  CUDA_RETURN_IF_ERROR(cuda::ConfigureWeightGradKernels());
  // Keep the stream-ordered pool's memory between calls (LossGradient's workspaces).
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
    uint64_t threshold = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
  }
  return std::unique_ptr<Backend>(new CudaBackend(device, prop.multiProcessorCount, cuda::FactoredWgmmaUsable(device), options));
}

absl::StatusOr<void*> CudaBackend::CreateStream() {
  DeviceScope scope(device_);
  cudaStream_t stream = nullptr;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return static_cast<void*>(stream);
}

void CudaBackend::DestroyStream(void* stream) {
  if (stream == nullptr) return;
  DeviceScope scope(device_);
  cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

CudaBackend::~CudaBackend() = default;

std::string CudaBackend::name() const { return absl::StrCat("cuda:", device_); }

absl::StatusOr<std::unique_ptr<PreparedPlan>> CudaBackend::Prepare(const TensorProductPlan& plan) {
  // Per-sample weights and 'uvu' paths take the per-sample kernels (any l); the GEMM kernels hold
  // one output row block of 2l+1 rows per tile.
  if (!cuda::UsesPerSampleKernels(plan)) {
    for (const PathPlan& path : plan.paths()) {
      if (2 * std::max({path.l1, path.l2, path.l3}) + 1 > cuda::kTileRows) {
        return absl::UnimplementedError("CUDA backend: l above 63 is not supported");
      }
    }
  }
  DeviceScope scope(device_);
  ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaPreparedPlan> prepared,
                   cuda::PrepareCudaPlan(plan, num_sms_, wgmma_usable_, options_));
  return std::unique_ptr<PreparedPlan>(std::move(prepared));
}

absl::Status CudaBackend::Forward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                  ConstTensorView x2, TensorView out, const ExecutionContext& ctx) {
  const CudaPreparedPlan* prepared = AsCuda(plan);
  if (prepared == nullptr) return absl::InvalidArgumentError("CUDA backend: plan was prepared by another backend");
  RETURN_IF_ERROR(ValidateForward(plan.plan(), weight, x1, x2, out));
  RETURN_IF_ERROR(CheckFloat32(x1.dtype));
  DeviceScope scope(device_);
  if (prepared->per_sample) {
    return cuda::RunPerSampleForward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(),
                                     out.typed<float>(), x1.shape[0], StreamOf(ctx));
  }
  return RunForward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), out.typed<float>(),
                    x1.shape[0], ctx.precision, StreamOf(ctx));
}

absl::Status CudaBackend::Backward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                   ConstTensorView x2, ConstTensorView grad_out, const GradientOutputs& grads,
                                   const ExecutionContext& ctx) {
  const CudaPreparedPlan* prepared = AsCuda(plan);
  if (prepared == nullptr) return absl::InvalidArgumentError("CUDA backend: plan was prepared by another backend");
  RETURN_IF_ERROR(ValidateGradients(plan.plan(), weight, x1, x2, grads));
  RETURN_IF_ERROR(CheckFloat32(x1.dtype));
  const int64_t batch = x1.shape[0];
  RETURN_IF_ERROR(CheckTensor(grad_out, "grad_out", DType::kFloat32, {batch, plan.plan().dim_out()}));
  DeviceScope scope(device_);
  cudaStream_t stream = StreamOf(ctx);
  const float* g = grad_out.typed<float>();
  if (prepared->per_sample) {
    return cuda::RunPerSampleBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), g,
                                      cuda::PsGradMode::kGiven, grads, batch, stream);
  }
  if (!grads.grad_weight.present()) {
    return RunBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), g, nullptr, grads,
                       batch, ctx.precision, stream);
  }
  // The weight gradient reads grad_out transposed per irrep: a [batch, dim_out] workspace.
  float* g_ir_mul = nullptr;
  const int64_t out_numel = batch * plan.plan().dim_out();
  CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&g_ir_mul),
                                       sizeof(float) * std::max<int64_t>(out_numel, 1), stream));
  absl::Status status = [&]() -> absl::Status {
    CUDA_RETURN_IF_ERROR(cuda::LaunchOutputGrad(cuda::OutputGradMode::kCopy, g, prepared->ir_mul_col.get<int>(),
                                                static_cast<int>(plan.plan().dim_out()), batch, nullptr, g_ir_mul,
                                                stream));
    return RunBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), g, g_ir_mul, grads,
                       batch, ctx.precision, stream);
  }();
  const cudaError_t free_error = cudaFreeAsync(g_ir_mul, stream);
  RETURN_IF_ERROR(status);
  CUDA_RETURN_IF_ERROR(free_error);
  return absl::OkStatus();
}

absl::Status CudaBackend::LossGradient(const PreparedPlan& plan, Loss loss, ConstTensorView weight,
                                       ConstTensorView x1, ConstTensorView x2, TensorView out,
                                       const GradientOutputs& grads, const ExecutionContext& ctx) {
  const CudaPreparedPlan* prepared = AsCuda(plan);
  if (prepared == nullptr) return absl::InvalidArgumentError("CUDA backend: plan was prepared by another backend");
  RETURN_IF_ERROR(ValidateGradients(plan.plan(), weight, x1, x2, grads));
  RETURN_IF_ERROR(CheckFloat32(x1.dtype));
  const int64_t batch = x1.shape[0];
  const int64_t out_numel = batch * plan.plan().dim_out();
  if (out.present()) RETURN_IF_ERROR(CheckTensor(out, "out", DType::kFloat32, {batch, plan.plan().dim_out()}));
  DeviceScope scope(device_);
  cudaStream_t stream = StreamOf(ctx);
  if (prepared->per_sample) return PerSampleLossGradient(*prepared, loss, weight, x1, x2, out, grads, stream);
  // Workspaces from the stream-ordered pool, [batch, dim_out] floats each. The seed call (grad_weight
  // only, no out) takes one: the forward writes out transposed per irrep and g replaces it in place.
  // Otherwise: out (unless given), g in e3nn's layout (input gradients), g transposed (grad_weight).
  const bool want_dx = grads.grad_x1.present() || grads.grad_x2.present();
  const bool want_dw = grads.grad_weight.present();
  const bool in_place = want_dw && !want_dx && !out.present() && loss == Loss::kSumTanh;
  const int64_t slot = std::max<int64_t>(out_numel, 1);
  const int slots = in_place ? 1 : (out.present() ? 0 : 1) + (want_dx ? 1 : 0) + (want_dw ? 1 : 0);
  float* workspace = nullptr;
  if (slots > 0)
    CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&workspace), sizeof(float) * slot * slots, stream));
  absl::Status status = [&]() -> absl::Status {
    const auto mode = loss == Loss::kSumTanh ? cuda::OutputGradMode::kSumTanh : cuda::OutputGradMode::kSum;
    const int dim_out = static_cast<int>(plan.plan().dim_out());
    if (in_place) {
      RETURN_IF_ERROR(RunForward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), workspace,
                                 batch, ctx.precision, stream, /*out_ir_mul=*/true));
      CUDA_RETURN_IF_ERROR(
          cuda::LaunchOutputGrad(mode, workspace, nullptr, dim_out, batch, nullptr, workspace, stream));
      return RunBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), nullptr, workspace,
                         grads, batch, ctx.precision, stream);
    }
    float* next = workspace;
    float* out_ptr = out.present() ? out.typed<float>() : std::exchange(next, next + slot);
    float* g_mul_ir = want_dx ? std::exchange(next, next + slot) : nullptr;
    float* g_ir_mul = want_dw ? std::exchange(next, next + slot) : nullptr;
    if (loss == Loss::kSumTanh || out.present()) {
      RETURN_IF_ERROR(RunForward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), out_ptr,
                                 batch, ctx.precision, stream));
    }
    if (!want_dx && !want_dw) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cuda::LaunchOutputGrad(mode, out_ptr, prepared->ir_mul_col.get<int>(), dim_out, batch,
                                                g_mul_ir, g_ir_mul, stream));
    return RunBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), g_mul_ir, g_ir_mul,
                       grads, batch, ctx.precision, stream);
  }();
  const cudaError_t free_error = workspace != nullptr ? cudaFreeAsync(workspace, stream) : cudaSuccess;
  RETURN_IF_ERROR(status);
  CUDA_RETURN_IF_ERROR(free_error);
  return absl::OkStatus();
}

namespace {

absl::StatusOr<const CudaPreparedPlan*> PerSamplePlanForEdges(const PreparedPlan& plan) {
  const CudaPreparedPlan* prepared = AsCuda(plan);
  if (prepared == nullptr) return absl::InvalidArgumentError("CUDA backend: plan was prepared by another backend");
  if (!prepared->per_sample) {
    return absl::UnimplementedError(
        "CUDA backend: edge convolutions need a plan with per-sample weights or 'uvu' paths");
  }
  return prepared;
}

cuda::EdgeRows RowsOf(const EdgeIndex& edges, int64_t src_rows, int64_t dst_rows) {
  cuda::EdgeRows rows;
  rows.src = edges.src;
  rows.num_src_rows = src_rows;
  rows.dst = edges.dst;
  rows.num_dst_rows = dst_rows;
  return rows;
}

}  // namespace

absl::Status CudaBackend::EdgeForward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                      ConstTensorView x2, const EdgeIndex& edges, TensorView out,
                                      const ExecutionContext& ctx) {
  ASSIGN_OR_RETURN(const CudaPreparedPlan* prepared, PerSamplePlanForEdges(plan));
  RETURN_IF_ERROR(ValidateEdgeForward(plan.plan(), weight, x1, x2, edges, out));
  RETURN_IF_ERROR(CheckFloat32(x1.dtype));
  DeviceScope scope(device_);
  const cuda::EdgeRows rows = RowsOf(edges, x1.shape[0], out.shape[0]);
  return cuda::RunPerSampleForward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(),
                                   out.typed<float>(), edges.num_edges, StreamOf(ctx), &rows);
}

absl::Status CudaBackend::EdgeBackward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                       ConstTensorView x2, const EdgeIndex& edges, ConstTensorView grad_out,
                                       const GradientOutputs& grads, const ExecutionContext& ctx) {
  ASSIGN_OR_RETURN(const CudaPreparedPlan* prepared, PerSamplePlanForEdges(plan));
  RETURN_IF_ERROR(ValidateEdgeBackward(plan.plan(), weight, x1, x2, edges, grad_out, grads));
  RETURN_IF_ERROR(CheckFloat32(x1.dtype));
  DeviceScope scope(device_);
  const cuda::EdgeRows rows = RowsOf(edges, x1.shape[0], grad_out.shape[0]);
  return cuda::RunPerSampleBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(),
                                    grad_out.typed<float>(), cuda::PsGradMode::kGiven, grads, edges.num_edges,
                                    StreamOf(ctx), &rows);
}

absl::StatusOr<std::unique_ptr<BackendBuffer>> CudaBackend::Allocate(size_t bytes) {
  DeviceScope scope(device_);
  void* ptr = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)));
  return std::unique_ptr<BackendBuffer>(new CudaBuffer(device_, ptr, bytes));
}

absl::StatusOr<std::unique_ptr<BackendBuffer>> CudaBackend::AllocateHost(size_t bytes) {
  DeviceScope scope(device_);
  void* ptr = nullptr;
  // Portable: any device's copies may use it (a worker's buffers stay with its device anyway).
  CUDA_RETURN_IF_ERROR(cudaHostAlloc(&ptr, std::max<size_t>(bytes, 1), cudaHostAllocPortable));
  return std::unique_ptr<BackendBuffer>(new PinnedHostBuffer(ptr, bytes));
}

absl::Status CudaBackend::CopyFromHost(void* dst, const void* host_src, size_t bytes, const ExecutionContext& ctx) {
  DeviceScope scope(device_);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, StreamOf(ctx)));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(void* host_dst, const void* src, size_t bytes, const ExecutionContext& ctx) {
  DeviceScope scope(device_);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, StreamOf(ctx)));
  return absl::OkStatus();
}

absl::Status CudaBackend::CheckDevice() {
  DeviceScope scope(device_);
  // An error of one launch is reported once and cleared; a fault of the context is reported by every
  // call after it. Two synchronizations with the error cleared between them tell them apart.
  cudaDeviceSynchronize();
  cudaGetLastError();
  const cudaError_t e = cudaDeviceSynchronize();
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
}

absl::Status CudaBackend::Synchronize(const ExecutionContext& ctx) {
  DeviceScope scope(device_);
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(StreamOf(ctx)));
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tpserve
