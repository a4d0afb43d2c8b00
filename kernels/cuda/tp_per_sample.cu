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

// out[c, k] of one path (before the path weight).
__device__ __forceinline__ float PathForward(const PsArgs& a, const PsPath& p, const Rows& r, int c, int k) {
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
    return s;
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
  return s;
}

__global__ void __launch_bounds__(kThreads, 8) PerSampleForwardKernel(PsArgs a) {
  for (int z = blockIdx.x; z < a.batch; z += gridDim.x) {
    if (!RowsInRange(a, z)) continue;
    const Rows r = RowsOf(a, z);
    float* out = a.out + (a.dst != nullptr ? static_cast<long long>(a.dst[z]) : z) * a.dim_out;
    for (int s = 0; s < a.num_out_segments; ++s) {
      const PsSegment seg = a.segments[s];
      for (int t = threadIdx.x; t < seg.mul * seg.dim; t += kThreads) {
        const int c = t / seg.dim, k = t - c * seg.dim;
        float acc = 0.f;
        for (int n = seg.path_begin; n < seg.path_end; ++n) {
          const PsPath& p = a.paths[a.order[n]];
          acc += p.scale * PathForward(a, p, r, c, k);
        }
        if (a.dst != nullptr) {
          atomicAdd(out + seg.offset + t, acc);
        } else {
          out[seg.offset + t] = acc;
        }
      }
    }
  }
}

// dW of every path that reads x1 segment `seg`.
__device__ __forceinline__ void SegmentWeightGrad(const PsArgs& a, const PsSegment& seg, const Rows& r) {
  for (int n = seg.path_begin; n < seg.path_end; ++n) {
    const PsPath& p = a.paths[a.order[n]];
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
      s *= p.scale;
      float* dst = r.dw + p.w_off + t;
      if (a.dw_store == PsStore::kAssign) {
        *dst = s;
      } else if (a.dw_store == PsStore::kAdd) {
        *dst += s;
      } else {
        atomicAdd(dst, s);
      }
    }
  }
}

// dx1 of x1 segment `seg`: thread per (u, i), summed over the paths that read it.
__device__ __forceinline__ void SegmentX1Grad(const PsArgs& a, const PsSegment& seg, const Rows& r) {
  for (int t = threadIdx.x; t < seg.mul * seg.dim; t += kThreads) {
    const int u = t / seg.dim, i = t - u * seg.dim;
    float acc = 0.f;
    for (int n = seg.path_begin; n < seg.path_end; ++n) {
      const PsPath& p = a.paths[a.order[n]];
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
__device__ __forceinline__ void SegmentX2Grad(const PsArgs& a, const PsSegment& seg, const Rows& r, float* dx2) {
  const int warp = threadIdx.x / 32;
  int base = 0;  // items dealt so far in this segment
  for (int n = seg.path_begin; n < seg.path_end; ++n) {
    const PsPath& p = a.paths[a.order[n]];
    const int items = p.mul2 * p.d2;
    for (int item = (warp - base % kWarps + kWarps) % kWarps; item < items; item += kWarps) {
      const int v = item / p.d2, j = item - v * p.d2;
      const float s = PathX2GradItem(a, p, r, v, j);
      if (threadIdx.x % 32 == 0) atomicAdd(dx2 + p.off2 + item, s);
    }
    base += items;
  }
}

__global__ void __launch_bounds__(kThreads, 8) PerSampleBackwardKernel(PsArgs a) {
  extern __shared__ float dx2_row[];  // dim2 floats when dx2 is requested
  for (int z = blockIdx.x; z < a.batch; z += gridDim.x) {
    if (!RowsInRange(a, z)) continue;  // uniform across the block
    const Rows r = RowsOf(a, z);
    if (a.dx2 != nullptr) {
      for (int c = threadIdx.x; c < a.dim2; c += kThreads) dx2_row[c] = 0.f;
      __syncthreads();
    }
    for (int s = 0; s < a.num_in1_segments; ++s) {
      const PsSegment seg = a.segments[a.num_out_segments + s];
      if (a.dw != nullptr) SegmentWeightGrad(a, seg, r);
      if (a.dx1 != nullptr) SegmentX1Grad(a, seg, r);
      if (a.dx2 != nullptr) SegmentX2Grad(a, seg, r, dx2_row);
    }
    if (a.dx2 != nullptr) {
      __syncthreads();
      float* dx2 = a.dx2 + static_cast<long long>(z) * a.dim2;
      for (int c = threadIdx.x; c < a.dim2; c += kThreads) dx2[c] = dx2_row[c];
      __syncthreads();  // the row is zeroed again for the next sample
    }
  }
}

unsigned GridFor(int batch) { return static_cast<unsigned>(batch < (1 << 20) ? batch : (1 << 20)); }

}  // namespace

cudaError_t LaunchPerSampleForward(const PsArgs& args, cudaStream_t stream) {
  if (args.batch <= 0) return cudaSuccess;
  PerSampleForwardKernel<<<GridFor(args.batch), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t LaunchPerSampleBackward(const PsArgs& args, cudaStream_t stream) {
  if (args.batch <= 0 || (args.dw == nullptr && args.dx1 == nullptr && args.dx2 == nullptr)) return cudaSuccess;
  if (args.dx2 != nullptr && args.dim2 > kPerSampleMaxDim2) return cudaErrorInvalidValue;
  const size_t shared = args.dx2 != nullptr ? sizeof(float) * args.dim2 : 0;
  PerSampleBackwardKernel<<<GridFor(args.batch), kThreads, shared, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
