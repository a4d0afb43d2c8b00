// Launch interface of the per-sample kernels (tp_per_sample.cu): tensor products whose weights
// differ per sample (a convolution's per-edge weights from a radial MLP) and/or whose paths are
// 'uvu', for which the shared-weight GEMM kernels do not apply. Host code includes this header only.
//
// Work is memory-bound (per sample: read x1, x2 and weight rows, write the out row; a few FMAs per
// byte), so the kernels are built for bandwidth: one block of 128 threads per sample (grid-stride
// over samples), each thread owning output elements (out, dW, dx1) and writing each once, coalesced,
// without atomics; the sample's input rows are read from DRAM once and re-read from L1. dx2 (a
// reduction over channels) is summed by warps into a shared-memory row. Arithmetic: fp32 on CUDA
// cores for every Precision (tf32 and bf16 requests run the same fp32 kernels).
//
// Optional row indices make the same kernels a fused gather/scatter over a graph's edges:
// src[z] picks the x1 row (x1 = node features [num_nodes, dim1]) and dst[z] the out / grad_out row
// (out = node sums [num_out_rows, dim_out]); rows written through an index are atomically added
// (the caller zeroes them first).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace tpserve::cuda {

// One path (plan.h's formulas). Weight block at w_off in the sample's weight row:
// 'uvu' W[u][v] (mul_out == mul1), 'uvw' W[u][v][w].
struct PsPath {
  int uvu;  // 1: 'uvu', 0: 'uvw'
  int mul1, mul2, mul_out;
  int d1, d2, d3;
  int off1, off2, off_out;
  long long w_off;
  float scale;  // the path weight
  // Nonzeros C[i,j,k] with a given k are entries[ranges[by_k + k] .. ranges[by_k + k + 1]);
  // likewise by_i (grouped by i) and by_j (grouped by j). Three sorted copies of the same set.
  int by_k, by_i, by_j;
};

struct PsEntry {
  int16_t i, j, k, unused;
  float c;
};

// An irrep block of out (forward) or of x1 (backward): columns [offset, offset + mul * dim), and
// the paths that write it (forward) or read it (backward): paths[order[path_begin .. path_end)].
struct PsSegment {
  int offset, mul, dim, path_begin, path_end;
};

// How the backward kernel obtains dL/dout: read it, 1 everywhere (L = sum out), or from the forward
// result in g as 1 - tanh(out)^2 (L = sum tanh out).
enum class PsGradMode : int { kGiven = 0, kOne = 1, kSumTanh = 2 };
// How dW is written: =, +=, or atomically added (shared weights: every sample adds to one block).
enum class PsStore : int { kAssign = 0, kAdd = 1, kAtomicAdd = 2 };

struct PsArgs {
  const PsPath* paths;
  const PsEntry* entries;
  const int* ranges;
  const PsSegment* segments;  // num_out_segments out segments, then num_in1_segments x1 segments
  const int* order;
  int num_out_segments, num_in1_segments;
  int batch;  // samples (edges)
  int dim1, dim2, dim_out;
  long long w_stride;  // weight row per sample (weight_numel), 0 for shared weights
  const float* w;
  const float* x1;
  const float* x2;
  const int* src;  // x1 row of sample z (nullptr: row z)
  const int* dst;  // out / g row of sample z (nullptr: row z)
  // Row counts of x1 and out when indexed: a sample whose src or dst is outside them is skipped
  // (contributes nothing, its dW and dx2 rows are left as they were) instead of faulting.
  long long num_src_rows, num_dst_rows;
  float* out;      // forward
  const float* g;  // backward: grad_out, or out for kSumTanh, unused for kOne
  PsGradMode g_mode;
  float* dw;  // each optional
  PsStore dw_store;
  float* dx1;
  float* dx2;
};

// Largest dim2 the backward's shared-memory dx2 row takes (48 KB).
inline constexpr int kPerSampleMaxDim2 = 12288;

cudaError_t LaunchPerSampleForward(const PsArgs& args, cudaStream_t stream);
// Writes each of dw, dx1, dx2 that is non-null.
cudaError_t LaunchPerSampleBackward(const PsArgs& args, cudaStream_t stream);

}  // namespace tpserve::cuda
