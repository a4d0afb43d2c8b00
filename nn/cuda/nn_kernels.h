// Device kernels of the QM9 network's non-tensor-product ops (fp32, one CUDA stream each call):
// gather / scatter of rows, the radial MLP's activation, the gate, the per-graph sum, the L1 loss
// gradient and SGD with momentum. Plain CUDA-core kernels; launches are asynchronous on `stream`.
#pragma once

#include <cstdint>

namespace tpserve::nn::cuda {

// out[r, :] = scale * in[index[r], :], r < rows, row width `dim`.
void GatherRows(const float* in, const int32_t* index, int64_t rows, int64_t dim, float scale, float* out,
                void* stream);
// out[index[r], :] += scale * in[r, :] (atomicAdd; out must be initialized).
void ScatterAddRows(const float* in, const int32_t* index, int64_t rows, int64_t dim, float scale, float* out,
                    void* stream);
// out = a * x + b * y, n entries (out may alias x or y).
void Axpby(int64_t n, float a, const float* x, float b, const float* y, float* out, void* stream);
// out = scale * gelu(z) (exact erf gelu).
void GeluForward(int64_t n, float scale, const float* z, float* out, void* stream);
// grad_z = grad_a * scale * gelu'(z).
void GeluBackward(int64_t n, float scale, const float* z, const float* grad_a, float* grad_z, void* stream);

// One entry of the gate's table: a scalar (in -> out through activation kind 0 = gelu, 1 = tanh,
// times `scale`) or a gated copy of `dim` components (in..in+dim -> out.., gated by in[gate]).
struct GateEntry {
  int32_t kind;  // 0: scalar gelu, 1: scalar tanh, 2: gated copy
  int32_t in_offset, out_offset, gate_offset, dim;
  float scale;   // the activation's second-moment constant (sigmoid's for a gated copy)
};
void GateForward(const GateEntry* entries, int num_entries, const float* in, int64_t rows, int64_t dim_in,
                 int64_t dim_out, float* out, void* stream);
// grad_in (=) from grad_out; every input entry is written.
void GateBackward(const GateEntry* entries, int num_entries, const float* in, int64_t rows, int64_t dim_in,
                  int64_t dim_out, const float* grad_out, float* grad_in, void* stream);

// predictions[graph[n], t] += out[n, t] (predictions zeroed by the caller).
void GraphSum(const float* out, const int32_t* graph, int64_t num_nodes, int num_targets, float* predictions,
              void* stream);
// grad_out[n, t] = grad_predictions[graph[n], t].
void GraphSumBackward(const float* grad_predictions, const int32_t* graph, int64_t num_nodes, int num_targets,
                      float* grad_out, void* stream);
// loss[0] = mean |pred - target|; grad = sign(pred - target) / count. One block.
void L1LossGradient(const float* predictions, const float* targets, int64_t count, float* loss, float* grad,
                    void* stream);
// v = momentum v + g; p -= lr v.
void SgdMomentum(int64_t n, float lr, float momentum, const float* grad, float* velocity, float* params,
                 void* stream);

// The per-species FCTPs' layout changes: an irrep block of mul copies of dim components, rows taken
// in `order` (nodes grouped by species; -1: a padding row, zero in buf, not written back), to / from a
// row-major [rows * dim, mul] matrix:
//   buf[(r * dim + m) * mul + u] = src[order[r] * src_row + offset + u * dim + m]
void PermuteBlock(const float* src, int64_t src_row, int64_t offset, const int32_t* order, int64_t rows, int mul,
                  int dim, float* buf, void* stream);
//   dst[order[r] * dst_row + offset + u * dim + m] += buf[(r * dim + m) * mul + u]
void UnpermuteAddBlock(const float* buf, const int32_t* order, int64_t rows, int mul, int dim, float* dst,
                       int64_t dst_row, int64_t offset, void* stream);

}  // namespace tpserve::nn::cuda
