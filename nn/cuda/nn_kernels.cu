#include "nn/cuda/nn_kernels.h"

#include <cuda_runtime.h>

namespace tpserve::nn::cuda {
namespace {

constexpr int kThreads = 256;

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }
unsigned Blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

__device__ float Gelu(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ float GeluDerivative(float x) {
  const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
  const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
  return cdf + x * pdf;
}
__device__ float Sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

__global__ void GatherRowsKernel(const float* in, const int32_t* index, int64_t rows, int64_t dim, float scale,
                                 float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * dim; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / dim, k = i - r * dim;
    out[i] = scale * in[int64_t{index[r]} * dim + k];
  }
}

__global__ void ScatterAddRowsKernel(const float* in, const int32_t* index, int64_t rows, int64_t dim, float scale,
                                     float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * dim; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / dim, k = i - r * dim;
    atomicAdd(&out[int64_t{index[r]} * dim + k], scale * in[i]);
  }
}

__global__ void AxpbyKernel(int64_t n, float a, const float* x, float b, const float* y, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = a * x[i] + b * y[i];
  }
}

__global__ void GeluForwardKernel(int64_t n, float scale, const float* z, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = scale * Gelu(z[i]);
  }
}

__global__ void GeluBackwardKernel(int64_t n, float scale, const float* z, const float* grad_a, float* grad_z) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    grad_z[i] = grad_a[i] * scale * GeluDerivative(z[i]);
  }
}

__global__ void GateForwardKernel(const GateEntry* entries, int num_entries, const float* in, int64_t rows,
                                  int64_t dim_in, int64_t dim_out, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * num_entries;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / num_entries;
    const GateEntry e = entries[i - r * num_entries];
    const float* x = in + r * dim_in;
    float* y = out + r * dim_out;
    if (e.kind == 0) {
      y[e.out_offset] = e.scale * Gelu(x[e.in_offset]);
    } else if (e.kind == 1) {
      y[e.out_offset] = e.scale * tanhf(x[e.in_offset]);
    } else {
      const float g = e.scale * Sigmoid(x[e.gate_offset]);
      for (int m = 0; m < e.dim; ++m) y[e.out_offset + m] = x[e.in_offset + m] * g;
    }
  }
}

__global__ void GateBackwardKernel(const GateEntry* entries, int num_entries, const float* in, int64_t rows,
                                   int64_t dim_in, int64_t dim_out, const float* grad_out, float* grad_in) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * num_entries;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / num_entries;
    const GateEntry e = entries[i - r * num_entries];
    const float* x = in + r * dim_in;
    const float* gy = grad_out + r * dim_out;
    float* gx = grad_in + r * dim_in;
    if (e.kind == 0) {
      gx[e.in_offset] = gy[e.out_offset] * e.scale * GeluDerivative(x[e.in_offset]);
    } else if (e.kind == 1) {
      const float t = tanhf(x[e.in_offset]);
      gx[e.in_offset] = gy[e.out_offset] * e.scale * (1.f - t * t);
    } else {
      const float xg = x[e.gate_offset];
      const float s = Sigmoid(xg);
      const float g = e.scale * s;
      float grad_g = 0.f;
      for (int m = 0; m < e.dim; ++m) {
        gx[e.in_offset + m] = gy[e.out_offset + m] * g;
        grad_g += gy[e.out_offset + m] * x[e.in_offset + m];
      }
      gx[e.gate_offset] = grad_g * e.scale * s * (1.f - s);
    }
  }
}

__global__ void GraphSumKernel(const float* out, const int32_t* graph, int64_t num_nodes, int num_targets,
                               float* predictions) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < num_nodes * num_targets;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = i / num_targets, t = i - n * num_targets;
    atomicAdd(&predictions[int64_t{graph[n]} * num_targets + t], out[i]);
  }
}

__global__ void GraphSumBackwardKernel(const float* grad_predictions, const int32_t* graph, int64_t num_nodes,
                                       int num_targets, float* grad_out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < num_nodes * num_targets;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = i / num_targets, t = i - n * num_targets;
    grad_out[i] = grad_predictions[int64_t{graph[n]} * num_targets + t];
  }
}

__global__ void L1LossKernel(const float* predictions, const float* targets, int64_t count, float* loss,
                             float* grad) {
  __shared__ float partial[kThreads];
  float sum = 0.f;
  const float inv = count > 0 ? 1.f / static_cast<float>(count) : 0.f;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const float d = predictions[i] - targets[i];
    sum += fabsf(d);
    grad[i] = (d > 0.f ? 1.f : d < 0.f ? -1.f : 0.f) * inv;
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[0] = partial[0] * inv;
}

__global__ void SgdKernel(int64_t n, float lr, float momentum, const float* grad, float* velocity, float* params) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = momentum * velocity[i] + grad[i];
    velocity[i] = v;
    params[i] -= lr * v;
  }
}

__global__ void PermuteBlockKernel(const float* src, int64_t src_row, int64_t offset, const int32_t* order,
                                   int64_t rows, int mul, int dim, float* buf) {
  const int64_t total = rows * dim * mul;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t u = i % mul, rm = i / mul, m = rm % dim, r = rm / dim;
    const int32_t node = order[r];
    buf[i] = node < 0 ? 0.f : src[int64_t{node} * src_row + offset + u * dim + m];
  }
}

__global__ void UnpermuteAddBlockKernel(const float* buf, const int32_t* order, int64_t rows, int mul, int dim,
                                        float* dst, int64_t dst_row, int64_t offset) {
  const int64_t total = rows * dim * mul;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t u = i % mul, rm = i / mul, m = rm % dim, r = rm / dim;
    const int32_t node = order[r];
    if (node >= 0) dst[int64_t{node} * dst_row + offset + u * dim + m] += buf[i];
  }
}

}  // namespace

void PermuteBlock(const float* src, int64_t src_row, int64_t offset, const int32_t* order, int64_t rows, int mul,
                  int dim, float* buf, void* stream) {
  if (rows * mul * dim == 0) return;
  PermuteBlockKernel<<<Blocks(rows * mul * dim), kThreads, 0, AsStream(stream)>>>(src, src_row, offset, order, rows,
                                                                                  mul, dim, buf);
}
void UnpermuteAddBlock(const float* buf, const int32_t* order, int64_t rows, int mul, int dim, float* dst,
                       int64_t dst_row, int64_t offset, void* stream) {
  if (rows * mul * dim == 0) return;
  UnpermuteAddBlockKernel<<<Blocks(rows * mul * dim), kThreads, 0, AsStream(stream)>>>(buf, order, rows, mul, dim,
                                                                                       dst, dst_row, offset);
}

void GatherRows(const float* in, const int32_t* index, int64_t rows, int64_t dim, float scale, float* out,
                void* stream) {
  if (rows * dim == 0) return;
  GatherRowsKernel<<<Blocks(rows * dim), kThreads, 0, AsStream(stream)>>>(in, index, rows, dim, scale, out);
}
void ScatterAddRows(const float* in, const int32_t* index, int64_t rows, int64_t dim, float scale, float* out,
                    void* stream) {
  if (rows * dim == 0) return;
  ScatterAddRowsKernel<<<Blocks(rows * dim), kThreads, 0, AsStream(stream)>>>(in, index, rows, dim, scale, out);
}
void Axpby(int64_t n, float a, const float* x, float b, const float* y, float* out, void* stream) {
  if (n == 0) return;
  AxpbyKernel<<<Blocks(n), kThreads, 0, AsStream(stream)>>>(n, a, x, b, y, out);
}
void GeluForward(int64_t n, float scale, const float* z, float* out, void* stream) {
  if (n == 0) return;
  GeluForwardKernel<<<Blocks(n), kThreads, 0, AsStream(stream)>>>(n, scale, z, out);
}
void GeluBackward(int64_t n, float scale, const float* z, const float* grad_a, float* grad_z, void* stream) {
  if (n == 0) return;
  GeluBackwardKernel<<<Blocks(n), kThreads, 0, AsStream(stream)>>>(n, scale, z, grad_a, grad_z);
}
void GateForward(const GateEntry* entries, int num_entries, const float* in, int64_t rows, int64_t dim_in,
                 int64_t dim_out, float* out, void* stream) {
  if (rows * num_entries == 0) return;
  GateForwardKernel<<<Blocks(rows * num_entries), kThreads, 0, AsStream(stream)>>>(entries, num_entries, in, rows,
                                                                                   dim_in, dim_out, out);
}
void GateBackward(const GateEntry* entries, int num_entries, const float* in, int64_t rows, int64_t dim_in,
                  int64_t dim_out, const float* grad_out, float* grad_in, void* stream) {
  if (rows * num_entries == 0) return;
  GateBackwardKernel<<<Blocks(rows * num_entries), kThreads, 0, AsStream(stream)>>>(
      entries, num_entries, in, rows, dim_in, dim_out, grad_out, grad_in);
}
void GraphSum(const float* out, const int32_t* graph, int64_t num_nodes, int num_targets, float* predictions,
              void* stream) {
  if (num_nodes * num_targets == 0) return;
  GraphSumKernel<<<Blocks(num_nodes * num_targets), kThreads, 0, AsStream(stream)>>>(out, graph, num_nodes,
                                                                                     num_targets, predictions);
}
void GraphSumBackward(const float* grad_predictions, const int32_t* graph, int64_t num_nodes, int num_targets,
                      float* grad_out, void* stream) {
  if (num_nodes * num_targets == 0) return;
  GraphSumBackwardKernel<<<Blocks(num_nodes * num_targets), kThreads, 0, AsStream(stream)>>>(
      grad_predictions, graph, num_nodes, num_targets, grad_out);
}
void L1LossGradient(const float* predictions, const float* targets, int64_t count, float* loss, float* grad,
                    void* stream) {
  L1LossKernel<<<1, kThreads, 0, AsStream(stream)>>>(predictions, targets, count, loss, grad);
}
void SgdMomentum(int64_t n, float lr, float momentum, const float* grad, float* velocity, float* params,
                 void* stream) {
  if (n == 0) return;
  SgdKernel<<<Blocks(n), kThreads, 0, AsStream(stream)>>>(n, lr, momentum, grad, velocity, params);
}

}  // namespace tpserve::nn::cuda
