// Output gradient of the built-in losses, elementwise over the [batch, dim_out] forward result:
//   sum tanh: g[i] = 1 - tanh(out[i])^2        sum: g[i] = 1
// Grid: grid-stride loop, 256 threads per block. Floor: 8 bytes per element (read out, write g).
#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda {
namespace {

__global__ void LossGradOutKernel(bool sum_tanh, const float* __restrict__ out, float* __restrict__ g, long long n) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    if (sum_tanh) {
      const float y = tanhf(out[i]);
      g[i] = 1.f - y * y;
    } else {
      g[i] = 1.f;
    }
  }
}

}  // namespace

cudaError_t LaunchLossGradOut(bool sum_tanh, const float* out, float* g, long long n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const long long blocks = (n + 255) / 256;
  LossGradOutKernel<<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), 256, 0, stream>>>(sum_tanh, out, g, n);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
