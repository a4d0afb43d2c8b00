// The benchmarks' error checks: a failed call prints where and why and ends the run with exit 2
// (a benchmark has no caller to hand a status to).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"

#define CHECK_OK(expr)                                                                            \
  do {                                                                                            \
    const absl::Status s_ = (expr);                                                               \
    if (!s_.ok()) {                                                                               \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, s_.ToString().c_str()); \
      std::exit(2);                                                                               \
    }                                                                                             \
  } while (0)
#define CHECK_CUDA(expr)                                                                               \
  do {                                                                                                 \
    const cudaError_t e_ = (expr);                                                                     \
    if (e_ != cudaSuccess) {                                                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_));      \
      std::exit(2);                                                                                    \
    }                                                                                                  \
  } while (0)
