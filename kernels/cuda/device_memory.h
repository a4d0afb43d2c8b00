// Device and page-locked host memory owned by one object, and the current-device scope of a call.
// Internal to kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "kernels/core/backend.h"
#include "kernels/core/status_macros.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve::cuda {

// Device memory owned by one object; freed (after the device is idle for it) on destruction.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  absl::Status Allocate(size_t bytes) {
    CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, std::max<size_t>(bytes, 1)));
    bytes_ = bytes;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Upload(const std::vector<T>& values) {
    RETURN_IF_ERROR(Allocate(values.size() * sizeof(T)));
    if (!values.empty()) {
      CUDA_RETURN_IF_ERROR(cudaMemcpy(ptr_, values.data(), bytes_, cudaMemcpyHostToDevice));
      // From pageable memory, cudaMemcpy returns once the bytes are staged, before the DMA lands, and
      // it runs on the legacy stream, which the callers' non-blocking streams do not wait for: a
      // kernel launched right after (a work list built for a new batch size) could read the tables
      // half written. Seen as cudaErrorIllegalAddress under load in tpserve; wait for the copy.
      CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(cudaStreamLegacy));
    }
    return absl::OkStatus();
  }
  template <typename T>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (cudaHostAlloc): the DMA engines read and write it directly.
class PinnedHostBuffer final : public BackendBuffer {
 public:
  PinnedHostBuffer(void* ptr, size_t bytes) : ptr_(ptr), bytes_(bytes) {}
  ~PinnedHostBuffer() override { cudaFreeHost(ptr_); }
  void* data() const override { return ptr_; }
  size_t bytes() const override { return bytes_; }

 private:
  void* ptr_;
  size_t bytes_;
};

class CudaBuffer final : public BackendBuffer {
 public:
  CudaBuffer(int device, void* ptr, size_t bytes) : device_(device), ptr_(ptr), bytes_(bytes) {}
  ~CudaBuffer() override {
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device_);
    cudaFree(ptr_);
    cudaSetDevice(previous);
  }
  void* data() const override { return ptr_; }
  size_t bytes() const override { return bytes_; }

 private:
  int device_;
  void* ptr_;
  size_t bytes_;
};

// Makes `device` current for the scope of one call and restores the caller's device after.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    cudaGetDevice(&previous_);
    if (previous_ != device) cudaSetDevice(device);
  }
  ~DeviceScope() {
    int current = 0;
    cudaGetDevice(&current);
    if (current != previous_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
};

}  // namespace tpserve::cuda
