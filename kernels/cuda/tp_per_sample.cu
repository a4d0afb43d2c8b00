// Per-sample tensor-product kernels ('uvu' and/or per-sample weights); see tp_per_sample.h.
//
// One block per sample z (grid-stride). With a = path weight, C the 3j nonzeros, G = dL/dout:
//   forward   out[c, k]  = sum_paths a sum_v W[c,v] sum_{C with k} C x1[c,i] x2[v,j]       ('uvu', c = u)
//                          sum_paths a sum_{u,v} W[u,v,c] sum_{C with k} C x1[u,i] x2[v,j]  ('uvw', c = w)
//   dW[u,v(,w)]          = a sum_C C x1[u,i] x2[v,j] G[c,k]
//   dx1[u,i]             = sum_paths a sum_{v(,w)} W[u,v(,w)] sum_{C with i} C x2[v,j] G[c,k]
//   dx2[v,j]             = sum_paths a sum_{u(,w)} W[u,v(,w)] sum_{C with j} C x1[u,i] G[c,k]
// Threads own out / dW / dx1 elements (consecutive threads, consecutive columns: coalesced stores,
// each written once). dx2 items (v, j) go to warps, lanes split the sum over channels, and the warp
// sums meet in a shared-memory row. The backward walks x1's irreps and, for each, every path that
// reads it: dW, dx1 and dx2 of those paths read the same x1, W and G slices close together in time,
// so they come from DRAM once and from L1 after.
// 'uvu' paths first fold x2 into M[v][i][k] = a sum_j C[i,j,k] x2[v,j] (shared memory, once per
// sample): then out[u,k] = sum_v W[u,v] sum_i x1[u,i] M[v,i,k], dx1[u,i] = sum_v W[u,v] sum_k
// M[v,i,k] G[u,k], dW[u,v] = sum_{i,k} x1[u,i] M[v,i,k] G[u,k]: short dot products per element
// instead of a walk over the nonzeros with their index loads.
// Samples with few blocks: blockIdx.y splits a sample's irrep segments over gridDim.y blocks (dx2
// rows then meet in global memory by atomics).
#include "kernels/cuda/tp_per_sample.h"

namespace tpserve::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// The rows of one sample.
struct Rows {
  const float* x1;
  const float* x2;
  const float* w;
  const float* g;
  float* dw;
  float* dx1;
};

__device__ __forceinline__ Rows RowsOf(const PsArgs& a, int z) {
  const long long x1_row = a.src != nullptr ? a.src[z] : z;
  const long long out_row = a.dst != nullptr ? a.dst[z] : z;
  Rows r;
  r.x1 = a.x1 + x1_row * a.dim1;
  r.x2 = a.x2 + static_cast<long long>(z) * a.dim2;
  r.w = a.w + z * a.w_stride;
  r.g = a.g != nullptr ? a.g + out_row * a.dim_out : nullptr;
  r.dw = a.dw != nullptr ? a.dw + z * a.w_stride : nullptr;
  r.dx1 = a.dx1 != nullptr ? a.dx1 + x1_row * a.dim1 : nullptr;
  return r;
}

__device__ __forceinline__ bool RowsInRange(const PsArgs& a, int z) {
  if (a.src != nullptr && static_cast<unsigned long long>(a.src[z]) >= static_cast<unsigned long long>(a.num_src_rows))
    return false;
  return a.dst == nullptr ||
         static_cast<unsigned long long>(a.dst[z]) < static_cast<unsigned long long>(a.num_dst_rows);
}

__device__ __forceinline__ float LoadG(PsGradMode mode, const float* g, int c) {
  if (mode == PsGradMode::kOne) return 1.f;
  const float v = __ldg(g + c);
  if (mode == PsGradMode::kGiven) return v;
  const float y = tanhf(v);
  return 1.f - y * y;
}

__device__ __forceinline__ const PsEntry* Entries(const PsArgs& a, int by, int index) {
  return a.entries + __ldg(a.ranges + by + index);
}

// The shared M tables of the sample (one thread per path), between two barriers: the previous
// sample's readers are done before it is overwritten, and it is complete before it is read.
__device__ __forceinline__ void BuildM(const PsArgs& a, const Rows& r, float* m, float* n_table = nullptr) {
  __syncthreads();
  if (n_table != nullptr) {
    for (int t = threadIdx.x; t < a.m_size; t += kThreads) n_table[t] = 0.f;
  }
  for (int n = threadIdx.x; n < a.num_paths; n += kThreads) {
    const PsPath& p = a.paths[n];
    if (p.m_off < 0) continue;
    float* mp = m + p.m_off;
    for (int t = 0; t < p.mul2 * p.d1 * p.d3; ++t) mp[t] = 0.f;
    const PsEntry* e0 = Entries(a, p.by_k, 0);
    const PsEntry* e1 = Entries(a, p.by_k, p.d3);
    for (int v = 0; v < p.mul2; ++v) {
      const float* x2v = r.x2 + p.off2 + v * p.d2;
      float* mv = mp + v * p.d1 * p.d3;
      for (const PsEntry* e = e0; e < e1; ++e) mv[e->i * p.d3 + e->k] += p.scale * e->c * __ldg(x2v + e->j);
    }
  }
  __syncthreads();
}

// out[c, k] of a 'uvu' path with an M table.
__device__ __forceinline__ float PathForwardM(const PsPath& p, const Rows& r, const float* m, int c, int k) {
  const float* x1u = r.x1 + p.off1 + c * p.d1;
  float s = 0.f;
  for (int v = 0; v < p.mul2; ++v) {
    const float* mv = m + p.m_off + v * p.d1 * p.d3 + k;
    float t = 0.f;
    for (int i = 0; i < p.d1; ++i) t += __ldg(x1u + i) * mv[i * p.d3];
    s += __ldg(r.w + p.w_off + static_cast<long long>(c) * p.mul2 + v) * t;
  }
  return s;
}

// out[c, k] of one path.
__device__ __forceinline__ float PathForward(const PsArgs& a, const PsPath& p, const Rows& r, const float* m, int c,
                                             int k) {
  if (p.m_off >= 0) return PathForwardM(p, r, m, c, k);
  const PsEntry* e0 = Entries(a, p.by_k, k);
  const PsEntry* e1 = Entries(a, p.by_k, k + 1);
  float s = 0.f;
  if (p.uvu) {
    const float* x1u = r.x1 + p.off1 + c * p.d1;
    for (int v = 0; v < p.mul2; ++v) {
      const float* x2v = r.x2 + p.off2 + v * p.d2;
      float t = 0.f;
      for (const PsEntry* e = e0; e < e1; ++e) t += e->c * __ldg(x1u + e->i) * __ldg(x2v + e->j);
      s += __ldg(r.w + p.w_off + static_cast<long long>(c) * p.mul2 + v) * t;
    }
    return p.scale * s;
  }
  for (int u = 0; u < p.mul1; ++u) {
    const float* x1u = r.x1 + p.off1 + u * p.d1;
    for (int v = 0; v < p.mul2; ++v) {
      const float* x2v = r.x2 + p.off2 + v * p.d2;
      float t = 0.f;
      for (const PsEntry* e = e0; e < e1; ++e) t += e->c * __ldg(x1u + e->i) * __ldg(x2v + e->j);
      s += __ldg(r.w + p.w_off + (static_cast<long long>(u) * p.mul2 + v) * p.mul_out + c) * t;
    }
  }
  return p.scale * s;
}

__device__ __forceinline__ void StoreOut(const PsArgs& a, float* out, float value) {
  if (a.dst != nullptr) {
    atomicAdd(out, value);
  } else {
    *out = value;
  }
}

// One out segment of one sample. A segment written by one path (the convolution's case) keeps the
// path's descriptor in registers for all its elements.
__device__ __forceinline__ void SegmentForward(const PsArgs& a, const PsSegment seg, const Rows& r, const float* m,
                                               float* out) {
  if (seg.path_end - seg.path_begin == 1) {
    const PsPath p = a.paths[a.order[seg.path_begin]];
    for (int t = threadIdx.x; t < seg.mul * seg.dim; t += kThreads) {
      const int c = t / seg.dim;
      StoreOut(a, out + seg.offset + t, PathForward(a, p, r, m, c, t - c * seg.dim));
    }
    return;
  }
  for (int t = threadIdx.x; t < seg.mul * seg.dim; t += kThreads) {
    const int c = t / seg.dim, k = t - c * seg.dim;
    float acc = 0.f;
    for (int n = seg.path_begin; n < seg.path_end; ++n) acc += PathForward(a, a.paths[a.order[n]], r, m, c, k);
    StoreOut(a, out + seg.offset + t, acc);
  }
}

__global__ void __launch_bounds__(kThreads, 8) PerSampleForwardKernel(PsArgs a) {
  extern __shared__ float m[];  // the M tables
  for (int z = blockIdx.x; z < a.batch; z += gridDim.x) {
    if (!RowsInRange(a, z)) continue;
    const Rows r = RowsOf(a, z);
    if (a.m_size > 0) BuildM(a, r, m);
    float* out = a.out + (a.dst != nullptr ? static_cast<long long>(a.dst[z]) : z) * a.dim_out;
    for (int s = blockIdx.y; s < a.num_out_segments; s += gridDim.y) SegmentForward(a, a.segments[s], r, m, out);
  }
}

// dW[u, v] of a 'uvu' path with an M table.
__device__ __forceinline__ float WeightGradM(const PsArgs& a, const PsPath& p, const Rows& r, const float* m, int u,
                                             int v) {
  const float* x1u = r.x1 + p.off1 + u * p.d1;
  const float* gu = r.g != nullptr ? r.g + p.off_out + u * p.d3 : nullptr;
  const float* mv = m + p.m_off + v * p.d1 * p.d3;
  float s = 0.f;
  for (int k = 0; k < p.d3; ++k) {
    float t = 0.f;
    for (int i = 0; i < p.d1; ++i) t += __ldg(x1u + i) * mv[i * p.d3 + k];
    s += t * LoadG(a.g_mode, gu, k);
  }
  return s;
}

__device__ __forceinline__ void StoreWeightGrad(const PsArgs& a, float* dst, float value) {
  if (a.dw_store == PsStore::kAssign) {
    *dst = value;
  } else if (a.dw_store == PsStore::kAdd) {
    *dst += value;
  } else {
    atomicAdd(dst, value);
  }
}

// dW of every path that reads x1 segment `seg`.
__device__ __forceinline__ void SegmentWeightGrad(const PsArgs& a, const PsSegment& seg, const Rows& r,
                                                  const float* m) {
  for (int n = seg.path_begin; n < seg.path_end; ++n) {
    const PsPath p = a.paths[a.order[n]];
    if (p.m_off >= 0) {
      for (int t = threadIdx.x; t < p.mul1 * p.mul2; t += kThreads) {
        const int u = t / p.mul2;
        StoreWeightGrad(a, r.dw + p.w_off + t, WeightGradM(a, p, r, m, u, t - u * p.mul2));
      }
      continue;
    }
    const PsEntry* e0 = Entries(a, p.by_k, 0);
    const PsEntry* e1 = Entries(a, p.by_k, p.d3);
    const int numel = p.mul1 * p.mul2 * (p.uvu ? 1 : p.mul_out);
    for (int t = threadIdx.x; t < numel; t += kThreads) {
      const int c = p.uvu ? t / p.mul2 : t % p.mul_out;  // output channel
      const int uv = p.uvu ? t : t / p.mul_out;
      const int u = uv / p.mul2, v = uv - u * p.mul2;
      const float* x1u = r.x1 + p.off1 + u * p.d1;
      const float* x2v = r.x2 + p.off2 + v * p.d2;
      const float* gc = r.g != nullptr ? r.g + p.off_out + c * p.d3 : nullptr;
      float s = 0.f;
      for (const PsEntry* e = e0; e < e1; ++e) s += e->c * __ldg(x1u + e->i) * __ldg(x2v + e->j) * LoadG(a.g_mode, gc, e->k);
      StoreWeightGrad(a, r.dw + p.w_off + t, p.scale * s);
    }
  }
}

// dx1[u, i] of a 'uvu' path with an M table.
__device__ __forceinline__ float X1GradM(const PsArgs& a, const PsPath& p, const Rows& r, const float* m, int u,
                                         int i) {
  const float* gu = r.g != nullptr ? r.g + p.off_out + u * p.d3 : nullptr;
  float s = 0.f;
  for (int v = 0; v < p.mul2; ++v) {
    const float* mvi = m + p.m_off + (v * p.d1 + i) * p.d3;
    float t = 0.f;
    for (int k = 0; k < p.d3; ++k) t += mvi[k] * LoadG(a.g_mode, gu, k);
    s += __ldg(r.w + p.w_off + static_cast<long long>(u) * p.mul2 + v) * t;
  }
  return s;
}

// dx1 of x1 segment `seg`: thread per (u, i), summed over the paths that read it.
__device__ __forceinline__ void SegmentX1Grad(const PsArgs& a, const PsSegment& seg, const Rows& r, const float* m) {
  for (int t = threadIdx.x; t < seg.mul * seg.dim; t += kThreads) {
    const int u = t / seg.dim, i = t - u * seg.dim;
    float acc = 0.f;
    for (int n = seg.path_begin; n < seg.path_end; ++n) {
      const PsPath& p = a.paths[a.order[n]];
      if (p.m_off >= 0) {
        acc += X1GradM(a, p, r, m, u, i);
        continue;
      }
      const PsEntry* e0 = Entries(a, p.by_i, i);
      const PsEntry* e1 = Entries(a, p.by_i, i + 1);
      float s = 0.f;
      for (int v = 0; v < p.mul2; ++v) {
        const float* x2v = r.x2 + p.off2 + v * p.d2;
        const int c_begin = p.uvu ? u : 0, c_end = p.uvu ? u + 1 : p.mul_out;
        for (int c = c_begin; c < c_end; ++c) {
          const float* gc = r.g != nullptr ? r.g + p.off_out + c * p.d3 : nullptr;
          float q = 0.f;
          for (const PsEntry* e = e0; e < e1; ++e) q += e->c * __ldg(x2v + e->j) * LoadG(a.g_mode, gc, e->k);
          const long long w_index = p.uvu ? static_cast<long long>(u) * p.mul2 + v
                                          : (static_cast<long long>(u) * p.mul2 + v) * p.mul_out + c;
          s += __ldg(r.w + p.w_off + w_index) * q;
        }
      }
      acc += p.scale * s;
    }
    if (a.src != nullptr) {
      atomicAdd(r.dx1 + seg.offset + t, acc);
    } else {
      r.dx1[seg.offset + t] = acc;
    }
  }
}

// dx2 item (v, j) of one path, summed over channels by the lanes of one warp (result in every lane).
__device__ __forceinline__ float PathX2GradItem(const PsArgs& a, const PsPath& p, const Rows& r, int v, int j) {
  const PsEntry* e0 = Entries(a, p.by_j, j);
  const PsEntry* e1 = Entries(a, p.by_j, j + 1);
  const int lane = threadIdx.x % 32;
  const int count = p.uvu ? p.mul1 : p.mul1 * p.mul_out;
  float s = 0.f;
  for (int n = lane; n < count; n += 32) {
    const int u = p.uvu ? n : n / p.mul_out, c = p.uvu ? n : n % p.mul_out;
    const float* x1u = r.x1 + p.off1 + u * p.d1;
    const float* gc = r.g != nullptr ? r.g + p.off_out + c * p.d3 : nullptr;
    float q = 0.f;
    for (const PsEntry* e = e0; e < e1; ++e) q += e->c * __ldg(x1u + e->i) * LoadG(a.g_mode, gc, e->k);
    const long long w_index = p.uvu ? static_cast<long long>(u) * p.mul2 + v
                                    : (static_cast<long long>(u) * p.mul2 + v) * p.mul_out + c;
    s += __ldg(r.w + p.w_off + w_index) * q;
  }
  for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
  return p.scale * s;
}

// dx2 contributions of the paths that read x1 segment `seg`, added into the shared row dx2.
// Items (path, v, j) are dealt to the warps round-robin across the segment's paths.
// dx2 of a 'uvu' path with an M table, first half: N[v][i][k] += sum over this thread's u of
// W[u,v] x1[u,i] G[u,k] (registers), summed over each warp by shuffles, over warps in shared memory.
// FinishX2GradN contracts N with the 3j nonzeros once per sample.
template <int D1, int D3>
__device__ __forceinline__ void PathX2GradN(const PsArgs& a, const PsPath& p, const Rows& r, float* n_table) {
  for (int v = 0; v < p.mul2; ++v) {
    float acc[D1 * D3];
#pragma unroll
    for (int t = 0; t < D1 * D3; ++t) acc[t] = 0.f;
    for (int u = threadIdx.x; u < p.mul1; u += kThreads) {
      const float wu = __ldg(r.w + p.w_off + static_cast<long long>(u) * p.mul2 + v);
      const float* gu = r.g != nullptr ? r.g + p.off_out + u * D3 : nullptr;
      float x[D1];
#pragma unroll
      for (int i = 0; i < D1; ++i) x[i] = wu * __ldg(r.x1 + p.off1 + u * D1 + i);
#pragma unroll
      for (int k = 0; k < D3; ++k) {
        const float gk = LoadG(a.g_mode, gu, k);
#pragma unroll
        for (int i = 0; i < D1; ++i) acc[i * D3 + k] += x[i] * gk;
      }
    }
#pragma unroll
    for (int t = 0; t < D1 * D3; ++t) {
      float sum = acc[t];
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      if (threadIdx.x % 32 == 0) atomicAdd(n_table + p.m_off + v * D1 * D3 + t, sum);
    }
  }
}

// PathX2GradN for the dimensions of l <= 2; false where it does not apply.
__device__ __forceinline__ bool PathX2GradNDispatch(const PsArgs& a, const PsPath& p, const Rows& r, float* n_table) {
  if (n_table == nullptr || p.m_off < 0) return false;
  switch (p.d1 * 8 + p.d3) {
    case 1 * 8 + 1: PathX2GradN<1, 1>(a, p, r, n_table); return true;
    case 1 * 8 + 3: PathX2GradN<1, 3>(a, p, r, n_table); return true;
    case 1 * 8 + 5: PathX2GradN<1, 5>(a, p, r, n_table); return true;
    case 3 * 8 + 1: PathX2GradN<3, 1>(a, p, r, n_table); return true;
    case 3 * 8 + 3: PathX2GradN<3, 3>(a, p, r, n_table); return true;
    case 3 * 8 + 5: PathX2GradN<3, 5>(a, p, r, n_table); return true;
    case 5 * 8 + 1: PathX2GradN<5, 1>(a, p, r, n_table); return true;
    case 5 * 8 + 3: PathX2GradN<5, 3>(a, p, r, n_table); return true;
    case 5 * 8 + 5: PathX2GradN<5, 5>(a, p, r, n_table); return true;
    default: return false;
  }
}

// dx2 from the N tables: dx2[v,j] += a sum_{C with j} C N[v,i,k], after a barrier.
__device__ __forceinline__ void FinishX2GradN(const PsArgs& a, const float* n_table, float* dx2) {
  for (int n = 0; n < a.num_paths; ++n) {
    const PsPath& p = a.paths[n];
    if (p.m_off < 0 || p.d1 > 5 || p.d3 > 5) continue;  // these took PathX2GradItem
    for (int item = threadIdx.x; item < p.mul2 * p.d2; item += kThreads) {
      const int v = item / p.d2, j = item - v * p.d2;
      const float* nv = n_table + p.m_off + v * p.d1 * p.d3;
      float s = 0.f;
      for (const PsEntry* e = Entries(a, p.by_j, j); e < Entries(a, p.by_j, j + 1); ++e) s += e->c * nv[e->i * p.d3 + e->k];
      atomicAdd(dx2 + p.off2 + item, p.scale * s);
    }
  }
}

__device__ __forceinline__ void SegmentX2Grad(const PsArgs& a, const PsSegment& seg, const Rows& r, float* dx2,
                                              float* n_table) {
  const int warp = threadIdx.x / 32;
  int base = 0;  // items dealt so far in this segment
  for (int n = seg.path_begin; n < seg.path_end; ++n) {
    const PsPath p = a.paths[a.order[n]];
    if (PathX2GradNDispatch(a, p, r, n_table)) continue;
    const int items = p.mul2 * p.d2;
    for (int item = (warp - base % kWarps + kWarps) % kWarps; item < items; item += kWarps) {
      const int v = item / p.d2, j = item - v * p.d2;
      const float s = PathX2GradItem(a, p, r, v, j);
      if (threadIdx.x % 32 == 0) atomicAdd(dx2 + p.off2 + item, s);
    }
    base += items;
  }
}

// One sample's backward over this block's share (blockIdx.y) of the x1 segments.
__device__ __forceinline__ void SampleBackward(const PsArgs& a, const Rows& r, const float* m, float* dx2_row,
                                               float* n_table) {
  for (int s = blockIdx.y; s < a.num_in1_segments; s += gridDim.y) {
    const PsSegment seg = a.segments[a.num_out_segments + s];
    if (a.dw != nullptr) SegmentWeightGrad(a, seg, r, m);
    if (a.dx1 != nullptr) SegmentX1Grad(a, seg, r, m);
    if (a.dx2 != nullptr) SegmentX2Grad(a, seg, r, dx2_row, n_table);
  }
}

__global__ void __launch_bounds__(kThreads, 6) PerSampleBackwardKernel(PsArgs a) {
  // The M tables, then (dx2 requested) the N tables and dim2 floats of the dx2 row.
  extern __shared__ float shared[];
  float* m = shared;
  float* n_table = a.dx2 != nullptr && a.m_size > 0 ? shared + a.m_size : nullptr;
  float* dx2_row = shared + a.m_size * (n_table != nullptr ? 2 : 1);
  for (int z = blockIdx.x; z < a.batch; z += gridDim.x) {
    if (!RowsInRange(a, z)) continue;  // uniform across the block
    const Rows r = RowsOf(a, z);
    if (a.dx2 != nullptr) {
      for (int c = threadIdx.x; c < a.dim2; c += kThreads) dx2_row[c] = 0.f;
    }
    if (a.m_size > 0 || a.dx2 != nullptr) BuildM(a, r, m, n_table);  // its barriers also order the dx2 row
    SampleBackward(a, r, m, dx2_row, n_table);
    if (a.dx2 != nullptr) {
      __syncthreads();
      if (n_table != nullptr) {
        FinishX2GradN(a, n_table, dx2_row);
        __syncthreads();
      }
      float* dx2 = a.dx2 + static_cast<long long>(z) * a.dim2;
      for (int c = threadIdx.x; c < a.dim2; c += kThreads) {
        if (gridDim.y > 1) {
          atomicAdd(dx2 + c, dx2_row[c]);  // the blocks of this sample meet here (zeroed by the launcher)
        } else {
          dx2[c] = dx2_row[c];
        }
      }
      __syncthreads();  // the row is zeroed again for the next sample
    }
  }
}

// Samples over x (grid-stride), and each sample's segments over y when samples alone give fewer
// than kTargetBlocks blocks (about 8 per SM on an H100).
constexpr int kTargetBlocks = 1024;

dim3 GridFor(int batch, int segments) {
  const int x = batch < (1 << 20) ? batch : (1 << 20);
  int y = (kTargetBlocks + x - 1) / x;
  y = y < segments ? y : segments;
  y = y < 8 ? y : 8;
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(y > 1 ? y : 1));
}

}  // namespace

cudaError_t LaunchPerSampleForward(const PsArgs& args, cudaStream_t stream) {
  if (args.batch <= 0) return cudaSuccess;
  if (args.m_size > kPerSampleMaxM) return cudaErrorInvalidValue;
  const size_t shared = sizeof(float) * args.m_size;
  PerSampleForwardKernel<<<GridFor(args.batch, args.num_out_segments), kThreads, shared, stream>>>(args);
  return cudaGetLastError();
}

int PerSampleBackwardSplit(const PsArgs& args) { return static_cast<int>(GridFor(args.batch, args.num_in1_segments).y); }

cudaError_t LaunchPerSampleBackward(const PsArgs& args, cudaStream_t stream) {
  if (args.batch <= 0 || (args.dw == nullptr && args.dx1 == nullptr && args.dx2 == nullptr)) return cudaSuccess;
  if ((args.dx2 != nullptr && args.dim2 > kPerSampleMaxDim2) || args.m_size > kPerSampleMaxM) {
    return cudaErrorInvalidValue;
  }
  const size_t shared = sizeof(float) * (args.dx2 != nullptr ? 2 * args.m_size + args.dim2 : args.m_size);
  PerSampleBackwardKernel<<<GridFor(args.batch, args.num_in1_segments), kThreads, shared, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
