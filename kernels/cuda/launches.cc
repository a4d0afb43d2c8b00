#include "kernels/cuda/launches.h"

#include <memory>

#include "kernels/core/status_macros.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve::cuda {

MmaPrecision ToMmaPrecision(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return MmaPrecision::k3xTf32;
    case Precision::kTf32: return MmaPrecision::kTf32;
    case Precision::kBf16: return MmaPrecision::kBf16;
  }
  return MmaPrecision::k3xTf32;
}

namespace {

absl::Status LaunchGemmRole(const CudaPreparedPlan& prepared, int role_index, const float* a, int64_t a_row_stride,
                            const float* b, int64_t b_row_stride, const float* w, float* out,
                            int64_t out_row_stride, int64_t batch, Precision precision, cudaStream_t stream,
                            bool out_ir_mul = false) {
  const GemmRole& role = prepared.roles[role_index];
  // The forward role's factored paths (W 16-byte aligned) take their own kernel: every precision on
  // the wgmma kernel, 3xTF32 and TF32 on the mma.sync one; tf32 and bf16 only from
  // factored_tf32_bf16_min_batch samples (below, the GEMM kernel is faster).
  const bool factored = role_index == 0 && prepared.any_factored &&
                        (precision != Precision::kBf16 || prepared.factored_wgmma) &&
                        (precision == Precision::kFp32 || batch >= prepared.factored_tf32_bf16_min_batch) &&
                        (reinterpret_cast<uintptr_t>(w) & 15) == 0;
  ASSIGN_OR_RETURN(std::shared_ptr<const WorkList> work, prepared.GetWork(factored ? 5 : role_index, batch));
  TpGemmArgs args{};
  args.paths = role.paths_dev.get<TpGemmPath>();
  args.work = work->items.get<TpGemmWork>();
  args.num_work = work->count;
  args.nz = role.nz_dev.get<NzEntry>();
  args.roff = role.roff_dev.get<int>();
  args.a = a;
  args.a_row_stride = a_row_stride;
  args.b = b;
  args.b_row_stride = b_row_stride;
  args.w = w;
  args.out = out;
  args.out_row_stride = out_row_stride;
  args.batch = static_cast<int>(batch);
  args.out_ir_mul = out_ir_mul ? 1 : 0;
  CUDA_RETURN_IF_ERROR(LaunchTpGemm(ToMmaPrecision(precision), role.shape, args, stream));
  if (factored) {
    ASSIGN_OR_RETURN(std::shared_ptr<const WorkList> fwork, prepared.GetWork(4, batch));
    args.work = fwork->items.get<TpGemmWork>();
    args.num_work = fwork->count;
    if (prepared.factored_wgmma) {
      CUDA_RETURN_IF_ERROR(
          LaunchFactoredForwardWgmma(ToMmaPrecision(precision), fwork->max_t_q, args, stream));
    } else {
      CUDA_RETURN_IF_ERROR(LaunchFactoredForward(ToMmaPrecision(precision), prepared.factored_three_tf32,
                                                       prepared.factored_warp_cols, fwork->max_t_ldq, args, stream));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunForward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2, float* out,
                        int64_t batch, Precision precision, cudaStream_t stream, bool out_ir_mul) {
  const TensorProductPlan& plan = prepared.plan();
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, sizeof(float) * batch * plan.dim_out(), stream));
  return LaunchGemmRole(prepared, 0, x1, plan.dim_in1(), x2, plan.dim_in2(), w, out, plan.dim_out(), batch, precision,
                        stream, out_ir_mul);
}

absl::Status RunBackward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2,
                         const float* g_mul_ir, const float* g_ir_mul, const GradientOutputs& grads, int64_t batch,
                         Precision precision, cudaStream_t stream) {
  const TensorProductPlan& plan = prepared.plan();
  if (grads.grad_weight.present()) {
    float* dw = grads.grad_weight.typed<float>();
    const int64_t wgmma_min_batch = precision == Precision::kFp32   ? prepared.wg_wgmma_fp32_min_batch
                                    : precision == Precision::kTf32 ? prepared.wg_wgmma_tf32_min_batch
                                                                    : prepared.wg_wgmma_bf16_min_batch;
    const bool wgmma = prepared.wg_wgmma && batch >= wgmma_min_batch;
    ASSIGN_OR_RETURN(std::shared_ptr<const WorkList> work, prepared.GetWork(wgmma ? 6 : 3, batch));
    WeightGradStore store = grads.accumulate_grad_weight ? WeightGradStore::kAdd
                                                                : WeightGradStore::kAssign;
    if (work->split_k || batch == 0) {
      if (!grads.accumulate_grad_weight)
        CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dw, 0, sizeof(float) * plan.weight_numel(), stream));
      store = WeightGradStore::kAtomicAdd;
    }
    WeightGradArgs args{};
    args.paths = prepared.wg_paths_dev.get<WeightGradPath>();
    args.work = work->items.get<WeightGradWork>();
    args.num_work = work->count;
    args.nz = prepared.roles[0].nz_dev.get<NzEntry>();
    args.roff = prepared.roles[0].roff_dev.get<int>();
    args.x1 = x1;
    args.x1_row_stride = plan.dim_in1();
    args.x2 = x2;
    args.x2_row_stride = plan.dim_in2();
    args.g = g_ir_mul;
    args.g_row_stride = plan.dim_out();
    args.grad_w = dw;
    args.store = store;
    if (wgmma) {
      const MmaPrecision mma_precision = ToMmaPrecision(precision);
      CUDA_RETURN_IF_ERROR(LaunchWeightGradWgmma(mma_precision, work->wg_smem_bytes[static_cast<int>(mma_precision)],
                                                 args, stream));
    } else {
      CUDA_RETURN_IF_ERROR(LaunchWeightGrad(ToMmaPrecision(precision), prepared.wg_shape, args, stream));
    }
  }
  if (grads.grad_x1.present()) {
    float* dx1 = grads.grad_x1.typed<float>();
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dx1, 0, sizeof(float) * batch * plan.dim_in1(), stream));
    RETURN_IF_ERROR(LaunchGemmRole(prepared, 1, x2, plan.dim_in2(), g_mul_ir, plan.dim_out(), w, dx1, plan.dim_in1(), batch,
                                   precision, stream));
  }
  if (grads.grad_x2.present()) {
    float* dx2 = grads.grad_x2.typed<float>();
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dx2, 0, sizeof(float) * batch * plan.dim_in2(), stream));
    RETURN_IF_ERROR(LaunchGemmRole(prepared, 2, x1, plan.dim_in1(), g_mul_ir, plan.dim_out(), w, dx2, plan.dim_in2(), batch,
                                   precision, stream));
  }
  return absl::OkStatus();
}

}  // namespace tpserve::cuda
