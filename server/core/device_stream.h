// Streams for workers: each GPU worker issues its work on a stream of its own. Built with CUDA
// (TPSERVE_HAVE_CUDA) this creates a non-blocking cudaStream_t on the backend's device; for the
// CPU backend, and in builds without CUDA, there is no stream (nullptr).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tpserve::server {

// `device` is a backend name: "cpu", "cuda:N".
absl::StatusOr<void*> CreateDeviceStream(const std::string& device);
void DestroyDeviceStream(void* stream);

}  // namespace tpserve::server
