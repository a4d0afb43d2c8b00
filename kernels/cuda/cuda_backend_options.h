// Kernel choices of the CUDA backend that a deployment or a benchmark may want to change: which
// forward and weight-gradient kernels run the 'uvw' paths and how the forward's work is split. Set once when the backend is made
// (server flags, tp-bench flags), printed at start-up; the defaults are the measured best on H100.
// Plain C++ (no CUDA headers), so builds without CUDA can still parse and print the options.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace tpserve {

struct CudaBackendOptions {
  enum class ForwardKernel {
    kAuto,            // factored kernel on wgmma where usable (sm_90a), mma.sync otherwise; GEMM kernel
                      // for the paths the factored kernel does not take, and for tf32 and bf16 below
                      // kFactoredForwardTf32Bf16MinBatch samples
    kFactoredMma,     // the factored kernel on mma.sync even where wgmma is usable
    kFactored3xTf32,  // fp32 as three TF32 MMAs in the mma.sync factored kernel (for comparisons)
    kGemm,            // every forward path in the generated-operand GEMM (tp_gemm.cu)
  };
  ForwardKernel forward_kernel = ForwardKernel::kAuto;
  // Output columns per warp of the mma.sync factored kernel: 32 (8 warps) or 16 (16 warps).
  int factored_warp_cols = 32;
  // Blocks per SM of the factored forward's work split; 0: chosen per batch size and SM count.
  int factored_blocks_per_sm = 0;
  enum class WeightGradKernel {
    kAuto,   // wgmma where usable for fp32 from kWeightGradWgmmaFp32MinBatch samples, for tf32 from
             // kWeightGradWgmmaTf32MinBatch and for bf16 from kWeightGradWgmmaBf16MinBatch (measured
             // faster there on H100), mma.sync otherwise
    kMma,    // the generated-operand GEMM on mma.sync (tp_weight_grad.cu), any device
    kWgmma,  // the factored weight gradient on wgmma (tp_weight_grad_wgmma.cu) where usable (sm_90a,
             // every path with T, R in {1, 3, 5} and S <= 5), mma.sync otherwise
  };
  WeightGradKernel weight_grad_kernel = WeightGradKernel::kAuto;
};

// forward_kernel=auto: tf32 and bf16 run every path in the GEMM kernel below this many samples, where
// it was as fast or faster on H100 (forward tf32 / bf16 at batch 1: 0.076 / 0.073 ms against 0.095 /
// 0.094 on the wgmma factored kernel, at 16: 0.111 / 0.110 against 0.113 / 0.111, at 24: 0.133 / 0.136
// against 0.125 / 0.121; 2026-12-06 17:01 UTC). fp32 takes the factored kernel at every batch (0.59-0.67x).
inline constexpr int64_t kFactoredForwardTf32Bf16MinBatch = 24;

// weight_grad_kernel=auto: the smallest batches at which fp32 and tf32 take the wgmma weight gradient
// (below them, mma.sync was as fast or faster on H100: docs/BENCHMARKS.md). fp32: the wgmma kernel
// costs the same for 1 to 16 samples (one chunk of 16), ~0.15 ms fixed; the seed task at batch 1 took
// 0.331 ms with it against 0.289 ms on mma.sync, at 8 0.333 against 0.324, at 64 0.621 against 0.790.
inline constexpr int64_t kWeightGradWgmmaFp32MinBatch = 16;
// tf32 and bf16 (two blocks per SM since 2f2e8a2): wgmma from 8 samples (seed task at batch 8, tf32
// 0.248 against 0.254 ms, bf16 0.243 against 0.253; at batch 1 mma.sync 0.239 against 0.242 / 0.2373
// against 0.2376; from 64 up wgmma is 0.85-0.94x: H100, 2026-12-06 16:55 UTC).
inline constexpr int64_t kWeightGradWgmmaTf32MinBatch = 8;
inline constexpr int64_t kWeightGradWgmmaBf16MinBatch = 8;

inline const char* WeightGradKernelName(CudaBackendOptions::WeightGradKernel kernel) {
  switch (kernel) {
    case CudaBackendOptions::WeightGradKernel::kAuto: return "auto";
    case CudaBackendOptions::WeightGradKernel::kMma: return "mma";
    case CudaBackendOptions::WeightGradKernel::kWgmma: return "wgmma";
  }
  return "?";
}

inline absl::StatusOr<CudaBackendOptions::WeightGradKernel> ParseWeightGradKernel(absl::string_view name) {
  for (auto kernel : {CudaBackendOptions::WeightGradKernel::kAuto, CudaBackendOptions::WeightGradKernel::kMma,
                      CudaBackendOptions::WeightGradKernel::kWgmma}) {
    if (name == WeightGradKernelName(kernel)) return kernel;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("weight grad kernel '", name.substr(0, 64), "': expected auto, mma or wgmma"));
}

inline const char* ForwardKernelName(CudaBackendOptions::ForwardKernel kernel) {
  switch (kernel) {
    case CudaBackendOptions::ForwardKernel::kAuto: return "auto";
    case CudaBackendOptions::ForwardKernel::kFactoredMma: return "factored-mma";
    case CudaBackendOptions::ForwardKernel::kFactored3xTf32: return "factored-3xtf32";
    case CudaBackendOptions::ForwardKernel::kGemm: return "gemm";
  }
  return "?";
}

inline absl::StatusOr<CudaBackendOptions::ForwardKernel> ParseForwardKernel(absl::string_view name) {
  for (auto kernel : {CudaBackendOptions::ForwardKernel::kAuto, CudaBackendOptions::ForwardKernel::kFactoredMma,
                      CudaBackendOptions::ForwardKernel::kFactored3xTf32, CudaBackendOptions::ForwardKernel::kGemm}) {
    if (name == ForwardKernelName(kernel)) return kernel;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("forward kernel '", name.substr(0, 64), "': expected auto, factored-mma, factored-3xtf32 or gemm"));
}

// OK, or INVALID_ARGUMENT naming the field and its allowed values.
inline absl::Status ValidateCudaBackendOptions(const CudaBackendOptions& options) {
  if (options.factored_warp_cols != 16 && options.factored_warp_cols != 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("factored_warp_cols ", options.factored_warp_cols, ": expected 16 or 32"));
  }
  if (options.factored_blocks_per_sm < 0 || options.factored_blocks_per_sm > 64) {
    return absl::InvalidArgumentError(absl::StrCat("factored_blocks_per_sm ", options.factored_blocks_per_sm,
                                                   ": expected 0 (chosen per batch) to 64"));
  }
  return absl::OkStatus();
}

// One line for start-up logs: "forward_kernel=auto factored_warp_cols=32 factored_blocks_per_sm=auto
// weight_grad_kernel=auto".
inline std::string DescribeCudaBackendOptions(const CudaBackendOptions& options) {
  return absl::StrCat("forward_kernel=", ForwardKernelName(options.forward_kernel),
                      " factored_warp_cols=", options.factored_warp_cols, " factored_blocks_per_sm=",
                      options.factored_blocks_per_sm == 0 ? std::string("auto")
                                                          : absl::StrCat(options.factored_blocks_per_sm),
                      " weight_grad_kernel=", WeightGradKernelName(options.weight_grad_kernel));
}

}  // namespace tpserve
