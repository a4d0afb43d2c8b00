// What both factored forward kernels share (tp_forward_factored.cu on mma.sync, tp_forward_wgmma.cu
// on wgmma): the ring of W tiles in shared memory, and the path's 3j block in dense form.
#pragma once

#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda::factored {

// W tiles of kTileK rows x kCols columns, in the (p, q-chunk) order of a work item's p range, in a
// ring of kStages shared-memory stages (rows kLdw floats apart), filled by cp.async from kThreads
// threads (`tid` is this one's index among them) that own columns [col0, col0 + kCols) of the
// block's tile; `num_tiles` = (k_end - k_begin) * kchunks, kchunks = Q / kTileK (the caller's
// loop counts them too). Each thread copies the same 16-byte pieces of every tile, so only a
// running source pointer and the stage change. IssueNext() commits a group every call (an empty one past the last
// tile), so that CpAsyncWait<kStages - 2>() before tile i means tile i has landed.
template <int kThreads, int kCols, int kLdw, int kStages>
class WTileRing {
 public:
  __device__ __forceinline__ WTileRing(const TpGemmArgs& args, const TpGemmPath& path, const TpGemmWork& item,
                                       int num_tiles, int kchunks, int tid, int col0, float* sW)
      : kchunks_(kchunks), num_tiles_(num_tiles) {
    const int copy_k = tid / (kCols / 4), copy_n = col0 + 4 * (tid % (kCols / 4));
    valid_ = item.n0 + copy_n < path.N;
    fallback_ = args.w;
    row_step_ = path.w_stride_q;
    src_ = args.w + path.w_offset + static_cast<long long>(item.k_begin) * path.w_stride_p + copy_k * row_step_ +
           item.n0 + copy_n;
    chunk_step_ = kTileK * row_step_;
    p_step_ = path.w_stride_p - (kchunks_ - 1) * chunk_step_;  // last chunk of p -> first of p + 1
    dst0_ = sW + copy_k * kLdw + copy_n;
  }

  __device__ __forceinline__ void IssueNext() {
    if (issued_ < num_tiles_) {
      float* dst = dst0_ + stage_ * (kTileK * kLdw);
#pragma unroll
      for (int i = 0; i < kCopies; ++i)
        CpAsync16(dst + i * kRowsPerCopy * kLdw, valid_ ? src_ + i * kRowsPerCopy * row_step_ : fallback_, valid_);
      if (++chunk_ == kchunks_) {
        chunk_ = 0;
        src_ += p_step_;
      } else {
        src_ += chunk_step_;
      }
      stage_ = stage_ == kStages - 1 ? 0 : stage_ + 1;
    }
    ++issued_;
    CpAsyncCommit();
  }

 private:
  static constexpr int kCopies = kTileK * kCols / 4 / kThreads;
  static constexpr int kRowsPerCopy = kThreads / (kCols / 4);
  static_assert(kCopies >= 1 && kRowsPerCopy * (kCols / 4) == kThreads, "threads must tile a W row chunk");

  const int kchunks_, num_tiles_;
  bool valid_;
  const float* fallback_;  // a valid address for the zero-filling copies past N
  const float* src_;
  float* dst0_;
  long long row_step_, chunk_step_, p_step_;
  int chunk_ = 0, issued_ = 0, stage_ = 0;
};

// The block's samples of x2 (b), a warp per sample with kLoads loads in flight per lane before
// their stores: store(q, t, zl, value) for every element of samples zl < kSamples (zeros past the
// batch: `samples` are live). Latency-bound, hence the loads first.
template <int kT, int kSamples, int kThreads, int kLoads, class Store>
__device__ __forceinline__ void StageX2(const TpGemmArgs& args, const TpGemmPath& path, int z0, int samples,
                                        int warp, int lane, Store&& store) {
  const int per_sample = path.Q * kT;
  for (int zl = warp; zl < kSamples; zl += kThreads / 32) {
    const bool live = zl < samples;
    const float* row = args.b + static_cast<long long>(z0 + (live ? zl : 0)) * args.b_row_stride + path.b_offset;
    for (int idx0 = lane; idx0 < per_sample; idx0 += kLoads * 32) {
      float v[kLoads];
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const int idx = idx0 + 32 * i;
        v[i] = live && idx < per_sample ? __ldg(row + idx) : 0.f;
      }
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const int idx = idx0 + 32 * i;
        if (idx >= per_sample) break;
        const int q = idx / kT;
        store(q, idx - q * kT, zl, v[i]);
      }
    }
  }
}

// The path's 3j coefficients into sC[(r * kMaxS + s) * kMaxR + t] (the caller zeroed the block:
// entries where C has none stay zero, so the Pz loops run fixed sizes).
template <int kMaxR, int kMaxS>
__device__ __forceinline__ void FillCBlock(const TpGemmArgs& args, const TpGemmPath& path, int R, int tid,
                                           int threads, float* sC) {
  const int* roff = args.roff + path.roff_begin;
  for (int r = 0; r < R; ++r) {
    const int e_begin = __ldg(roff + r), e_end = __ldg(roff + r + 1);
    for (int e = e_begin + tid; e < e_end; e += threads) {
      const NzEntry nz = args.nz[e];
      sC[(r * kMaxS + nz.s) * kMaxR + nz.t] = nz.c;  // (s, t) unique per r
    }
  }
}

// One sample's x1 values of path row pp, a[s] = x1[z, a_offset + pp * S + s] for s < S (`row` points
// at the sample's path block), into registers; zeros past the path's rows (pp >= p_end), past S
// and for a sample past the batch (!live), so the Pz loops run fixed kMaxS steps. Both factored
// kernels load x1 one row ahead with it. A function of its own, forced inline with the array by
// reference: the array stays in registers (a lambda capturing it by reference put it in local
// memory; ptxas -v shows the same registers and spills as the macro this replaced).
template <int kMaxS>
__device__ __forceinline__ void LoadA(float (&a)[kMaxS], const float* row, int pp, int p_end, int S, bool live) {
#pragma unroll
  for (int s = 0; s < kMaxS; ++s) a[s] = live && pp < p_end && s < S ? __ldg(row + pp * S + s) : 0.f;
}

}  // namespace tpserve::cuda::factored
