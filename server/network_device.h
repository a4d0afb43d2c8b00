// Which device computes the network models (--network_device), and the runners for it: the CPU
// network (server/core/network_runner.h) or, in CUDA builds, Qm9CudaNetwork (cuda_network_runner.h).
// Sits outside server/core for the same reason as kernels/backend_factory.h: it names every
// implementation, and the core links no device runtime.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/core/network_runner.h"

namespace tpserve::server {

// `spec`: "auto" (the first CUDA device among `backend_devices`, the names of the backends that
// serve the tensor products, e.g. "cuda:0"; "cpu" when none is a CUDA device), "cpu", "cuda"
// (= cuda:0) or "cuda:N". INVALID_ARGUMENT for another spelling, UNAVAILABLE for a CUDA device
// this build or machine lacks; both name the flag.
absl::StatusOr<std::unique_ptr<NetworkRunnerFactory>> MakeNetworkRunners(
    absl::string_view spec, const std::vector<std::string>& backend_devices);

}  // namespace tpserve::server
