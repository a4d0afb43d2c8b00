#include "server/core/device_stream.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#ifdef TPSERVE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tpserve::server {

absl::StatusOr<void*> CreateDeviceStream(const std::string& device) {
  if (!absl::StartsWith(device, "cuda")) return nullptr;
#ifdef TPSERVE_HAVE_CUDA
  int index = 0;
  if (device.size() > 5 && !absl::SimpleAtoi(device.substr(5), &index)) {
    return absl::InvalidArgumentError(absl::StrCat("device '", device, "': expected cuda:N"));
  }
  if (cudaError_t e = cudaSetDevice(index); e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("cudaSetDevice(", index, "): ", cudaGetErrorString(e)));
  }
  cudaStream_t stream = nullptr;
  if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("cudaStreamCreateWithFlags on ", device, ": ", cudaGetErrorString(e)));
  }
  return static_cast<void*>(stream);
#else
  return nullptr;
#endif
}

void DestroyDeviceStream(void* stream) {
#ifdef TPSERVE_HAVE_CUDA
  if (stream != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
#else
  (void)stream;
#endif
}

}  // namespace tpserve::server
