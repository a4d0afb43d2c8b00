// Forward-shaped tensor-product GEMM, all paths of a plan in one launch.
//
// Computes, for every path (descriptor TpGemmPath, see tp_kernels.h):
//   out[z, off_out + n*R + r] += scale * sum_{p,q} Wt[p, q, n] * A[z*R + r, p*Q + q]
//   A[z*R + r, p*Q + q] = sum_{(s,t,c) in nz(r)} c * a[z, off_a + p*S + s] * b[z, off_b + q*T + t]
//                       = sum_t Pz[r, t] * b[z, off_b + q*T + t],   Pz[r, t] = sum_{s,(s,t,c) in nz(r)} c a[z, p, s]
// i.e. a GEMM with M = batch*R rows, K = P*Q, N columns, whose A operand is generated tile by tile
// in shared memory from the inputs and the sparse 3j block (never materialized in device memory).
// Used for the forward pass (a = x1, b = x2, r = k) and the input gradients (grad_x1: a = x2, b = g,
// r = i; grad_x2: a = x1, b = g, r = j) with permuted weight strides.
//
// Grid: one block per TpGemmWork item (path, sample tile, column tile, K slice); the host orders items
// with the sample tile fastest so that blocks sharing a W slice run together and hit L2. K is split
// across blocks when tiles are few; partial sums meet in `out` via atomicAdd (zeroed by the host).
// Block: 256 threads = 8 warps; a tile holds floor(128/R) whole samples (128 rows) x 128 (or 32)
// columns. Per K tile of 32: the W slice for the next tile is in flight (cp.async, two stages) while
// the block builds Pz in shared memory, then every warp generates whole samples' rows of A
// (lane = column q, b[z, q, :] held in registers for the sample's R rows), then mma.sync
// (3xTF32 / TF32 / BF16) from shared memory. Paths with other shapes use a generic generator.
//
// Floor (forward of the seed shape, batch 64): 2 * batch * sum_p R*P*Q*N = 13.7 GFLOP and reading W
// once (126 MB): 0.042 ms at 3 TB/s, 0.028 ms of TF32 tensor-core time at ~495 TFLOP/s.
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda {
namespace {

constexpr int kLdp = 8;  // floats per row of Pz in shared memory (T <= 7)
// Two blocks per SM (128 registers a thread) where the accumulators allow it without spilling;
// 3xTF32 keeps split operands in registers and runs one block of 255.

// Shared memory of one block: the A tile in MMA operand format (ATile), two stages of the W tile
// (fp32, sB[k][n]) and Pz.
// Shared memory of one block: rings of kStages A tiles (MMA operand format) and W tiles, and Pz.
// Three stages let one barrier per K tile order everything: while warps multiply tile s, the
// others may already write tile s + 1, and tile s + 2 reuses the buffers of s - 1.
constexpr int kStages = 3;
template <MmaPrecision kPrec, class Cfg>
struct GemmSmem {
  static constexpr int kLdb = Cfg::BN + 8;  // B fragment reads: bank = 8t + g
  static constexpr int kABytes = ATile<kPrec>::BytesFor(Cfg::BM);
  static constexpr int kBFloats = kTileK * kLdb;
  static constexpr int kPFloats = Cfg::BM * kLdp;
  static constexpr size_t kBytes = kStages * kABytes + sizeof(float) * (kStages * kBFloats + kPFloats);
};

// Starts the copy of W's K tile [k0, k0 + 32) x [n0, n0 + BN) into sB (zeros outside).
template <class Cfg, int kLdb>
__device__ __forceinline__ void IssueWTile(const TpGemmArgs& args, const TpGemmPath& path, int k0, int k_end, int n0,
                                           float* sB, int tid) {
  constexpr int BN = Cfg::BN;
  if (path.w_vec4 && path.fast_t != 0 && (reinterpret_cast<unsigned long long>(args.w) & 15) == 0) {
    // One p for the whole K tile (Q % 32 == 0, k_end - k0 a multiple of 32): rows are consecutive q,
    // so every copy is the tile's base plus a per-thread constant.
    const int p = k0 / path.Q;
    const float* tile = args.w + path.w_offset + p * path.w_stride_p + (k0 - p * path.Q) * path.w_stride_q + n0;
    constexpr int kPerThread = kTileK * BN / 4 / Cfg::kThreads;
    constexpr int kRowsPerPass = Cfg::kThreads / (BN / 4);
    const int k_first = tid / (BN / 4), n = 4 * (tid % (BN / 4));
    const bool n_valid = n0 + n < path.N;
    const float* src = tile + k_first * path.w_stride_q + n;
    float* dst = sB + k_first * kLdb + n;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      CpAsync16(dst + i * kRowsPerPass * kLdb, n_valid ? src + i * kRowsPerPass * path.w_stride_q : args.w, n_valid);
    }
  } else if (path.w_vec4 && (reinterpret_cast<unsigned long long>(args.w) & 15) == 0) {
    for (int e = tid; e < kTileK * BN / 4; e += Cfg::kThreads) {
      const int k = e / (BN / 4), n = 4 * (e - k * (BN / 4));
      const int kk = k0 + k;
      const bool valid = kk < k_end && n0 + n < path.N;
      const float* src = args.w;
      if (valid) {
        const int p = kk / path.Q, q = kk - p * path.Q;
        src = args.w + path.w_offset + p * path.w_stride_p + q * path.w_stride_q + n0 + n;
      }
      CpAsync16(sB + k * kLdb + n, src, valid);
    }
  } else {
    for (int e = tid; e < kTileK * BN; e += Cfg::kThreads) {
      const int k = e % kTileK, n = e / kTileK;  // consecutive lanes: consecutive q (the contiguous index)
      const int kk = k0 + k;
      const bool valid = kk < k_end && n0 + n < path.N;
      const float* src = args.w;
      if (valid) {
        const int p = kk / path.Q, q = kk - p * path.Q;
        src = args.w + path.w_offset + p * path.w_stride_p + q * path.w_stride_q +
              static_cast<long long>(n0 + n) * path.w_stride_n;
      }
      CpAsync4(sB + k * kLdb + n, src, valid);
    }
  }
  CpAsyncCommit();
}

// Any T and Q: every element from the 3j nonzeros (lane = column, warp-uniform row).
template <MmaPrecision kPrec, class Cfg>
__device__ __forceinline__ void GenerateGeneric(const TpGemmArgs& args, const TpGemmPath& path, const int* roff,
                                                int z0, int rows_valid, int k0, int k_end, void* sA, int lane,
                                                int warp) {
  const int kk = k0 + lane;
  const bool k_valid = kk < k_end;
  const int p = k_valid ? kk / path.Q : 0;
  const int q = k_valid ? kk - p * path.Q : 0;
  for (int row = warp; row < rows_valid; row += Cfg::kWarps) {
    float v = 0.f;
    if (k_valid) {
      const int zl = row / path.R;
      const int r = row - zl * path.R;
      const long long z = z0 + zl;
      const float* a = args.a + z * args.a_row_stride + path.a_offset + p * path.S;
      const float* b = args.b + z * args.b_row_stride + path.b_offset + q * path.T;
      const int e_end = __ldg(roff + r + 1);
      for (int e = __ldg(roff + r); e < e_end; ++e) {
        const NzEntry nz = args.nz[e];
        v += nz.c * __ldg(a + nz.s) * __ldg(b + nz.t);
      }
    }
    ATile<kPrec>::Store(sA, Cfg::BM, row, lane, v);
  }
}

// Fast path (T = kT in {1, 3, 5, 7}, Q % 32 == 0): one p per K tile, and p stays for Q/32 tiles.
// Pz[row][t] = sum_{(s,t,c) in nz(r)} c * a[z, p, s] for the tile's rows, rebuilt only when p changes.
__device__ __forceinline__ void ComputePz(const TpGemmArgs& args, const TpGemmPath& path, const int* roff, int z0,
                                          int rows_valid, int p, float* sP, int tid, int threads) {
  const int R = path.R;
  for (int row = tid; row < rows_valid; row += threads) {
    const int zl = row / R;
    const int r = row - zl * R;
    const float* a = args.a + (z0 + zl) * args.a_row_stride + path.a_offset + p * path.S;
    float* pr = sP + row * kLdp;
#pragma unroll
    for (int t = 0; t < kLdp; ++t) pr[t] = 0.f;
    const int e_end = __ldg(roff + r + 1);
    for (int e = __ldg(roff + r); e < e_end; ++e) {
      const NzEntry nz = args.nz[e];
      pr[nz.t] += nz.c * __ldg(a + nz.s);
    }
  }
}

// A[row][lane] = sum_t Pz[row][t] * b[z, q, t]: each warp takes whole samples, kSamples at a time so
// that their b loads are in flight together.
template <MmaPrecision kPrec, class Cfg, int kT>
__device__ __forceinline__ void GenerateFromPz(const TpGemmArgs& args, const TpGemmPath& path, int z0,
                                               int rows_valid, int q, const float* sP, void* sA, int lane,
                                               int warp) {
  constexpr int kSamples = kT <= 3 ? 4 : 2;
  const int R = path.R;
  const int samples = rows_valid / R;
  for (int zl0 = warp * kSamples; zl0 < samples; zl0 += Cfg::kWarps * kSamples) {
    float bv[kSamples][kT];
#pragma unroll
    for (int i = 0; i < kSamples; ++i) {
      const int zl = min(zl0 + i, samples - 1);
      const float* b = args.b + (z0 + zl) * args.b_row_stride + path.b_offset + q * kT;
#pragma unroll
      for (int t = 0; t < kT; ++t) bv[i][t] = __ldg(b + t);
    }
#pragma unroll
    for (int i = 0; i < kSamples; ++i) {
      if (zl0 + i >= samples) break;
      for (int r = 0; r < R; ++r) {
        const int row = (zl0 + i) * R + r;
        const float4* pr4 = reinterpret_cast<const float4*>(sP + row * kLdp);
        const float4 lo = pr4[0];
        const float pr[8] = {lo.x, lo.y, lo.z, lo.w, 0.f, 0.f, 0.f, 0.f};
        float v = 0.f;
        if constexpr (kT > 4) {
          const float4 hi = pr4[1];
          const float prh[4] = {hi.x, hi.y, hi.z, hi.w};
#pragma unroll
          for (int t = 0; t < kT; ++t) v += (t < 4 ? pr[t] : prh[t - 4]) * bv[i][t];
        } else {
#pragma unroll
          for (int t = 0; t < kT; ++t) v += pr[t] * bv[i][t];
        }
        ATile<kPrec>::Store(sA, Cfg::BM, row, lane, v);
      }
    }
  }
}

template <MmaPrecision kPrec, class Cfg>
__global__ void __launch_bounds__(256, kPrec == MmaPrecision::k3xTf32 ? 1 : 2) TpGemmKernel(const TpGemmArgs args) {
  using Smem = GemmSmem<kPrec, Cfg>;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = kTileK;
  extern __shared__ float4 smem_raw[];
  char* const sA0 = reinterpret_cast<char*>(smem_raw);  // kStages A tiles, kABytes apart
  float* const sB0 = reinterpret_cast<float*>(sA0 + kStages * Smem::kABytes);  // kStages W tiles
  float* const sP = sB0 + kStages * Smem::kBFloats;

  const TpGemmWork item = args.work[blockIdx.x];
  const TpGemmPath path = args.paths[item.path];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int R = path.R;
  const int z0 = item.z0;
  const int rows_valid = min(BM / R, args.batch - z0) * R;
  const int n0 = item.n0;
  const int warp_m0 = (warp / Cfg::WN) * (BM / Cfg::WM);
  const int warp_n0 = (warp % Cfg::WN) * (BN / Cfg::WN);
  const int* roff = args.roff + path.roff_begin;

  // Rows past the last sample stay zero for the whole block.
  for (int i = rows_valid * BK + tid; i < BM * BK; i += Cfg::kThreads)
#pragma unroll
    for (int st = 0; st < kStages; ++st) ATile<kPrec>::StoreZero(sA0 + st * Smem::kABytes, BM, i / BK, i % BK);

  float acc[Cfg::MT][Cfg::NT][4];
#pragma unroll
  for (int mt = 0; mt < Cfg::MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < Cfg::NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;

  // Writes the A tile of K tile k0 into stage st (rebuilding Pz when p changes).
  int pz_p = -1;  // the p that sP holds
  auto generate = [&](int k0, int st) {
    void* sA = sA0 + st * Smem::kABytes;
    if (path.fast_t != 0) {
      const int p = k0 / path.Q;
      if (p != pz_p) {  // every reader of the old sP passed the barrier of the previous K tile
        ComputePz(args, path, roff, z0, rows_valid, p, sP, tid, Cfg::kThreads);
        __syncthreads();
        pz_p = p;
      }
      const int q = k0 - p * path.Q + lane;
      switch (path.fast_t) {
        case 1: GenerateFromPz<kPrec, Cfg, 1>(args, path, z0, rows_valid, q, sP, sA, lane, warp); break;
        case 3: GenerateFromPz<kPrec, Cfg, 3>(args, path, z0, rows_valid, q, sP, sA, lane, warp); break;
        case 5: GenerateFromPz<kPrec, Cfg, 5>(args, path, z0, rows_valid, q, sP, sA, lane, warp); break;
        default: GenerateFromPz<kPrec, Cfg, 7>(args, path, z0, rows_valid, q, sP, sA, lane, warp); break;
      }
    } else {
      GenerateGeneric<kPrec, Cfg>(args, path, roff, z0, rows_valid, k0, item.k_end, sA, lane, warp);
    }
  };

  // Prologue: K tile 0 (W in flight, A generated).
  IssueWTile<Cfg, Smem::kLdb>(args, path, item.k_begin, item.k_end, n0, sB0, tid);
  generate(item.k_begin, 0);
  // Tile 1's generation may rebuild sP (when p changes at the next tile, e.g. Q == 32): every warp
  // must be done reading it for tile 0. Later tiles are ordered by the barrier before each MMA.
  __syncthreads();
  int stage = 0;
  for (int k0 = item.k_begin; k0 < item.k_end; k0 += BK) {
    const int next = stage == kStages - 1 ? 0 : stage + 1;
    // Tile k0 + BK into stage `next`: its last readers (tile k0 - 2BK) passed the previous barrier.
    if (k0 + BK < item.k_end) {
      IssueWTile<Cfg, Smem::kLdb>(args, path, k0 + BK, item.k_end, n0, sB0 + next * Smem::kBFloats, tid);
      generate(k0 + BK, next);
    } else {
      CpAsyncCommit();  // an empty group keeps the wait count below uniform
    }
    CpAsyncWait<1>();  // this thread's copies of W tile k0 have landed
    __syncthreads();   // ... everyone's, and A tile k0 is complete
    WarpMmaLdm<kPrec, Cfg::MT, Cfg::NT, BM, Smem::kLdb>(acc, sA0 + stage * Smem::kABytes,
                                                        sB0 + stage * Smem::kBFloats, warp_m0, warp_n0, lane);
    stage = next;
  }
  CpAsyncWait<0>();

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < Cfg::MT; ++mt)
#pragma unroll
    for (int i2 = 0; i2 < 2; ++i2) {
      const int m = warp_m0 + mt * 16 + g + 8 * i2;
      if (m >= rows_valid) continue;
      const int zl = m / R;
      const int r = m - zl * R;
      float* out_row = args.out + (z0 + zl) * args.out_row_stride + path.out_offset +
                       (args.out_ir_mul ? r * path.N : r);
      const int n_stride = args.out_ir_mul ? 1 : R;
#pragma unroll
      for (int nt = 0; nt < Cfg::NT; ++nt)
#pragma unroll
        for (int i1 = 0; i1 < 2; ++i1) {
          const int n = n0 + warp_n0 + nt * 8 + 2 * t + i1;
          if (n < path.N) atomicAdd(out_row + n * n_stride, path.scale * acc[mt][nt][2 * i2 + i1]);
        }
    }
}

template <MmaPrecision kPrec, class Cfg>
cudaError_t LaunchConfig(const TpGemmArgs& args, cudaStream_t stream) {
  TpGemmKernel<kPrec, Cfg><<<args.num_work, Cfg::kThreads, GemmSmem<kPrec, Cfg>::kBytes, stream>>>(args);
  return cudaGetLastError();
}

template <MmaPrecision kPrec, class Cfg>
cudaError_t Configure() {
  return cudaFuncSetAttribute(TpGemmKernel<kPrec, Cfg>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(GemmSmem<kPrec, Cfg>::kBytes));
}

}  // namespace

cudaError_t ConfigureTpGemmKernels() {
  return ForEachPrecisionAndTile([](auto precision, auto tile) {
    return Configure<decltype(precision)::value, typename decltype(tile)::type>();
  });
}

cudaError_t LaunchTpGemm(MmaPrecision precision, TileShape shape, const TpGemmArgs& args, cudaStream_t stream) {
  if (args.num_work == 0) return cudaSuccess;
  return DispatchPrecisionAndTile(precision, shape, [&](auto precision_constant, auto tile) {
    return LaunchConfig<decltype(precision_constant)::value, typename decltype(tile)::type>(args, stream);
  });
}

}  // namespace tpserve::cuda
