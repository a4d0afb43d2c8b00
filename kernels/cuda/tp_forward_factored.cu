// Forward of 'uvw' paths with the x2 contraction first: a plain GEMM on the tensor cores, then the
// small 3j contraction on the CUDA cores.
//
// For one path (a = x1, b = x2, r = k; TpGemmPath, see tp_kernels.h):
//   out[z, n, r] = scale * sum_p sum_t Y_p[z, t, n] * Pz[z, p, t, r]
//   Y_p[z, t, n]  = sum_q b[z, q, t] * Wt[p, q, n]            (M = samples x T, K = Q, N: no generated operand)
//   Pz[z, p, t, r] = sum_{(s, t, c) in nz(r)} c * a[z, p, s]   (tiny, built per p in shared memory)
// The GEMM of tp_gemm.cu generates its A operand (T-term dot products, operand split, store, ldmatrix)
// next to every MMA and is issue-bound at ~11 instructions per MMA; here the A operand (b) is loaded
// and split once per block and stays in shared memory, so the main loop is ldmatrix + MMA plus the
// W fragments, and the 3j work is 2*T*R flops per Y element after its K = Q sum.
//
// Block (one per SM): one path, kSamples samples, kCols output columns, a range of p
// (TpGemmWork.k_begin/k_end index p here). Warps are 2 (samples, 16 each) x 4 (columns, 32 each);
// a warp holds Y for its 16 samples x all T x 32 columns (rows of A ordered t-major, so one thread
// holds every t of its samples and the 3j step needs no shuffles) and accumulates out over p in
// registers; partial sums over p meet in `out` by atomicAdd (zeroed by the host). 32 columns per
// warp: each A fragment loaded from shared memory feeds 4 n8 tiles (shared memory was 74 % busy
// with 16-column warps); 8 warps of up to 255 registers. 16-column warps (16 warps of 128
// registers) remain for comparisons: the option factored_warp_cols=16 (measured in docs/log/kernels-cuda.md).
// W streams through a 3-stage cp.async ring of 32 x kCols tiles ((p, q-chunk) order).
// Limits (host checks, else tp_gemm.cu): T in {1, 3, 5}, R <= 5, S <= 5, Q % 32 == 0, W contiguous in n.
#include "kernels/cuda/factored_common.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda {
namespace {

constexpr int kSamples = 32;  // samples per block (2 warps x 16)
constexpr int kCols = 128;    // output columns per block (8 warps x 16)
constexpr int kStages = 3;
constexpr int kLdw = kCols + 8;  // W fragment reads: bank = 8t + g
constexpr int kMaxR = 5;
constexpr int kMaxS = 5;
constexpr int kPzPerSample = kMaxR * kMaxR;  // Pz[t][r], t < T <= 5, r < 5
constexpr int kCBlock = kMaxR * kMaxS * kMaxR;  // one path's 3j block, dense [r][s][t]
// Warps are 2 (samples) x kCols / (8 kNt) (columns); kNt n8 tiles per warp: 4 (8 warps, the
// default) or 2 (16 warps; LaunchFactoredForward's warp_cols).
template <int kNt>
constexpr int ThreadsFor() {
  return 2 * (kCols / (8 * kNt)) * 32;
}

// How the products are formed (fp32-accurate modes keep a second A plane in shared memory):
//   kTf32:     one TF32 MMA per k8 step (A rounded, W truncated by the tensor cores).
//   kTf32Bf16: fp32 accuracy in two MMA times: a_big * w_big in TF32, then both correction terms
//              a_small * w + a * w_small in ONE bf16 m16n8k16 (k slots 0-7 hold a_small against w,
//              8-15 hold a against w_small). The corrections are below 2^-11 of the product, so their
//              bf16 rounding (2^-9) costs ~2^-19 relative per product, and the bf16 MMA of k16 takes
//              the time of one TF32 k8.
//   k3xTf32:   the classic three TF32 MMAs (a_small*w_big + a_big*w_small + a_big*w_big); three MMA
//              times, ~2x more accurate. Kept for comparisons (forward_kernel factored-3xtf32).
enum class Mode : int { kTf32, kTf32Bf16, k3xTf32 };

template <Mode kMode>
constexpr int Planes() {
  return kMode == Mode::kTf32 ? 1 : 2;
}

template <Mode kMode>
constexpr size_t SmemBytes(int t_times_ldq) {
  return sizeof(float) * (size_t{Planes<kMode>()} * kSamples * t_times_ldq + kStages * kTileK * kLdw +
                          2 * kSamples * kPzPerSample + kCBlock);
}

template <Mode kMode, int kT, int kR, int kNt>
__device__ __forceinline__ void FactoredBlock(const TpGemmArgs& args, const TpGemmPath& path, const TpGemmWork& item,
                                              char* smem) {
  constexpr int kPlanes = Planes<kMode>();
  constexpr int kRows = kT * kSamples;  // A rows: t * kSamples + sample
  constexpr int kThreads = ThreadsFor<kNt>();
  constexpr int kWarpsN = kCols / (8 * kNt);
  const int Q = path.Q, ldq = Q + 4;  // ldmatrix rows 16 bytes apart in banks
  constexpr int R = kR;
  uint32_t* const sA = reinterpret_cast<uint32_t*>(smem);                    // [plane][kRows][ldq]
  float* const sW = reinterpret_cast<float*>(sA + kPlanes * kRows * ldq);    // [kStages][32][kLdw]
  float* const sPz = sW + kStages * kTileK * kLdw;                           // [2][kSamples][t][r]
  float* const sC = sPz + 2 * kSamples * kPzPerSample;                       // [r][s][t], 5 x 5 x 5

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int warp_z0 = (warp / kWarpsN) * 16, warp_n0 = (warp % kWarpsN) * (8 * kNt);
  const int z0 = item.z0, n0 = item.n0;
  const int samples = min(kSamples, args.batch - z0);
  const int p_begin = item.k_begin, p_end = item.k_end;
  const int kchunks = Q / kTileK;
  const int num_tiles = (p_end - p_begin) * kchunks;

  factored::WTileRing<kThreads, kCols, kLdw, kStages> ring(args, path, item, num_tiles, kchunks, tid, 0, sW);
  for (int s = 0; s < kStages - 1; ++s) ring.IssueNext();

  // A = b[z, q, t] as rows (t, sample), columns q, in the MMA's operand format; zero past the batch.
  // 20 loads in flight per lane with 8 warps (a whole sample of T = 5, Q = 128 in one round: each
  // warp stages 4 samples).
  constexpr int kLoads = kThreads == 256 ? 20 : 4;
  factored::StageX2<kT, kSamples, kThreads, kLoads>(args, path, z0, samples, warp, lane, [&](int q, int t, int zl, float v) {
    const int at = (t * kSamples + zl) * ldq + q;
    const uint32_t big = ToTf32(v);
    sA[at] = big;
    if constexpr (kMode == Mode::k3xTf32) sA[kRows * ldq + at] = ToTf32(v - __uint_as_float(big));
    if constexpr (kMode == Mode::kTf32Bf16) {
      // Plane 2 holds the bf16 m16n8k16 A fragment words: within each group of 8 columns, word
      // j < 4 = (a_small[j], a_small[j + 4]) and word 4 + j = (a[j], a[j + 4]) (low half first),
      // so ldmatrix with the TF32 addressing yields k slots (2j, 2j + 1) and (2j + 8, 2j + 9).
      __nv_bfloat16* plane = reinterpret_cast<__nv_bfloat16*>(sA + kRows * ldq + at - q);
      const int group = q & ~7, j = q & 3, half = (q >> 2) & 1;
      plane[2 * (group + j) + half] = __float2bfloat16_rn(v - __uint_as_float(big));
      plane[2 * (group + 4 + j) + half] = __float2bfloat16_rn(v);
    }
  });
  // The path's 3j block as dense sC[r][s][t] (zeros where C has none), and Pz entries past R (and T)
  // zero, so that Pz and the 3j step below run fixed 5 x 5 loops.
  for (int i = tid; i < kCBlock; i += kThreads) sC[i] = 0.f;
  for (int i = tid; i < 2 * kSamples * kPzPerSample; i += kThreads) sPz[i] = 0.f;
  __syncthreads();
  factored::FillCBlock<kMaxR, kMaxS>(args, path, R, tid, kThreads, sC);

  // Pz[z, p, t, r] = sum_s C[s, t, r] a[z, p, s]: thread (sample, r) for tid < kSamples * R. Its x1
  // values are loaded one p ahead into registers, so building Pz never waits on memory.
  const bool pz_thread = tid < kSamples * R;
  const int pz_zl = pz_thread ? tid / R : 0, pz_r = pz_thread ? tid - pz_zl * R : 0;
  const bool pz_live = pz_thread && pz_zl < samples;
  const float* pz_a = args.a + static_cast<long long>(z0 + pz_zl) * args.a_row_stride + path.a_offset;
  const int S = path.S;
  float a_next[kMaxS];
  // A macro, not a lambda: a lambda capturing a_next by reference put it in local memory.
#define TP_COMPUTE_PZ(buf)                                                                        \
  if (pz_thread) {                                                                                \
    const float* c = sC + pz_r * (kMaxS * kMaxR);                                                 \
    float* P = sPz + (buf) * (kSamples * kPzPerSample) + pz_zl * kPzPerSample + pz_r;             \
    _Pragma("unroll") for (int t = 0; t < kT; ++t) {                                              \
      float acc = 0.f;                                                                            \
      _Pragma("unroll") for (int s = 0; s < kMaxS; ++s) acc += c[s * kMaxR + t] * a_next[s];      \
      P[t * kMaxR] = acc;                                                                         \
    }                                                                                             \
  }
  factored::LoadA<kMaxS>(a_next, pz_a, p_begin, p_end, S, pz_live);
  __syncthreads();  // sC complete
  TP_COMPUTE_PZ(0);
  factored::LoadA<kMaxS>(a_next, pz_a, p_begin + 1, p_end, S, pz_live);

  float y[kT][kNt][4];
  float o[2][kNt][2][kR];  // [row half][n8 tile][column parity][r]
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c)
#pragma unroll
        for (int r = 0; r < kR; ++r) o[half][nt][c][r] = 0.f;

  // ldmatrix addresses of this lane (see WarpMmaLdm in mma.cuh).
  const int lrow = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int lcol = (lane >> 4) * 4;
  const uint32_t a_lane = static_cast<uint32_t>(__cvta_generic_to_shared(sA)) + ((warp_z0 + lrow) * ldq + lcol) * 4;
  const uint32_t t_stride = kSamples * ldq * 4, plane_bytes = kRows * ldq * 4;

  // One k8 step: W fragments (as stored) and their split, then per t the A fragments (both planes
  // for the fp32 modes) and the MMAs of both n8 tiles. A is loaded per t so that few registers hold
  // it (16 warps per SM leave 128 per thread).
  auto run_step = [&](uint32_t a_k, const float* w_k) {
    float b[kNt][2];
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
      b[nt][0] = w_k[nt * 8];
      b[nt][1] = w_k[nt * 8 + 4 * kLdw];
    }
    uint32_t w_big[kNt][2], w_fix[kNt][2];
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
      if constexpr (kMode == Mode::kTf32Bf16) {
        // W = w_big (TF32, rounded) + w_small; B of the bf16 MMA: slots (2j, 2j + 1) = w at rows j and
        // j + 4 (against a_small), slots (2j + 8, 2j + 9) = w_small (against a).
        w_big[nt][0] = ToTf32(b[nt][0]);
        w_big[nt][1] = ToTf32(b[nt][1]);
        w_fix[nt][0] = PackBf16(b[nt][0], b[nt][1]);
        w_fix[nt][1] = PackBf16(b[nt][0] - __uint_as_float(w_big[nt][0]), b[nt][1] - __uint_as_float(w_big[nt][1]));
      } else if constexpr (kMode == Mode::k3xTf32) {
        SplitTf32(b[nt][0], w_big[nt][0], w_fix[nt][0]);  // w_fix = w_small here
        SplitTf32(b[nt][1], w_big[nt][1], w_fix[nt][1]);
      } else {
        // W as stored: the tensor cores read its top 19 bits (TF32 by truncation).
        w_big[nt][0] = __float_as_uint(b[nt][0]);
        w_big[nt][1] = __float_as_uint(b[nt][1]);
      }
    }
#pragma unroll
    for (int t = 0; t < kT; ++t) {
      uint32_t a[kPlanes][4];
#pragma unroll
      for (int pl = 0; pl < kPlanes; ++pl) LdMatrixX4(a[pl], a_k + pl * plane_bytes + t * t_stride);
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        if constexpr (kMode == Mode::kTf32Bf16) {
          MmaBf16(y[t][nt], a[1], w_fix[nt]);
          MmaTf32(y[t][nt], a[0], w_big[nt]);
        } else if constexpr (kMode == Mode::k3xTf32) {
          MmaTf32(y[t][nt], a[1], w_big[nt]);
          MmaTf32(y[t][nt], a[0], w_fix[nt]);
          MmaTf32(y[t][nt], a[0], w_big[nt]);
        } else {
          MmaTf32(y[t][nt], a[0], w_big[nt]);
        }
      }
    }
  };

  int p = p_begin, kc = 0, stage = 0;
  for (int tile = 0; tile < num_tiles; ++tile) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();  // W tile `tile` landed for everyone; the stage refilled below is free
    ring.IssueNext();
    if (kc == 0) {
#pragma unroll
      for (int t = 0; t < kT; ++t)
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
          for (int i = 0; i < 4; ++i) y[t][nt][i] = 0.f;
      // Pz of the next p into the other buffer: its last reader (p - 1) passed the barrier above.
      if (p + 1 < p_end) {
        TP_COMPUTE_PZ((p + 1 - p_begin) & 1);
        factored::LoadA<kMaxS>(a_next, pz_a, p + 2, p_end, S, pz_live);
      }
    }
    const float* w_lane = sW + stage * (kTileK * kLdw) + t4 * kLdw + warp_n0 + g;
    const uint32_t a_k = a_lane + kc * kTileK * 4;
#pragma unroll
    for (int step = 0; step < kTileK / 8; ++step) run_step(a_k + step * 32, w_lane + step * 8 * kLdw);
    stage = stage == kStages - 1 ? 0 : stage + 1;
    if (++kc == kchunks) {
      // Y_p complete: out[z, n, r] += sum_t Y_p[z, t, n] * Pz[z, p, t, r] for this thread's 2 samples
      // (t outermost: 4 * kR independent accumulators per step).
      const float* P = sPz + ((p - p_begin) & 1) * (kSamples * kPzPerSample);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float* pz = P + (warp_z0 + g + 8 * half) * kPzPerSample;
        float pzv[kT][kR];
#pragma unroll
        for (int t = 0; t < kT; ++t)
#pragma unroll
          for (int r = 0; r < kR; ++r) pzv[t][r] = pz[t * kMaxR + r];
#pragma unroll
        for (int t = 0; t < kT; ++t)
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
            for (int c = 0; c < 2; ++c)
#pragma unroll
              for (int r = 0; r < kR; ++r) o[half][nt][c][r] += y[t][nt][2 * half + c] * pzv[t][r];
      }
      kc = 0;
      ++p;
    }
  }
  CpAsyncWait<0>();

  // Partial sums over this block's p range into out (e3nn layout out[z, off + n*R + r], or per-irrep
  // transposed out[z, off + r*N + n]).
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int zl = warp_z0 + g + 8 * half;
    if (zl >= samples) continue;
    float* row = args.out + static_cast<long long>(z0 + zl) * args.out_row_stride + path.out_offset;
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
      const int n = n0 + warp_n0 + nt * 8 + 2 * t4;
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        if (n + c >= path.N) continue;
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          float* dst = args.out_ir_mul ? row + r * path.N + n + c : row + (n + c) * R + r;
          atomicAdd(dst, path.scale * o[half][nt][c][r]);
        }
      }
    }
  }
}

#undef TP_COMPUTE_PZ

template <Mode kMode, int kNt>
__global__ void __launch_bounds__(ThreadsFor<kNt>(), 1) TpForwardFactoredKernel(const TpGemmArgs args) {
  extern __shared__ float4 smem_raw[];
  const TpGemmWork item = args.work[blockIdx.x];
  const TpGemmPath path = args.paths[item.path];
  char* smem = reinterpret_cast<char*>(smem_raw);
  switch (path.T * 8 + path.R) {
    case 1 * 8 + 1: FactoredBlock<kMode, 1, 1, kNt>(args, path, item, smem); break;
    case 1 * 8 + 3: FactoredBlock<kMode, 1, 3, kNt>(args, path, item, smem); break;
    case 1 * 8 + 5: FactoredBlock<kMode, 1, 5, kNt>(args, path, item, smem); break;
    case 3 * 8 + 1: FactoredBlock<kMode, 3, 1, kNt>(args, path, item, smem); break;
    case 3 * 8 + 3: FactoredBlock<kMode, 3, 3, kNt>(args, path, item, smem); break;
    case 3 * 8 + 5: FactoredBlock<kMode, 3, 5, kNt>(args, path, item, smem); break;
    case 5 * 8 + 1: FactoredBlock<kMode, 5, 1, kNt>(args, path, item, smem); break;
    case 5 * 8 + 3: FactoredBlock<kMode, 5, 3, kNt>(args, path, item, smem); break;
    default: FactoredBlock<kMode, 5, 5, kNt>(args, path, item, smem); break;
  }
}

constexpr size_t kMaxSmem = 227 * 1024;

}  // namespace

bool FactoredForwardSupports(const TpGemmPath& path) {
  auto odd_upto5 = [](int x) { return x == 1 || x == 3 || x == 5; };
  const bool shape_ok = odd_upto5(path.T) && odd_upto5(path.R) && path.S <= kMaxS && path.Q > 0 &&
                        path.Q % kTileK == 0 && path.N > 0 && path.P > 0 && path.w_stride_n == 1 && path.w_vec4;
  return shape_ok && SmemBytes<Mode::k3xTf32>(path.T * (path.Q + 4)) <= kMaxSmem;
}

int FactoredForwardSamples() { return kSamples; }
int FactoredForwardCols() { return kCols; }

namespace {

template <Mode kMode, int kNt>
cudaError_t Configure() {
  return cudaFuncSetAttribute(TpForwardFactoredKernel<kMode, kNt>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(kMaxSmem));
}

template <Mode kMode, int kNt>
cudaError_t Launch(int max_t_ldq, const TpGemmArgs& args, cudaStream_t stream) {
  TpForwardFactoredKernel<kMode, kNt><<<args.num_work, ThreadsFor<kNt>(), SmemBytes<kMode>(max_t_ldq), stream>>>(args);
  return cudaGetLastError();
}

}  // namespace

cudaError_t ConfigureFactoredForwardKernels() {
  for (cudaError_t e : {Configure<Mode::kTf32Bf16, 2>(), Configure<Mode::k3xTf32, 2>(), Configure<Mode::kTf32, 2>(),
                        Configure<Mode::kTf32Bf16, 4>(), Configure<Mode::k3xTf32, 4>(), Configure<Mode::kTf32, 4>()}) {
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t LaunchFactoredForward(MmaPrecision precision, bool three_tf32, int warp_cols, int max_t_ldq,
                                  const TpGemmArgs& args, cudaStream_t stream) {
  if (args.num_work == 0) return cudaSuccess;
  if ((reinterpret_cast<unsigned long long>(args.w) & 15) != 0) return cudaErrorMisalignedAddress;
  if (warp_cols != 16 && warp_cols != 32) return cudaErrorInvalidValue;
  const bool wide = warp_cols == 32;
  switch (precision) {
    case MmaPrecision::k3xTf32:
      if (three_tf32) {
        return wide ? Launch<Mode::k3xTf32, 4>(max_t_ldq, args, stream) : Launch<Mode::k3xTf32, 2>(max_t_ldq, args, stream);
      }
      return wide ? Launch<Mode::kTf32Bf16, 4>(max_t_ldq, args, stream)
                  : Launch<Mode::kTf32Bf16, 2>(max_t_ldq, args, stream);
    case MmaPrecision::kTf32:
      return wide ? Launch<Mode::kTf32, 4>(max_t_ldq, args, stream) : Launch<Mode::kTf32, 2>(max_t_ldq, args, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace tpserve::cuda
