// y += alpha * x: memory-bound (12 bytes per element); a grid-stride loop of 256-thread blocks.
#include "kernels/cuda/vector_ops.h"

#include <algorithm>

namespace tpserve::cuda {
namespace {

// No __restrict__: x may be y (y += alpha * y).
__global__ void AddScaledKernel(float* y, const float* x, long long n, float alpha) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    y[i] += alpha * x[i];
  }
}

}  // namespace

cudaError_t LaunchAddScaled(float* y, const float* x, long long n, float alpha, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  // Enough blocks to fill any current GPU several times over; the loop covers the rest.
  const long long blocks = std::min<long long>((n + kThreads - 1) / kThreads, 4096);
  AddScaledKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(y, x, n, alpha);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
