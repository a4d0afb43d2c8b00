// Output gradients in the two layouts the gradient kernels read, elementwise over [batch, dim_out]:
//   mode kSumTanh: g = 1 - tanh(out)^2     mode kSum: g = 1     mode kCopy: g = grad_out
//   g_mul_ir[z, c] = g (e3nn's layout, read by the input-gradient GEMMs; optional)
//   and/or
//   g_ir_mul[z, ir_mul_col[c]] = g, ir_mul_col[off + w*d + k] = off + k*mul + w for each output irrep
//   block (offset off, multiplicity mul, dimension d): the layout the weight gradient copies from,
//   contiguous over w for each (z, k).
// Grid: grid-stride loop, 256 threads per block. Floor: 12 bytes per element (read, write twice).
#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda {
namespace {

__global__ void OutputGradKernel(OutputGradMode mode, const float* src, const int* __restrict__ ir_mul_col, int dim_out,
                                 long long n, float* __restrict__ g_mul_ir, float* g_ir_mul) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    float g = 1.f;
    if (mode == OutputGradMode::kSumTanh) {
      const float y = tanhf(src[i]);
      g = 1.f - y * y;
    } else if (mode == OutputGradMode::kCopy) {
      g = src[i];
    }
    if (g_mul_ir != nullptr) g_mul_ir[i] = g;
    if (g_ir_mul != nullptr && ir_mul_col == nullptr) {
      g_ir_mul[i] = g;
    } else if (g_ir_mul != nullptr) {
      const long long z = i / dim_out;
      const int c = static_cast<int>(i - z * dim_out);
      g_ir_mul[z * dim_out + __ldg(ir_mul_col + c)] = g;
    }
  }
}

}  // namespace

cudaError_t LaunchOutputGrad(OutputGradMode mode, const float* src, const int* ir_mul_col, int dim_out,
                             long long batch, float* g_mul_ir, float* g_ir_mul, cudaStream_t stream) {
  const long long n = batch * dim_out;
  if (n == 0) return cudaSuccess;
  const long long blocks = (n + 255) / 256;
  OutputGradKernel<<<static_cast<unsigned>(blocks < 8192 ? blocks : 8192), 256, 0, stream>>>(
      mode, src, ir_mul_col, dim_out, n, g_mul_ir, g_ir_mul);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
