// Launch sequences of the CUDA backend: the forward and backward passes of a prepared plan as
// kernel launches on one stream (memsets, work lists, the kernel each path takes). Internal to
// kernels/cuda; the kernels themselves are declared in tp_kernels.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/core/backend.h"
#include "kernels/cuda/prepared_plan.h"
#include "kernels/cuda/tp_per_sample.h"

namespace tpserve::cuda {

MmaPrecision ToMmaPrecision(Precision precision);

// out = TP(w, x1, x2) for `batch` samples (device pointers). out_ir_mul: write out transposed per
// irrep (out[z, off + k*mul + w]), as the weight gradient reads g.
absl::Status RunForward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2, float* out,
                        int64_t batch, Precision precision, cudaStream_t stream, bool out_ir_mul = false);

// Gradients from g = dL/dout ([batch, dim_out], device): g_mul_ir in e3nn's layout (needed for
// grad_x1/grad_x2), g_ir_mul transposed per irrep (needed for grad_weight).
absl::Status RunBackward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2,
                         const float* g_mul_ir, const float* g_ir_mul, const GradientOutputs& grads, int64_t batch,
                         Precision precision, cudaStream_t stream);

// Plans on the per-sample kernels (prepared.per_sample set; per_sample_launches.cc), fp32 for every
// Precision. `edges` (optional) turns them into the fused gather/scatter: x1 rows by edges->src,
// out / g rows by edges->dst; out (forward) and grad_x1 (backward) then have the row counts given
// there and are zeroed and summed into.
struct EdgeRows {
  const int* src = nullptr;
  int64_t num_src_rows = 0;
  const int* dst = nullptr;
  int64_t num_dst_rows = 0;
};
absl::Status RunPerSampleForward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2,
                                 float* out, int64_t batch, cudaStream_t stream, const EdgeRows* edges = nullptr);
// Gradients from g: grad_out ([batch, dim_out] or dst rows) for kGiven, the forward's out for
// kSumTanh, unused for kOne.
absl::Status RunPerSampleBackward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2,
                                  const float* g, PsGradMode g_mode, const GradientOutputs& grads, int64_t batch,
                                  cudaStream_t stream, const EdgeRows* edges = nullptr);

}  // namespace tpserve::cuda
