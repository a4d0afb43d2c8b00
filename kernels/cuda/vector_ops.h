// Elementwise float32 work the server needs beyond the tensor product: sums of the gradients that
// several devices accumulated (Backend::AddScaled). Internal to kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

namespace tpserve::cuda {

// y[i] += alpha * x[i] for i < n, on `stream` (the current device's).
cudaError_t LaunchAddScaled(float* y, const float* x, long long n, float alpha, cudaStream_t stream);

}  // namespace tpserve::cuda
