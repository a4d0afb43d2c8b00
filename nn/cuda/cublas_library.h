// cuBLAS loaded on first use (dlopen) rather than linked: loading libcublasLt costs a process about
// 150 MB of resident memory (measured: tpserve idle, 21 MB -> 173 MB), which every tpserve paid once
// it linked Qm9CudaNetwork, though only a server computing network models on a GPU calls cuBLAS.
// The functions Qm9CudaNetwork uses, by their cublas_v2.h names.
#pragma once

#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace tpserve::nn {

struct CublasLibrary {
  decltype(&::cublasCreate_v2) create = nullptr;
  decltype(&::cublasDestroy_v2) destroy = nullptr;
  decltype(&::cublasSetStream_v2) set_stream = nullptr;
  decltype(&::cublasSetMathMode) set_math_mode = nullptr;
  decltype(&::cublasSgemm_v2) sgemm = nullptr;
  decltype(&::cublasSgemmStridedBatched) sgemm_strided_batched = nullptr;
};

// The library (libcublas.so.<major of the headers>), loaded once per process; UNAVAILABLE with the
// loader's message when it or one of the functions is missing.
absl::StatusOr<const CublasLibrary*> LoadCublas();

}  // namespace tpserve::nn
