// Forward-shaped tensor-product GEMM, all paths of a plan in one launch.
//
// Computes, for every path (descriptor TpGemmPath, see tp_kernels.h):
//   out[z, off_out + n*R + r] += scale * sum_{p,q} Wt[p, q, n] * A[z*R + r, p*Q + q]
//   A[z*R + r, p*Q + q] = sum_{(s,t,c) in nz(r)} c * a[z, off_a + p*S + s] * b[z, off_b + q*T + t]
// i.e. a GEMM with M = batch*R rows, K = P*Q, N columns, whose A operand is generated tile by tile
// in shared memory from the inputs and the sparse 3j block (never materialized in device memory).
// Used for the forward pass (a = x1, b = x2, r = k) and the input gradients (grad_x1: a = x2, b = g,
// r = i; grad_x2: a = x1, b = g, r = j) with permuted weight strides.
//
// Grid: one block per TpGemmWork item (path, sample tile, column tile, K slice); the host orders items
// with the sample tile fastest so that blocks sharing a W slice run together and hit L2. K is split
// across blocks when tiles are few; partial sums meet in `out` via atomicAdd (zeroed by the host).
// Block: 256 threads = 8 warps; a tile holds floor(128/R) whole samples (128 rows) x 128 (or 32)
// columns; per K step of 32: every warp generates 16 rows x 32 columns of A (lane = column), the
// block loads the 32 x BN slice of W, then mma.sync (3xTF32 / TF32 / BF16) from shared memory.
//
// Floor (forward of the seed shape, batch 64): 2 * batch * sum_p R*P*Q*N = 13.7 GFLOP and reading W
// once (126 MB): 0.042 ms at 3 TB/s, 0.028 ms of TF32 tensor-core time at ~495 TFLOP/s.
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda {
namespace {

template <MmaPrecision kPrec, class Cfg>
__global__ void __launch_bounds__(256) TpGemmKernel(const TpGemmArgs args) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = kTileK;
  constexpr int kLda = BK + 4;  // conflict-free fragment reads: bank = 4g + t
  constexpr int kLdb = BN + 8;  // bank = 8t + g
  __shared__ float sA[BM * kLda];
  __shared__ float sB[BK * kLdb];
  __shared__ long long sBrow[BK];

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

  float acc[Cfg::MT][Cfg::NT][4];
#pragma unroll
  for (int mt = 0; mt < Cfg::MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < Cfg::NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;

  for (int k0 = item.k_begin; k0 < item.k_end; k0 += BK) {
    // This lane's column of A: reduction index kk = p*Q + q.
    const int kk = k0 + lane;
    const bool k_valid = kk < item.k_end;
    const int p = k_valid ? kk / path.Q : 0;
    const int q = k_valid ? kk - p * path.Q : 0;
    if (tid < BK) sBrow[tid] = k_valid ? path.w_offset + p * path.w_stride_p + q * path.w_stride_q : -1;

    // Generate A: row = z_local*R + r (warp-uniform), column = lane.
    for (int row = warp; row < BM; row += Cfg::kWarps) {
      float v = 0.f;
      if (k_valid && row < rows_valid) {
        const int zl = row / R;
        const int r = row - zl * R;
        const long long z = z0 + zl;
        const float* a = args.a + z * args.a_row_stride + path.a_offset + p * path.S;
        const float* b = args.b + z * args.b_row_stride + path.b_offset + q * path.T;
        const int e_end = __ldg(roff + r + 1);
        for (int e = __ldg(roff + r); e < e_end; ++e) {
          const NzEntry nz = args.nz[e];
          v += nz.c * __ldg(a + nz.s) * __ldg(b + nz.t);
        }
      }
      sA[row * kLda + lane] = v;
    }
    __syncthreads();  // sBrow

    // Load the W slice: sB[k][n] = Wt[p(k), q(k), n0 + n].
    if (path.w_stride_n == 1) {
      for (int e = tid; e < BK * BN; e += Cfg::kThreads) {
        const int k = e / BN, n = e - (e / BN) * BN;
        const long long base = sBrow[k];
        sB[k * kLdb + n] = (base >= 0 && n0 + n < path.N) ? __ldg(args.w + base + n0 + n) : 0.f;
      }
    } else {
      for (int e = tid; e < BK * BN; e += Cfg::kThreads) {
        const int k = e % BK, n = e / BK;
        const long long base = sBrow[k];
        sB[k * kLdb + n] =
            (base >= 0 && n0 + n < path.N) ? __ldg(args.w + base + (n0 + n) * path.w_stride_n) : 0.f;
      }
    }
    __syncthreads();
    WarpMmaTileK<kPrec, Cfg::MT, Cfg::NT, false>(acc, sA, kLda, sB, kLdb, warp_m0, warp_n0, lane);
    __syncthreads();
  }

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < Cfg::MT; ++mt)
#pragma unroll
    for (int i2 = 0; i2 < 2; ++i2) {
      const int m = warp_m0 + mt * 16 + g + 8 * i2;
      if (m >= rows_valid) continue;
      const int zl = m / R;
      const int r = m - zl * R;
      float* out_row = args.out + (z0 + zl) * args.out_row_stride + path.out_offset + r;
#pragma unroll
      for (int nt = 0; nt < Cfg::NT; ++nt)
#pragma unroll
        for (int i1 = 0; i1 < 2; ++i1) {
          const int n = n0 + warp_n0 + nt * 8 + 2 * t + i1;
          if (n < path.N) atomicAdd(out_row + static_cast<long long>(n) * R, path.scale * acc[mt][nt][2 * i2 + i1]);
        }
    }
}

template <MmaPrecision kPrec>
cudaError_t LaunchWithPrecision(TileShape shape, const TpGemmArgs& args, cudaStream_t stream) {
  if (shape == TileShape::kWide) {
    TpGemmKernel<kPrec, WideTile><<<args.num_work, WideTile::kThreads, 0, stream>>>(args);
  } else {
    TpGemmKernel<kPrec, NarrowTile><<<args.num_work, NarrowTile::kThreads, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchTpGemm(MmaPrecision precision, TileShape shape, const TpGemmArgs& args, cudaStream_t stream) {
  if (args.num_work == 0) return cudaSuccess;
  switch (precision) {
    case MmaPrecision::k3xTf32: return LaunchWithPrecision<MmaPrecision::k3xTf32>(shape, args, stream);
    case MmaPrecision::kTf32: return LaunchWithPrecision<MmaPrecision::kTf32>(shape, args, stream);
    case MmaPrecision::kBf16: return LaunchWithPrecision<MmaPrecision::kBf16>(shape, args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace tpserve::cuda
