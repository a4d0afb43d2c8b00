// The factored forward of tp_forward_factored.cu on Hopper's warpgroup MMA (wgmma, sm_90a).
//
// Same work list, same math (Y_p = x2 contracted with W_p first, then the 3j step on the CUDA
// cores), but the GEMM is transposed so that the tensor cores read x2 from shared memory by
// descriptor and only W passes through registers:
//   Y_p^T[n, (t, z)] = sum_q W[p, q, n] * x2[z, q, t]     M = 64 columns n per warpgroup, N = T x 32
//                                                          samples (32 / 96 / 160), K = Q
// One wgmma m64nNk8 per warpgroup and k8 step replaces the 2 x T x 4 mma.sync of each warp (and
// their ldmatrix), and each W element is loaded and split once per block instead of once per warp
// pair. The accumulator layout puts every t of a sample in one thread (columns are t-major), so the
// 3j step needs no shuffles, as before.
//
// fp32: TF32 wgmma of W and x2 (both rounded to TF32), plus ONE bf16 wgmma of k16 carrying both
// corrections: k slots 2j, 2j+1 hold W against x2_small, slots 8+2j, 9+2j hold W_small against x2
// (the TF32 + bf16 scheme of tp_forward_factored.cu, with A and B exchanged). tf32: W as stored.
// bf16: one bf16 wgmma of k16 per 16 q (half the MMAs of tf32, a plane of half the bytes), W
// rounded to bf16 as it is loaded; k slot 8s + 2j + h holds q = 8s + 4h + j, so that a thread's
// TF32-layout W loads (q = t4, t4 + 4 of two k8 steps) pack straight into its bf16 fragment.
//
// Block: 2 warpgroups (128 output columns), 32 samples, one path, a range of p, as TpGemmWork says.
// Shared memory: x2 of the block's samples in the canonical K-major core-matrix layout (8 columns x
// 16 bytes per core matrix, no swizzle): a TF32 plane [Q/4][N/8][8][4] and, for fp32, a bf16 plane
// [2Q/8][N/8][8][8] (bf16: only a bf16 plane [Q/8][N/8][8][8]); W in a 3-stage cp.async ring as in
// tp_forward_factored.cu.
#include "kernels/cuda/factored_common.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/tp_kernels.h"
#include "kernels/cuda/wgmma.cuh"

namespace tpserve::cuda {
namespace {

constexpr int kSamples = 32;
constexpr int kCols = 128;
constexpr int kThreads = 256;
constexpr int kStages = 3;
constexpr int kLdw = kCols + 8;  // W fragment reads: bank = 8 t4 + g
constexpr int kMaxR = 5;
constexpr int kMaxS = 5;
[[maybe_unused]] constexpr int kWgCols = 64;  // output columns per warpgroup (wgmma M)
constexpr int kPzStride = 28;  // one sample's Pz[t][r] (T x R <= 25), padded for 16-byte loads
constexpr int kCBlock = kMaxR * kMaxS * kMaxR;

// Bytes of the x2 planes per element of x2 (T x 32 samples x Q of them): TF32 word + bf16 pair
// (fp32), TF32 word (tf32), bf16 (bf16).
constexpr size_t PlaneBytes(MmaPrecision precision) {
  return precision == MmaPrecision::k3xTf32 ? 8 : precision == MmaPrecision::kTf32 ? 4 : 2;
}

// x2 planes, the W ring, Pz [warpgroup][2][kSamples][kPzStride], C.
size_t SmemBytes(MmaPrecision precision, int t_times_q) {
  return PlaneBytes(precision) * kSamples * t_times_q +
         sizeof(float) * (kStages * kTileK * kLdw + 2 * 2 * kSamples * kPzStride + kCBlock);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// Shared-memory matrix descriptor, no swizzle: start, leading (K) and stride (M/N) byte offsets.
__device__ __forceinline__ uint64_t SmemDesc(uint32_t addr, uint32_t k_step_bytes, uint32_t n_step_bytes) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(k_step_bytes >> 4) << 16) |
         (static_cast<uint64_t>(n_step_bytes >> 4) << 32);
}
__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// The warpgroup's own barrier (ids 1 and 2; 0 is __syncthreads): the two warpgroups share nothing
// in the main loop, so each runs at its own pace and one's 3j step overlaps the other's MMAs.
__device__ __forceinline__ void WarpgroupBarrier(int wg) { asm volatile("bar.sync %0, 128;\n" ::"r"(wg + 1) : "memory"); }
// Keeps the compiler from moving reads of the accumulators above the wait.
template <int kN>
__device__ __forceinline__ void PinRegisters(float (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

__device__ __forceinline__ uint16_t Bf16Bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }

template <MmaPrecision kPrec, int kT, int kR>
__device__ __forceinline__ void WgmmaBlock(const TpGemmArgs& args, const TpGemmPath& path, const TpGemmWork& item,
                                           char* smem) {
  constexpr int kN = kT * kSamples;  // B columns c = t * kSamples + sample
  constexpr int kAcc = kN / 2;       // accumulators per thread
  constexpr int kGroups = kN / 8;    // core matrices along N
  constexpr bool kFp32 = kPrec == MmaPrecision::k3xTf32, kBf16 = kPrec == MmaPrecision::kBf16;
  const int Q = path.Q;
  uint32_t* const sX = reinterpret_cast<uint32_t*>(smem);  // TF32 plane (fp32, tf32)
  // The bf16 plane: after the TF32 plane (fp32: the correction pairs), or alone (bf16).
  uint16_t* const sXc = reinterpret_cast<uint16_t*>(kBf16 ? sX : sX + kN * Q);
  float* const sW = reinterpret_cast<float*>(smem + PlaneBytes(kPrec) * kN * Q);  // [kStages][32][kLdw]
  float* const sPz = sW + kStages * kTileK * kLdw;                                 // [wg][2][kSamples][kPzStride]
  float* const sC = sPz + 2 * 2 * kSamples * kPzStride;                            // [r][s][t]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int wg = warp >> 2, wtid = tid & 127;
  // A rows g and g + 8 of the warp's 16 are output columns n0 + col0 and col0 + 8. (Columns col0 and
  // col0 + 1, one 8-byte load per k row, measured 10 % slower at batch 64: 2026-11-27, docs/log/kernels-cuda.md.)
  const int col0 = wg * kWgCols + (warp & 3) * 16 + g;
  const int z0 = item.z0, n0 = item.n0;
  const int samples = min(kSamples, args.batch - z0);
  const int p_begin = item.k_begin, p_end = item.k_end;
  const int kchunks = Q / kTileK;
  const int num_tiles = (p_end - p_begin) * kchunks;

  // Each warpgroup copies (and waits for) its own 64 columns of every W tile.
  factored::WTileRing<128, kWgCols, kLdw, kStages> ring(args, path, item, num_tiles, kchunks, wtid, wg * kWgCols, sW);
  for (int s = 0; s < kStages - 1; ++s) ring.IssueNext();

  // x2 of the block's samples into the core-matrix planes (zero past the batch). Element (c, q):
  // TF32 word ((q/4) * kGroups + c/8) * 32 + (c%8) * 4 + q%4; bf16 slot s of the fp32 plane (s in
  // [0, 2Q): within each 16 slots of q-chunk q/8, 2j + h = x2_small at q = 8(q/8) + 4h + j and
  // 8 + 2j + h = x2 there) at ((s/8) * kGroups + c/8) * 64 + (c%8) * 8 + s%8.
  factored::StageX2<kT, kSamples, kThreads, 20>(args, path, z0, samples, warp, lane, [&](int q, int t, int zl, float v) {
    const int c = t * kSamples + zl;
    const int cm = (c >> 3), cr = c & 7;
    if constexpr (kBf16) {
      const int s = 8 * (q >> 3) + 2 * (q & 3) + ((q >> 2) & 1);
      sXc[((s >> 3) * kGroups + cm) * 64 + cr * 8 + (s & 7)] = Bf16Bits(v);
      return;
    }
    const uint32_t big = ToTf32(v);
    sX[((q >> 2) * kGroups + cm) * 32 + cr * 4 + (q & 3)] = big;
    if constexpr (kFp32) {
      const int s_small = 16 * (q >> 3) + 2 * (q & 3) + ((q >> 2) & 1), s_full = s_small + 8;
      sXc[((s_small >> 3) * kGroups + cm) * 64 + cr * 8 + (s_small & 7)] = Bf16Bits(v - __uint_as_float(big));
      sXc[((s_full >> 3) * kGroups + cm) * 64 + cr * 8 + (s_full & 7)] = Bf16Bits(v);
    }
  });
  for (int i = tid; i < kCBlock; i += kThreads) sC[i] = 0.f;
  for (int i = tid; i < 2 * 2 * kSamples * kPzStride; i += kThreads) sPz[i] = 0.f;
  __syncthreads();
  factored::FillCBlock<kMaxR, kMaxS>(args, path, kR, tid, kThreads, sC);

  // Pz[z, p, t, r] = sum_s C[s, t, r] a[z, p, s], each warpgroup its own copy: thread (sample,
  // r = part, part + 4), x1 loaded one p ahead.
  const int pz_zl = wtid >> 2, pz_part = wtid & 3;
  const bool pz_live = pz_zl < samples;
  const float* pz_a = args.a + static_cast<long long>(z0 + pz_zl) * args.a_row_stride + path.a_offset;
  const int S = path.S;
  float a_next[kMaxS];
#define TP_COMPUTE_PZ(buf)                                                                        \
  _Pragma("unroll") for (int rr = 0; rr < kR; rr += 4) {                                          \
    const int r = rr + pz_part;                                                                   \
    if (r < kR) {                                                                                 \
      const float* c = sC + r * (kMaxS * kMaxR);                                                  \
      float* P = sPz + ((wg * 2 + (buf)) * kSamples + pz_zl) * kPzStride + r;                     \
      _Pragma("unroll") for (int t = 0; t < kT; ++t) {                                            \
        float acc = 0.f;                                                                          \
        _Pragma("unroll") for (int s = 0; s < kMaxS; ++s) acc += c[s * kMaxR + t] * a_next[s];    \
        P[t * kR] = acc;                                                                          \
      }                                                                                           \
    }                                                                                             \
  }
  factored::LoadA<kMaxS>(a_next, pz_a, p_begin, p_end, S, pz_live);
  __syncthreads();  // sC and the x2 planes complete
  TP_COMPUTE_PZ(0);
  factored::LoadA<kMaxS>(a_next, pz_a, p_begin + 1, p_end, S, pz_live);

  float y[kAcc];
  float o[2][8][kR];  // [column half][sample slot][r]
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int zi = 0; zi < 8; ++zi)
#pragma unroll
      for (int r = 0; r < kR; ++r) o[h][zi][r] = 0.f;
#pragma unroll
  for (int i = 0; i < kAcc; ++i) y[i] = 0.f;

  // Descriptors: one k8 (TF32) or k16 (bf16) step spans 2 core matrices along K (leading byte
  // offset: the next core matrix in K; stride byte offset: the next 8 columns; measured: exchanged,
  // every test fails). A step further is + 2 k_bytes on the start address field (bits 0-13, in 16
  // bytes; the planes lie below 256 KB, so the add never carries out of it).
  constexpr uint32_t k_bytes = kGroups * 128, n_bytes = 128;
  constexpr uint64_t kStepDesc = (2 * k_bytes) >> 4;
  const uint64_t x_desc = SmemDesc(static_cast<uint32_t>(__cvta_generic_to_shared(sX)), k_bytes, n_bytes);
  const uint64_t xc_desc = SmemDesc(static_cast<uint32_t>(__cvta_generic_to_shared(sXc)), k_bytes, n_bytes);
  const float* const w_lane = sW + t4 * kLdw + col0;

  // Half a W tile (2 k8 steps) per wgmma group, its A fragments in their own registers, so the next
  // half's loads and split run while the previous group is on the tensor cores.
  uint32_t a_tf32[2][2][4], a_fix[2][2][4];  // [half][step][register]
  uint32_t a_bf16[2][4];                       // [half][register] (bf16: one k16 step per half)
  int p = p_begin, kc = 0, stage = 0;
  for (int tile = 0; tile < num_tiles; ++tile) {
    CpAsyncWait<kStages - 2>();
    WarpgroupBarrier(wg);  // W tile `tile` landed; this warpgroup has read the stage refilled below
    ring.IssueNext();
    if (kc == 0 && p + 1 < p_end) {
      TP_COMPUTE_PZ((p + 1 - p_begin) & 1);
      factored::LoadA<kMaxS>(a_next, pz_a, p + 2, p_end, S, pz_live);
    }
    const float* w_k = w_lane + stage * (kTileK * kLdw);
    const uint64_t tile_steps = kc * (kTileK / (kBf16 ? 16 : 8)) * kStepDesc;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      // A fragments of 2 k8 steps: rows g, g + 8 = columns col0, col0 + 8; k = t4, t4 + 4. fp32: W
      // rounded to TF32 and W - that (exact; truncation instead measured no faster, 1.3x the error).
      // tf32: W as stored (the tensor cores truncate it).
#pragma unroll
      for (int st = 0; st < 2; ++st) {
        const float* w8 = w_k + (2 * half + st) * 8 * kLdw;
        // (k t4: rows g, g + 8), (k t4 + 4: rows g, g + 8)
        const float w[4] = {w8[0], w8[8], w8[4 * kLdw], w8[4 * kLdw + 8]};
        if constexpr (kBf16) {  // slots 8 st + 2 t4 + (0, 1) = q 8 st + t4, + 4: rows g, g + 8
          a_bf16[half][2 * st] = PackBf16(w[0], w[2]);
          a_bf16[half][2 * st + 1] = PackBf16(w[1], w[3]);
          continue;
        }
        uint32_t(&at)[4] = a_tf32[half][st];
#pragma unroll
        for (int i = 0; i < 4; ++i) at[i] = kFp32 ? ToTf32(w[i]) : __float_as_uint(w[i]);
        if constexpr (kFp32) {
          float small[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) small[i] = w[i] - __uint_as_float(at[i]);
          a_fix[half][st][0] = PackBf16(w[0], w[2]);
          a_fix[half][st][1] = PackBf16(w[1], w[3]);
          a_fix[half][st][2] = PackBf16(small[0], small[2]);
          a_fix[half][st][3] = PackBf16(small[1], small[3]);
        }
      }
      WgmmaFence();
      if constexpr (kBf16) {
        wgmma::WgmmaBf16<kN>(y, a_bf16[half], xc_desc + tile_steps + half * kStepDesc, kc + half > 0);
      } else {
#pragma unroll
        for (int st = 0; st < 2; ++st) {
          const uint64_t step = tile_steps + (2 * half + st) * kStepDesc;
          wgmma::WgmmaTf32<kN>(y, a_tf32[half][st], x_desc + step, kc + half + st > 0);
          if constexpr (kFp32) wgmma::WgmmaBf16<kN>(y, a_fix[half][st], xc_desc + step, 1);
        }
      }
      WgmmaCommit();
      WgmmaWait<1>();  // the other half's group is done: its registers may be written next
    }
    stage = stage == kStages - 1 ? 0 : stage + 1;
    if (++kc == kchunks) {
      WgmmaWait<0>();
      PinRegisters(y);
      // Y_p complete. Accumulator 4j + e: column n = col0 + 8 (e / 2), B column 8j + 2 t4 + e % 2,
      // i.e. t = j / 4 and sample 8 (j % 4) + 2 t4 + e % 2 (slot zi = 2 (j % 4) + e % 2).
      const float* P = sPz + (wg * 2 + ((p - p_begin) & 1)) * (kSamples * kPzStride);
#pragma unroll
      for (int zi = 0; zi < 8; ++zi) {
        const int zl = 8 * (zi >> 1) + 2 * t4 + (zi & 1);
        float pz[kPzStride];
        const float4* P4 = reinterpret_cast<const float4*>(P + zl * kPzStride);
#pragma unroll
        for (int i = 0; i < (kT * kR + 3) / 4; ++i) {
          const float4 v = P4[i];
          pz[4 * i] = v.x;
          pz[4 * i + 1] = v.y;
          pz[4 * i + 2] = v.z;
          pz[4 * i + 3] = v.w;
        }
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int t = 0; t < kT; ++t) {
            const float yv = y[(t * 4 + (zi >> 1)) * 4 + 2 * h + (zi & 1)];
#pragma unroll
            for (int r = 0; r < kR; ++r) o[h][zi][r] += yv * pz[t * kR + r];
          }
      }
      kc = 0;
      ++p;
    }
  }
  CpAsyncWait<0>();
  WgmmaWait<0>();

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int n = n0 + col0 + 8 * h;
    if (n >= path.N) continue;
#pragma unroll
    for (int zi = 0; zi < 8; ++zi) {
      const int zl = 8 * (zi >> 1) + 2 * t4 + (zi & 1);
      if (zl >= samples) continue;
      float* row = args.out + static_cast<long long>(z0 + zl) * args.out_row_stride + path.out_offset;
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        float* dst = args.out_ir_mul ? row + r * path.N + n : row + n * kR + r;
        atomicAdd(dst, path.scale * o[h][zi][r]);
      }
    }
  }
}

#undef TP_COMPUTE_PZ

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <MmaPrecision kPrec>
__global__ void __launch_bounds__(kThreads, 1) TpForwardWgmmaKernel(const TpGemmArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ float4 smem_raw[];
  const TpGemmWork item = args.work[blockIdx.x];
  const TpGemmPath path = args.paths[item.path];
  char* smem = reinterpret_cast<char*>(smem_raw);
  switch (path.T * 8 + path.R) {
    case 1 * 8 + 1: WgmmaBlock<kPrec, 1, 1>(args, path, item, smem); break;
    case 1 * 8 + 3: WgmmaBlock<kPrec, 1, 3>(args, path, item, smem); break;
    case 1 * 8 + 5: WgmmaBlock<kPrec, 1, 5>(args, path, item, smem); break;
    case 3 * 8 + 1: WgmmaBlock<kPrec, 3, 1>(args, path, item, smem); break;
    case 3 * 8 + 3: WgmmaBlock<kPrec, 3, 3>(args, path, item, smem); break;
    case 3 * 8 + 5: WgmmaBlock<kPrec, 3, 5>(args, path, item, smem); break;
    case 5 * 8 + 1: WgmmaBlock<kPrec, 5, 1>(args, path, item, smem); break;
    case 5 * 8 + 3: WgmmaBlock<kPrec, 5, 3>(args, path, item, smem); break;
    default: WgmmaBlock<kPrec, 5, 5>(args, path, item, smem); break;
  }
#else
  __trap();  // built for another architecture: the host only launches this on sm_90 (FactoredWgmmaUsable)
#endif
}

constexpr size_t kMaxSmem = 227 * 1024;

}  // namespace

bool FactoredWgmmaUsable(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) return false;
  if (major != 9 || minor != 0) return false;
  // The kernel image for this device must hold the sm_90a code (not a stub from another target).
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, TpForwardWgmmaKernel<MmaPrecision::k3xTf32>) != cudaSuccess) return false;
  return attributes.binaryVersion == 90;
}

bool FactoredWgmmaFits(const TpGemmPath& path) {
  return SmemBytes(MmaPrecision::k3xTf32, path.T * path.Q) <= kMaxSmem;  // the largest planes
}

namespace {
template <MmaPrecision kPrec>
cudaError_t Configure() {
  return cudaFuncSetAttribute(TpForwardWgmmaKernel<kPrec>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(kMaxSmem));
}
template <MmaPrecision kPrec>
cudaError_t Launch(int max_t_q, const TpGemmArgs& args, cudaStream_t stream) {
  TpForwardWgmmaKernel<kPrec><<<args.num_work, kThreads, SmemBytes(kPrec, max_t_q), stream>>>(args);
  return cudaGetLastError();
}
}  // namespace

cudaError_t ConfigureFactoredWgmmaKernels() {
  for (cudaError_t e : {Configure<MmaPrecision::k3xTf32>(), Configure<MmaPrecision::kTf32>(),
                        Configure<MmaPrecision::kBf16>()}) {
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t LaunchFactoredForwardWgmma(MmaPrecision precision, int max_t_q, const TpGemmArgs& args,
                                       cudaStream_t stream) {
  if (args.num_work == 0) return cudaSuccess;
  if ((reinterpret_cast<unsigned long long>(args.w) & 15) != 0) return cudaErrorMisalignedAddress;
  switch (precision) {
    case MmaPrecision::k3xTf32: return Launch<MmaPrecision::k3xTf32>(max_t_q, args, stream);
    case MmaPrecision::kTf32: return Launch<MmaPrecision::kTf32>(max_t_q, args, stream);
    case MmaPrecision::kBf16: return Launch<MmaPrecision::kBf16>(max_t_q, args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace tpserve::cuda
