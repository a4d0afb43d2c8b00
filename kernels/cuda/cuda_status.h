// CUDA_RETURN_IF_ERROR(call): turns a failed CUDA runtime call into an absl::Status naming the
// call, the CUDA error and file:line. Internal to kernels/cuda (host code only).
#pragma once

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tpserve {

inline absl::Status CudaErrorStatus(cudaError_t error, const char* call, const char* file, int line) {
  const absl::StatusCode code = error == cudaErrorMemoryAllocation ? absl::StatusCode::kResourceExhausted
                                : (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver)
                                    ? absl::StatusCode::kUnavailable
                                    : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat(call, " failed: ", cudaGetErrorName(error), " (", cudaGetErrorString(error),
                                         ") at ", file, ":", line));
}

}  // namespace tpserve

#define CUDA_RETURN_IF_ERROR(expr)                                                      \
  do {                                                                                  \
    const cudaError_t tps_cuda_error_ = (expr);                                         \
    if (tps_cuda_error_ != cudaSuccess)                                                 \
      return ::tpserve::CudaErrorStatus(tps_cuda_error_, #expr, __FILE__, __LINE__);    \
  } while (0)
