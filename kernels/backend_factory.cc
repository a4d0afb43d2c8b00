#include "kernels/backend_factory.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef TPSERVE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tpserve {

int CudaDeviceCount() {
#ifdef TPSERVE_HAVE_CUDA
  return CudaBackend::DeviceCount();
#else
  return 0;
#endif
}

std::optional<int> ParseCudaDeviceName(absl::string_view name) {
  if (name == "cuda") return 0;
  int device = 0;
  if (!absl::StartsWith(name, "cuda:") || !absl::SimpleAtoi(name.substr(5), &device)) return std::nullopt;
  return device;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name, const CudaBackendOptions& cuda_options) {
  if (name == "cpu") return std::unique_ptr<Backend>(std::make_unique<CpuBackend>());
  if (absl::StartsWith(name, "cpu:")) {
    // cpu:N: a CPU backend named as a device of its own, so that several stand in for several
    // GPUs (testing multi-device serving without GPUs). They share the host's cores.
    int index = 0;
    if (!absl::SimpleAtoi(name.substr(4), &index) || index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("backend '", name, "': expected cpu:<index>"));
    }
    CpuBackendOptions options;
    options.name = absl::StrCat("cpu:", index);
    return std::unique_ptr<Backend>(std::make_unique<CpuBackend>(options));
  }
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    const std::optional<int> device = ParseCudaDeviceName(name);
    if (!device) {
      return absl::InvalidArgumentError(absl::StrCat("backend '", name, "': expected cuda:<device index>"));
    }
#ifdef TPSERVE_HAVE_CUDA
    return CudaBackend::Create(*device, cuda_options);
#else
    (void)cuda_options;
    return absl::UnavailableError(absl::StrCat("backend '", name, "': this build has no CUDA support"));
#endif
  }
  return absl::InvalidArgumentError(absl::StrCat("backend '", name, "': expected cpu, cpu:N, cuda or cuda:N"));
}

}  // namespace tpserve
