// Makes backends by name, so that tpctl, the server and the benchmarks share one spelling:
// "cpu", "cuda" (device 0) or "cuda:N".
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/core/backend.h"

namespace tpserve {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name);
// Number of CUDA devices usable here (0 when built without CUDA or without a GPU).
int CudaDeviceCount();

}  // namespace tpserve
