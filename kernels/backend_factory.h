// Makes backends by name, so that tpctl, the server and the benchmarks share one spelling:
// "cpu", "cuda" (device 0) or "cuda:N"; "cpu:N" is a CPU backend named as device N (several stand
// in for several GPUs in tests). It sits above core/, cpu/ and cuda/ because it names
// every implementation; nothing in those folders includes it.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/core/backend.h"
#include "kernels/cuda/cuda_backend_options.h"

namespace tpserve {

// `cuda_options` apply to CUDA backends (the CPU backend has no kernel choices).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name,
                                                     const CudaBackendOptions& cuda_options = {});
// The device index that "cuda" (0) or "cuda:N" names (N as written, negative included: MakeBackend
// refuses it as no such device); nullopt for any other name.
std::optional<int> ParseCudaDeviceName(absl::string_view name);
// Number of CUDA devices usable here (0 when built without CUDA or without a GPU).
int CudaDeviceCount();

}  // namespace tpserve
