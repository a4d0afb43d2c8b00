// Warp-level tensor-core products from shared memory (mma.sync, sm_80+), in three precisions:
// 3xTF32 (fp32-accurate: a_big*b_big + a_big*b_small + a_small*b_big), TF32, and BF16 operands.
// A tile is read either m-major (sA[m * lda + k]) or k-major (sA[k * lda + m]); B is k-major
// (sB[k * ldb + n]). Accumulators follow the m16n8 C fragment layout:
//   acc[mt][nt][i] is (row g + 8*(i/2), column 2t + (i%2)) of the (mt, nt) 16x8 tile,
//   with g = lane / 4 and t = lane % 4.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>

#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda {

// Round to TF32 (nearest, ties away from zero) for finite x: add half an ulp of TF32, clear the
// low 13 bits. Two integer ops where cvt.rna.tf32.f32 costs four.
__device__ __forceinline__ uint32_t ToTf32(float x) { return (__float_as_uint(x) + 0x1000u) & 0xffffe000u; }

// x = big + small with big the top 19 bits of x (exact) and small the rest, read as TF32 by the
// tensor cores (truncated again: relative error 2^-10 of a term that is itself below 2^-10 of x).
__device__ __forceinline__ void SplitTf32(float x, uint32_t& big, uint32_t& small) {
  big = __float_as_uint(x) & 0xffffe000u;
  small = __float_as_uint(x - __uint_as_float(big));
}

// q = x / d, r = x % d for 0 <= x < 2^22, 0 < d, via a float reciprocal (no integer division).
__device__ __forceinline__ void DivMod(int x, int d, float inv_d, int& q, int& r) {
  q = __float2int_rz((static_cast<float>(x) + 0.5f) * inv_d);
  r = x - q * d;
  if (r < 0) {
    --q;
    r += d;
  } else if (r >= d) {
    ++q;
    r -= d;
  }
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ void MmaTf32(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void MmaBf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The 3xTF32 step both warp MMAs share. The tensor cores truncate while they accumulate; over a
// long K that bias grows linearly (measured 6e-5 relative at K = 8192). So each K tile of 32
// accumulates into a fresh register tile, added to acc with a rounding fp32 add. One m16 row block
// at a time keeps the extra registers to NT*4.
// load_a(mt, kk, a_big, a_small): the lane's m16k8 A fragment of row block mt at k = kk, split in
// two TF32 halves. b_at(kk, nt, i): the lane's fp32 B value at k = kk + t + 4i of n8 tile nt.
template <int MT, int NT, class LoadA, class BAt>
__device__ __forceinline__ void WarpMma3xTf32TileK(float (&acc)[MT][NT][4], LoadA load_a, BAt b_at) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float step[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) step[nt][i] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 8) {
      uint32_t a_big[4], a_small[4];
      load_a(mt, kk, a_big, a_small);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float bv[2] = {b_at(kk, nt, 0), b_at(kk, nt, 1)};
        uint32_t b_big[2], b_small[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) SplitTf32(bv[i], b_big[i], b_small[i]);
        MmaTf32(step[nt], a_small, b_big);
        MmaTf32(step[nt], a_big, b_small);
        MmaTf32(step[nt], a_big, b_big);
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] += step[nt][i];
  }
}

// acc += A[warp_m0 .. +16*MT, 0 .. kTileK) * B[0 .. kTileK, warp_n0 .. +8*NT).
// kATf32: the A tile already holds TF32 bit patterns (kTf32 only), so no conversion on load.
template <MmaPrecision kPrec, int MT, int NT, bool kAKMajor, int lda, int ldb, bool kATf32 = false>
__device__ __forceinline__ void WarpMmaTileK(float (&acc)[MT][NT][4], const float* sA, const float* sB, int warp_m0,
                                             int warp_n0, int lane) {
  const int g = lane >> 2, t = lane & 3;
  auto A = [&](int m, int k) { return kAKMajor ? sA[k * lda + m] : sA[m * lda + k]; };
  auto B = [&](int k, int n) { return sB[k * ldb + n]; };
  auto AT = [&](int m, int k) { return kATf32 ? __float_as_uint(A(m, k)) : ToTf32(A(m, k)); };
  if constexpr (kPrec == MmaPrecision::kBf16) {
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      uint32_t a[MT][4], b[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int m = warp_m0 + mt * 16 + g;
        const int k = kk + 2 * t;
        a[mt][0] = PackBf16(A(m, k), A(m, k + 1));
        a[mt][1] = PackBf16(A(m + 8, k), A(m + 8, k + 1));
        a[mt][2] = PackBf16(A(m, k + 8), A(m, k + 9));
        a[mt][3] = PackBf16(A(m + 8, k + 8), A(m + 8, k + 9));
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int n = warp_n0 + nt * 8 + g;
        const int k = kk + 2 * t;
        b[nt][0] = PackBf16(B(k, n), B(k + 1, n));
        b[nt][1] = PackBf16(B(k + 8, n), B(k + 9, n));
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) MmaBf16(acc[mt][nt], a[mt], b[nt]);
    }
  } else if constexpr (kPrec == MmaPrecision::kTf32) {
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 8) {
      uint32_t a[MT][4], b[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int m = warp_m0 + mt * 16 + g;
        a[mt][0] = AT(m, kk + t);
        a[mt][1] = AT(m + 8, kk + t);
        a[mt][2] = AT(m, kk + t + 4);
        a[mt][3] = AT(m + 8, kk + t + 4);
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int n = warp_n0 + nt * 8 + g;
        b[nt][0] = __float_as_uint(B(kk + t, n));
        b[nt][1] = __float_as_uint(B(kk + t + 4, n));
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) MmaTf32(acc[mt][nt], a[mt], b[nt]);
    }
  } else {
    // 3xTF32 (see WarpMma3xTf32TileK).
    WarpMma3xTf32TileK<MT, NT>(
        acc,
        [&](int mt, int kk, uint32_t (&a_big)[4], uint32_t (&a_small)[4]) {
          const int m = warp_m0 + mt * 16 + g;
          const float av[4] = {A(m, kk + t), A(m + 8, kk + t), A(m, kk + t + 4), A(m + 8, kk + t + 4)};
#pragma unroll
          for (int i = 0; i < 4; ++i) SplitTf32(av[i], a_big[i], a_small[i]);
        },
        [&](int kk, int nt, int i) { return B(kk + t + 4 * i, warp_n0 + nt * 8 + g); });
  }
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}

// A tiles stored m-major in the operand format of the MMA (written once by the generator, read by
// ldmatrix): TF32 bit patterns (kTf32), big and small TF32 halves in two planes (3xTF32), or bf16.
template <MmaPrecision kPrec>
struct ATile {
  static constexpr bool kBf16 = kPrec == MmaPrecision::kBf16;
  static constexpr int kElemBytes = kBf16 ? 2 : 4;
  static constexpr int kLd = kBf16 ? kTileK + 8 : kTileK + 4;  // row stride in elements: 80 or 144 bytes
  static constexpr int kPlanes = kPrec == MmaPrecision::k3xTf32 ? 2 : 1;
  static constexpr int BytesFor(int rows) { return rows * kLd * kElemBytes * kPlanes; }

  // Stores A[row][col] = v into the tile(s) at `base` (rows * kLd elements per plane).
  __device__ static __forceinline__ void Store(void* base, int rows, int row, int col, float v) {
    if constexpr (kBf16) {
      static_cast<__nv_bfloat16*>(base)[row * kLd + col] = __float2bfloat16_rn(v);
    } else if constexpr (kPrec == MmaPrecision::kTf32) {
      static_cast<uint32_t*>(base)[row * kLd + col] = ToTf32(v);
    } else {
      const uint32_t big = ToTf32(v);
      static_cast<uint32_t*>(base)[row * kLd + col] = big;
      static_cast<uint32_t*>(base)[(rows + row) * kLd + col] = ToTf32(v - __uint_as_float(big));
    }
  }
  __device__ static __forceinline__ void StoreZero(void* base, int rows, int row, int col) {
    if constexpr (kBf16) {
      static_cast<__nv_bfloat16*>(base)[row * kLd + col] = __float2bfloat16_rn(0.f);
    } else {
      static_cast<uint32_t*>(base)[row * kLd + col] = 0u;
      if constexpr (kPlanes == 2) static_cast<uint32_t*>(base)[(rows + row) * kLd + col] = 0u;
    }
  }
};

// acc += A (m-major ATile<kPrec> with `rows` rows at a_base) * B (fp32, sB[k * ldb + n]), one K tile.
template <MmaPrecision kPrec, int MT, int NT, int rows, int ldb>
__device__ __forceinline__ void WarpMmaLdm(float (&acc)[MT][NT][4], const void* a_base, const float* sB, int warp_m0,
                                           int warp_n0, int lane) {
  using AT = ATile<kPrec>;
  const int g = lane >> 2, t = lane & 3;
  // This lane's ldmatrix row: matrices (rows 0-7 | 8-15) x (k 0-3 | 4-7) for TF32, (k 0-7 | 8-15) for bf16.
  const int lrow = warp_m0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int lcol = (lane >> 4) * (AT::kBf16 ? 8 : 4);
  const uint32_t a_addr = static_cast<uint32_t>(__cvta_generic_to_shared(a_base)) + (lrow * AT::kLd + lcol) * AT::kElemBytes;
  constexpr uint32_t kMtStride = 16 * AT::kLd * AT::kElemBytes;
  if constexpr (kPrec == MmaPrecision::kBf16) {
    const float* b_lane = sB + (2 * t) * ldb + warp_n0 + g;
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      uint32_t a[MT][4], b[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) LdMatrixX4(a[mt], a_addr + mt * kMtStride + kk * 2);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float* bp = b_lane + kk * ldb + nt * 8;
        b[nt][0] = PackBf16(bp[0], bp[ldb]);
        b[nt][1] = PackBf16(bp[8 * ldb], bp[9 * ldb]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) MmaBf16(acc[mt][nt], a[mt], b[nt]);
    }
  } else if constexpr (kPrec == MmaPrecision::kTf32) {
    const float* b_lane = sB + t * ldb + warp_n0 + g;
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 8) {
      uint32_t a[MT][4], b[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) LdMatrixX4(a[mt], a_addr + mt * kMtStride + kk * 4);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        // W as stored: the tensor cores read the top 19 bits (TF32 by truncation), no conversion.
        const float* bp = b_lane + kk * ldb + nt * 8;
        b[nt][0] = __float_as_uint(bp[0]);
        b[nt][1] = __float_as_uint(bp[4 * ldb]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) MmaTf32(acc[mt][nt], a[mt], b[nt]);
    }
  } else {
    // 3xTF32 (see WarpMma3xTf32TileK): the two TF32 planes of the A tile by ldmatrix.
    const float* b_lane = sB + t * ldb + warp_n0 + g;
    constexpr uint32_t kPlaneBytes = rows * AT::kLd * 4;
    WarpMma3xTf32TileK<MT, NT>(
        acc,
        [&](int mt, int kk, uint32_t (&a_big)[4], uint32_t (&a_small)[4]) {
          LdMatrixX4(a_big, a_addr + mt * kMtStride + kk * 4);
          LdMatrixX4(a_small, a_addr + kPlaneBytes + mt * kMtStride + kk * 4);
        },
        [&](int kk, int nt, int i) { return b_lane[(kk + 4 * i) * ldb + nt * 8]; });
  }
}

// cp.async helpers: copies that land in shared memory without passing through registers; a
// source size of 0 fills the destination with zeros.
__device__ __forceinline__ void CpAsync16(float* smem_dst, const float* global_src, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global_src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsync4(float* smem_dst, const float* global_src, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(global_src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Tile shapes: BM x BN block tile, WM x WN warps (256 threads), BK = kTileK.
template <int BM_, int BN_, int WM_, int WN_>
struct TileConfig {
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_;
  static constexpr int kThreads = WM * WN * 32;
  static constexpr int kWarps = WM * WN;
  static constexpr int MT = BM / WM / 16;
  static constexpr int NT = BN / WN / 8;
};
using WideTile = TileConfig<128, 128, 2, 4>;   // warp tile 64 x 32
using NarrowTile = TileConfig<128, 32, 4, 2>;  // warp tile 32 x 16

// One switch from the run-time (precision, tile shape) to a kernel template's arguments, shared by
// every generated-operand kernel family: fn(precision_constant, tile_type) where
// decltype(precision_constant)::value is the MmaPrecision and decltype(tile_type)::type the TileConfig.
template <class Cfg>
struct TileType {
  using type = Cfg;
};
template <class Fn>
cudaError_t DispatchPrecisionAndTile(MmaPrecision precision, TileShape shape, Fn&& fn) {
  auto with_tile = [&](auto precision_constant) -> cudaError_t {
    return shape == TileShape::kWide ? fn(precision_constant, TileType<WideTile>{})
                                     : fn(precision_constant, TileType<NarrowTile>{});
  };
  switch (precision) {
    case MmaPrecision::k3xTf32: return with_tile(std::integral_constant<MmaPrecision, MmaPrecision::k3xTf32>{});
    case MmaPrecision::kTf32: return with_tile(std::integral_constant<MmaPrecision, MmaPrecision::kTf32>{});
    case MmaPrecision::kBf16: return with_tile(std::integral_constant<MmaPrecision, MmaPrecision::kBf16>{});
  }
  return cudaErrorInvalidValue;
}
// fn for every (precision, tile shape), in order; the first error stops it (kernel attributes).
template <class Fn>
cudaError_t ForEachPrecisionAndTile(Fn&& fn) {
  for (MmaPrecision precision : {MmaPrecision::k3xTf32, MmaPrecision::kTf32, MmaPrecision::kBf16}) {
    for (TileShape shape : {TileShape::kWide, TileShape::kNarrow}) {
      if (cudaError_t e = DispatchPrecisionAndTile(precision, shape, fn); e != cudaSuccess) return e;
    }
  }
  return cudaSuccess;
}

}  // namespace tpserve::cuda
