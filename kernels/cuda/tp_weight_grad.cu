// Weight gradient of the tensor product, all paths of a plan in one launch.
//
// Computes, for every path (descriptor WeightGradPath, see tp_kernels.h):
//   dW[w_offset + (p*Q + q)*N + n] (= | += | atomic +=) scale * sum_{z,r} A[z*R + r, p*Q + q] * g[z, off_g + r*N + n]
//   (g in the per-irrep transposed layout g_ir_mul, see loss_grad.cu)
//   A[z*R + r, p*Q + q] = sum_{(s,t,c) in nz(r)} c * x1[z, off_1 + p*S + s] * x2[z, off_2 + q*T + t]
//                       = sum_t Pz[r, t, p] * x2[z, off_2 + q*T + t]
// i.e. a GEMM with M = P*Q (the weight rows), K = batch*R, N output multiplicity, whose A^T operand is
// generated in shared memory from x1, x2 and the 3j nonzeros.
//
// Grid: one block per WeightGradWork item (path, 128-row tile of (p, q), column tile, K slice). With
// enough tiles each block owns its dW tile and reduces over the whole batch, writing dW exactly once;
// with few tiles K is split and slices meet through atomicAdd (host zeroes dW unless accumulating).
// Block: 256 threads = 8 warps. Per K tile of 32 (z, r) rows: the g slice of the next tile is in
// flight (cp.async, two stages); the block builds Pz for its 32 rows x 4 column groups (Q % 32 == 0
// makes p uniform in each group of 32 columns); each warp generates 4 consecutive rows of A^T
// (lane + 32j = column; x2[z, q, :] in registers while z repeats); then mma.sync. Other shapes use a
// generic generator straight from the 3j nonzeros.
//
// Floor (seed shape, batch 64): 13.7 GFLOP and writing dW once (126 MB): 0.042 ms at 3 TB/s.
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda {
namespace {

constexpr int kLdp = 8;
constexpr int kPzRows = 4 * kTileK;  // Pz is built for 4 K tiles at a time

template <class Cfg>
struct WgSmem {
  static constexpr int kCols = Cfg::BM / 32;  // column groups per lane
  static constexpr int kLda = Cfg::BM + 8;    // A^T stored k-major: fragment bank = 8t + g
  static constexpr int kLdb = Cfg::BN + 8;
  static constexpr int kAFloats = kTileK * kLda;
  static constexpr int kBFloats = kTileK * kLdb;
  static constexpr int kPFloats = kPzRows * kCols * kLdp;
  static constexpr size_t kBytes = sizeof(float) * (kAFloats + 2 * kBFloats + kPFloats);
};

// Starts the copy of g's K tile: sB[k][n] = g_ir_mul[z, off_g + r*N + n0 + n] for rows k = (z, r)
// from k0: each row is contiguous. Each warp copies 4 consecutive rows (one division for the four).
template <class Cfg>
__device__ __forceinline__ void IssueGTile(const WeightGradArgs& args, const WeightGradPath& path, float inv_r, int k0,
                                           int k_end, int n0, float* sB, int lane, int warp) {
  constexpr int BN = Cfg::BN, kLdb = WgSmem<Cfg>::kLdb;
  constexpr int kRowsPerWarp = kTileK / Cfg::kWarps;
  const int R = path.R;
  const bool vec4 = path.g_vec4 && (args.g_row_stride & 3) == 0 && (reinterpret_cast<unsigned long long>(args.g) & 15) == 0;
  int z, r;
  DivMod(k0 + warp * kRowsPerWarp, R, inv_r, z, r);
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int k = warp * kRowsPerWarp + i;
    const bool row_valid = k0 + k < k_end;
    const float* row = args.g + static_cast<long long>(z) * args.g_row_stride + path.g_offset + r * path.N + n0;
    if (vec4) {
#pragma unroll
      for (int c = 0; c < BN / 128 + (BN % 128 != 0); ++c) {
        const int n = 4 * (lane + 32 * c);
        if (n < BN) {
          const bool valid = row_valid && n0 + n < path.N;
          CpAsync16(sB + k * kLdb + n, valid ? row + n : args.g, valid);
        }
      }
    } else {
#pragma unroll
      for (int c = 0; c < BN / 32; ++c) {
        const int n = lane + 32 * c;
        const bool valid = row_valid && n0 + n < path.N;
        CpAsync4(sB + k * kLdb + n, valid ? row + n : args.g, valid);
      }
    }
    if (++r == R) {
      r = 0;
      ++z;
    }
  }
  CpAsyncCommit();
}

template <MmaPrecision kPrec, class Cfg>
__device__ __forceinline__ void GenerateGeneric(const WeightGradArgs& args, const WeightGradPath& path,
                                                const int* roff, const int (&a_col)[WgSmem<Cfg>::kCols],
                                                const int (&b_col)[WgSmem<Cfg>::kCols],
                                                const bool (&m_valid)[WgSmem<Cfg>::kCols], int k0, int k_end,
                                                float* sA, int lane, int warp) {
  constexpr int kCols = WgSmem<Cfg>::kCols, kLda = WgSmem<Cfg>::kLda;
  for (int krow = warp; krow < kTileK; krow += Cfg::kWarps) {
    const int kidx = k0 + krow;
    float v[kCols];
#pragma unroll
    for (int j = 0; j < kCols; ++j) v[j] = 0.f;
    if (kidx < k_end) {
      const int z = kidx / path.R;
      const int r = kidx - z * path.R;
      const float* x1 = args.x1 + z * args.x1_row_stride;
      const float* x2 = args.x2 + z * args.x2_row_stride;
      const int e_end = __ldg(roff + r + 1);
      for (int e = __ldg(roff + r); e < e_end; ++e) {
        const NzEntry nz = args.nz[e];
#pragma unroll
        for (int j = 0; j < kCols; ++j)
          if (m_valid[j]) v[j] += nz.c * __ldg(x1 + a_col[j] + nz.s) * __ldg(x2 + b_col[j] + nz.t);
      }
    }
#pragma unroll
    for (int j = 0; j < kCols; ++j)
      sA[krow * kLda + lane + 32 * j] = kPrec == MmaPrecision::kTf32 ? __uint_as_float(ToTf32(v[j])) : v[j];
  }
}

// Fast path (T = kT in {1, 3, 5, 7}, Q % 32 == 0: p is uniform in each group of 32 columns).
// Pz[krow][j][t] = sum_{(s,t,c) in nz(r)} c * x1[z, p_j, s] for kPzRows rows (z, r) from k_base.
template <class Cfg>
__device__ __forceinline__ void ComputePz(const WeightGradArgs& args, const WeightGradPath& path, const int* roff,
                                          float inv_r, int m0, int k_base, int k_end, float* sP, int tid) {
  constexpr int kCols = WgSmem<Cfg>::kCols;
  const int R = path.R;
  const int rows_total = path.P * path.Q;
  for (int idx = tid; idx < kPzRows * kCols; idx += Cfg::kThreads) {
    const int krow = idx / kCols, j = idx - (idx / kCols) * kCols;
    const int kidx = k_base + krow;
    const int m = m0 + 32 * j;
    float* pr = sP + idx * kLdp;
#pragma unroll
    for (int t = 0; t < kLdp; ++t) pr[t] = 0.f;
    if (kidx < k_end && m < rows_total) {
      int z, r;
      DivMod(kidx, R, inv_r, z, r);
      const float* a = args.x1 + static_cast<long long>(z) * args.x1_row_stride + path.a_offset + (m / path.Q) * path.S;
      const int e_end = __ldg(roff + r + 1);
      for (int e = __ldg(roff + r); e < e_end; ++e) {
        const NzEntry nz = args.nz[e];
        pr[nz.t] += nz.c * __ldg(a + nz.s);
      }
    }
  }
}

// A^T[krow][lane + 32j] = sum_t Pz[krow][j][t] * x2[z, q_j, t]; each warp takes 4 consecutive rows,
// which mostly share z, so x2 values are loaded once per z.
template <MmaPrecision kPrec, class Cfg, int kT>
__device__ __forceinline__ void GenerateFromPz(const WeightGradArgs& args, const WeightGradPath& path,
                                               const int (&b_col)[WgSmem<Cfg>::kCols],
                                               const bool (&m_valid)[WgSmem<Cfg>::kCols], float inv_r, int k0,
                                               int k_end, const float* sP_tile, float* sA, int lane, int warp) {
  constexpr int kCols = WgSmem<Cfg>::kCols, kLda = WgSmem<Cfg>::kLda;
  constexpr int kRowsPerWarp = kTileK / Cfg::kWarps;
  const int R = path.R;
  int z_first, r_first;
  DivMod(k0 + warp * kRowsPerWarp, R, inv_r, z_first, r_first);
#pragma unroll
  for (int j = 0; j < kCols; ++j) {
    int z_loaded = -1;
    int z = z_first, r = r_first;
    float bv[kT];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int krow = warp * kRowsPerWarp + i;
      const int kidx = k0 + krow;
      float v = 0.f;
      if (kidx < k_end) {
        if (z != z_loaded) {
          const float* x2 = args.x2 + static_cast<long long>(z) * args.x2_row_stride + b_col[j];
#pragma unroll
          for (int t = 0; t < kT; ++t) bv[t] = m_valid[j] ? __ldg(x2 + t) : 0.f;
          z_loaded = z;
        }
        const float* pr = sP_tile + (krow * kCols + j) * kLdp;
#pragma unroll
        for (int t = 0; t < kT; ++t) v += pr[t] * bv[t];
      }
      sA[krow * kLda + lane + 32 * j] = kPrec == MmaPrecision::kTf32 ? __uint_as_float(ToTf32(v)) : v;
      if (++r == R) {
        r = 0;
        ++z;
      }
    }
  }
}

template <MmaPrecision kPrec, class Cfg>
__global__ void __launch_bounds__(256, kPrec == MmaPrecision::k3xTf32 ? 1 : 2) WeightGradKernel(const WeightGradArgs args) {
  using Smem = WgSmem<Cfg>;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = kTileK;
  constexpr int kCols = Smem::kCols;
  extern __shared__ float4 smem_raw[];
  float* sA = reinterpret_cast<float*>(smem_raw);
  float* const sB0 = sA + Smem::kAFloats;  // two stages, kBFloats apart
  float* sP = sA + Smem::kAFloats + 2 * Smem::kBFloats;

  const WeightGradWork item = args.work[blockIdx.x];
  const WeightGradPath path = args.paths[item.path];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m0 = item.m0, n0 = item.n0;
  const int rows_total = path.P * path.Q;
  const int warp_m0 = (warp / Cfg::WN) * (BM / Cfg::WM);
  const int warp_n0 = (warp % Cfg::WN) * (BN / Cfg::WN);
  const int* roff = args.roff + path.roff_begin;
  const float inv_r = 1.f / static_cast<float>(path.R);

  // This lane's columns of A^T (weight rows m = p*Q + q), fixed for the whole block.
  int a_col[kCols], b_col[kCols];
  bool m_valid[kCols];
#pragma unroll
  for (int j = 0; j < kCols; ++j) {
    const int m = m0 + lane + 32 * j;
    m_valid[j] = m < rows_total;
    const int p = m_valid[j] ? m / path.Q : 0;
    const int q = m_valid[j] ? m - p * path.Q : 0;
    a_col[j] = path.a_offset + p * path.S;
    b_col[j] = path.b_offset + q * path.T;
  }

  float acc[Cfg::MT][Cfg::NT][4];
#pragma unroll
  for (int mt = 0; mt < Cfg::MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < Cfg::NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;

  IssueGTile<Cfg>(args, path, inv_r, item.k_begin, item.k_end, n0, sB0, lane, warp);
  int stage = 0;
  int pz_base = item.k_begin - kPzRows;  // first K row that sP holds
  for (int k0 = item.k_begin; k0 < item.k_end; k0 += BK, stage ^= 1) {
    if (k0 + BK < item.k_end) {
      IssueGTile<Cfg>(args, path, inv_r, k0 + BK, item.k_end, n0, sB0 + (stage ^ 1) * Smem::kBFloats, lane, warp);
    } else {
      CpAsyncCommit();
    }
    if (path.fast_t != 0) {
      if (k0 >= pz_base + kPzRows) {  // readers of the old sP passed the barrier after their MMA
        pz_base = k0;
        ComputePz<Cfg>(args, path, roff, inv_r, m0, pz_base, item.k_end, sP, tid);
        __syncthreads();
      }
      const float* sP_tile = sP + (k0 - pz_base) * kCols * kLdp;
      switch (path.fast_t) {
        case 1: GenerateFromPz<kPrec, Cfg, 1>(args, path, b_col, m_valid, inv_r, k0, item.k_end, sP_tile, sA, lane, warp); break;
        case 3: GenerateFromPz<kPrec, Cfg, 3>(args, path, b_col, m_valid, inv_r, k0, item.k_end, sP_tile, sA, lane, warp); break;
        case 5: GenerateFromPz<kPrec, Cfg, 5>(args, path, b_col, m_valid, inv_r, k0, item.k_end, sP_tile, sA, lane, warp); break;
        default: GenerateFromPz<kPrec, Cfg, 7>(args, path, b_col, m_valid, inv_r, k0, item.k_end, sP_tile, sA, lane, warp); break;
      }
    } else {
      GenerateGeneric<kPrec, Cfg>(args, path, roff, a_col, b_col, m_valid, k0, item.k_end, sA, lane, warp);
    }
    CpAsyncWait<1>();
    __syncthreads();
    WarpMmaTileK<kPrec, Cfg::MT, Cfg::NT, true, Smem::kLda, Smem::kLdb, kPrec == MmaPrecision::kTf32>(acc, sA, sB0 + stage * Smem::kBFloats, warp_m0,
                                                                      warp_n0, lane);
    __syncthreads();
  }
  CpAsyncWait<0>();

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < Cfg::MT; ++mt)
#pragma unroll
    for (int i2 = 0; i2 < 2; ++i2) {
      const int m = m0 + warp_m0 + mt * 16 + g + 8 * i2;
      if (m >= rows_total) continue;
      float* dw_row = args.grad_w + path.w_offset + static_cast<long long>(m) * path.N;
#pragma unroll
      for (int nt = 0; nt < Cfg::NT; ++nt)
#pragma unroll
        for (int i1 = 0; i1 < 2; ++i1) {
          const int n = n0 + warp_n0 + nt * 8 + 2 * t + i1;
          if (n >= path.N) continue;
          const float value = path.scale * acc[mt][nt][2 * i2 + i1];
          switch (args.store) {
            case WeightGradStore::kAssign: dw_row[n] = value; break;
            case WeightGradStore::kAdd: dw_row[n] += value; break;
            case WeightGradStore::kAtomicAdd: atomicAdd(dw_row + n, value); break;
          }
        }
    }
}

template <MmaPrecision kPrec, class Cfg>
cudaError_t LaunchConfig(const WeightGradArgs& args, cudaStream_t stream) {
  WeightGradKernel<kPrec, Cfg><<<args.num_work, Cfg::kThreads, WgSmem<Cfg>::kBytes, stream>>>(args);
  return cudaGetLastError();
}

template <MmaPrecision kPrec, class Cfg>
cudaError_t Configure() {
  return cudaFuncSetAttribute(WeightGradKernel<kPrec, Cfg>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(WgSmem<Cfg>::kBytes));
}

}  // namespace

cudaError_t ConfigureWeightGradKernels() {
  return ForEachPrecisionAndTile([](auto precision, auto tile) {
    return Configure<decltype(precision)::value, typename decltype(tile)::type>();
  });
}

cudaError_t LaunchWeightGrad(MmaPrecision precision, TileShape shape, const WeightGradArgs& args,
                             cudaStream_t stream) {
  if (args.num_work == 0) return cudaSuccess;
  return DispatchPrecisionAndTile(precision, shape, [&](auto precision_constant, auto tile) {
    return LaunchConfig<decltype(precision_constant)::value, typename decltype(tile)::type>(args, stream);
  });
}

}  // namespace tpserve::cuda
