#include "server/network_device.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/backend_factory.h"
#ifdef TPSERVE_HAVE_CUDA
#include "server/cuda_network_runner.h"
#endif

namespace tpserve::server {
namespace {

// The CUDA device index of "cuda" / "cuda:N"; -1 for any other name and for a negative N.
int CudaIndex(absl::string_view name) {
  const std::optional<int> device = ParseCudaDeviceName(name);
  return device && *device >= 0 ? *device : -1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NetworkRunnerFactory>> MakeNetworkRunners(
    absl::string_view spec, const std::vector<std::string>& backend_devices) {
  std::string name(spec);
  if (spec == "auto") {
    name = "cpu";
    for (const std::string& device : backend_devices) {
      if (CudaIndex(device) >= 0) {
        name = device;
        break;
      }
    }
  }
  if (name == "cpu") return MakeCpuNetworkRunners();
  const int device = CudaIndex(name);
  if (device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--network_device '", spec, "': expected auto, cpu, cuda or cuda:N"));
  }
#ifdef TPSERVE_HAVE_CUDA
  const int count = CudaDeviceCount();
  if (device >= count) {
    return absl::UnavailableError(absl::StrCat("--network_device '", spec, "': no CUDA device ", device,
                                               " (this machine has ", count, ")"));
  }
  return MakeCudaNetworkRunners(device);
#else
  return absl::UnavailableError(absl::StrCat("--network_device '", spec, "': this build has no CUDA support"));
#endif
}

}  // namespace tpserve::server
