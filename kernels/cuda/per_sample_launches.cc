// Launch sequences of plans on the per-sample kernels (tp_per_sample.cu): zeroing what is summed
// into, how dW is stored, and the gather/scatter rows. Declared in launches.h.
#include <limits>

#include "kernels/core/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/launches.h"

namespace tpserve::cuda {
namespace {

absl::Status CheckBatch(int64_t batch) {
  if (batch > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("CUDA backend: per-sample kernels take batches below 2^31");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunPerSampleForward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2,
                                 float* out, int64_t batch, cudaStream_t stream, const EdgeRows* edges) {
  RETURN_IF_ERROR(CheckBatch(batch));
  const TensorProductPlan& plan = prepared.plan();
  PsArgs args = PerSampleArgs(plan, *prepared.per_sample, batch);
  args.w = w;
  args.x1 = x1;
  args.x2 = x2;
  args.out = out;
  if (edges != nullptr) {
    args.src = edges->src;
    args.dst = edges->dst;
    args.num_src_rows = edges->num_src_rows;
    args.num_dst_rows = edges->num_dst_rows;
    // Rows written through dst are summed into: start from zero (also with no edges at all).
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, sizeof(float) * edges->num_dst_rows * plan.dim_out(), stream));
  }
  CUDA_RETURN_IF_ERROR(LaunchPerSampleForward(args, stream));
  return absl::OkStatus();
}

absl::Status RunPerSampleBackward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2,
                                  const float* g, PsGradMode g_mode, const GradientOutputs& grads, int64_t batch,
                                  cudaStream_t stream, const EdgeRows* edges) {
  RETURN_IF_ERROR(CheckBatch(batch));
  const TensorProductPlan& plan = prepared.plan();
  PsArgs args = PerSampleArgs(plan, *prepared.per_sample, batch);
  args.w = w;
  args.x1 = x1;
  args.x2 = x2;
  args.g = g;
  args.g_mode = g_mode;
  args.dw = grads.grad_weight.typed<float>();
  args.dx1 = grads.grad_x1.typed<float>();
  args.dx2 = grads.grad_x2.typed<float>();
  if (args.dw != nullptr) {
    if (args.w_stride == 0) {  // shared weights: every sample adds into one block
      if (!grads.accumulate_grad_weight)
        CUDA_RETURN_IF_ERROR(cudaMemsetAsync(args.dw, 0, sizeof(float) * plan.weight_numel(), stream));
      args.dw_store = PsStore::kAtomicAdd;
    } else {
      args.dw_store = grads.accumulate_grad_weight ? PsStore::kAdd : PsStore::kAssign;
    }
  }
  if (edges != nullptr) {
    args.src = edges->src;
    args.dst = edges->dst;
    args.num_src_rows = edges->num_src_rows;
    args.num_dst_rows = edges->num_dst_rows;
    if (args.dx1 != nullptr) {
      CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(args.dx1, 0, sizeof(float) * edges->num_src_rows * plan.dim_in1(), stream));
    }
  }
  CUDA_RETURN_IF_ERROR(LaunchPerSampleBackward(args, stream));
  return absl::OkStatus();
}

}  // namespace tpserve::cuda
