// The weight gradient on Hopper's warpgroup MMA (wgmma, sm_90a), in the factored form.
//
// For one path, with Pz[z, p, t, r] = sum_s C[s, t, r] x1[z, p, s] and G = g_ir_mul:
//   dW[p, q, n] = scale * sum_{z, r} (sum_t Pz[z, p, t, r] x2[z, q, t]) G[z, r, n]      (tp_weight_grad.cu)
//               = scale * sum_{z, t} x2[z, q, t] Gz[z, p, t, n],   Gz[z, p, t, n] = sum_r Pz[z, p, t, r] G[z, r, n]
// so per p the transposed tile is one GEMM with the generated operand in registers as A:
//   dW_p^T[n, q] = sum_{(z, t)} Gz_p[n, (z, t)] * x2[(z, t), q]     M = 64 columns n per warpgroup (2 per
//                                                                   block), N = 128 rows q, K = batch x T
// Each A element costs R FMAs (the mma.sync kernel's T per element of K = batch x R: the same CUDA-core
// work per path when Q = N); the B operand x2 is read-only and the same for every n, so the block splits
// it once into shared-memory planes that both warpgroups read by descriptor (DESIGN.md says why this
// form and not the generated T as A with G as B: tf32 wgmma reads B only K-major, and G is n-major).
//
// K is walked in chunks of kZ samples (8 per k8 step; fp32: 8, 16 or 16 samples for T = 5, 3, 1, so
// that a chunk is 5, 6 or 2 k8 steps; tf32 and bf16, two blocks per SM: 8 samples, T k8 steps). The k
// index inside a chunk is (group of 8 samples, t, sample), so one k8 step is one t of 8 samples and a
// thread's A fragment holds samples t4 and t4 + 4 of that group for output columns col0 and col0 + 8:
// the 4 R values of G it needs stay in registers for the T steps of the group, and Pz comes from
// shared memory (broadcast).
//
// Copies: every thread copies (cp.async) exactly the x2, x1 and G elements it later reads itself, so
// no barrier is needed between a copy and its use: x2 of its items (8 samples of one (q, t)) -> the
// thread splits them into the chunk's B planes with 16-byte stores; x1 -> the thread computes its own
// Pz entry; G -> private slots, double-buffered by chunk parity and copied a chunk ahead (copied
// after the last read of a single buffer, the copy's latency was exposed every chunk at T = 5). One
// barrier per chunk publishes the next chunk's planes and Pz (double-buffered).
//
// fp32: TF32 wgmma of (Gz, x2) plus ONE bf16 wgmma of k16 carrying both corrections (Gz against
// x2_small, Gz_small against x2), as tp_forward_wgmma.cu; every chunk accumulates in a fresh register
// tile that is added to the total with an fp32 add (the tensor cores truncate while accumulating: see
// DESIGN.md, 5.7e-5 over K = 8192 without). tf32: Gz rounded to TF32 (x2 too), one accumulator.
// bf16: two k8 steps per bf16 wgmma of k16 (Gz and x2 rounded to bf16, one accumulator, only a bf16
// plane): k slot 8 (st % 2) + 2j + h holds sample 4h + j of step st, so a thread's TF32-layout
// fragments of the pair pack straight into its bf16 fragment; at T = 5 (5 steps) the last step pairs
// with zeros (A zero, and a zeroed core-matrix row of the plane).
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/tp_kernels.h"
#include "kernels/cuda/wgmma.cuh"

namespace tpserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRows = 128;  // weight rows q per block (wgmma N)
constexpr int kMax = 5;     // largest S, T, R (l <= 2)
constexpr int kPzStride = 28;  // one sample's Pz[t][r] (T x R <= 25), padded: t4 rows fall in distinct banks
constexpr int kCBlock = kMax * kMax * kMax;
constexpr int kNGroups = kRows / 8;  // core matrices along N

// Blocks resident per SM: tf32 and bf16 fit two (<= 128 registers, <= 113 KB of shared memory with
// chunks of one group), so that one block's prologue, barriers and dW store overlap the other's
// MMAs (one block of 8 warps per SM left the schedulers idle 69 % of cycles: ncu, BENCHMARKS.md).
// fp32 (218 registers) keeps one.
constexpr int BlocksPerSm(MmaPrecision precision) { return precision == MmaPrecision::k3xTf32 ? 1 : 2; }

// Groups of 8 samples per chunk: 2 at T = 1 and 3 with one block per SM (fewer barriers), 1 else.
constexpr int GroupsPerChunk(MmaPrecision precision, int t) {
  return t == 5 || BlocksPerSm(precision) == 2 ? 1 : 2;
}

// k16 steps of a bf16 chunk: k8 steps in pairs, an odd last one padded.
constexpr int Bf16Steps(int t) { return (GroupsPerChunk(MmaPrecision::kBf16, t) * t + 1) / 2; }

// Words of the B planes (two buffers): fp32: TF32 [2][K x 128] + bf16 pairs [2][2K x 128]; tf32: the
// TF32 planes; bf16: bf16 [2][16 Bf16Steps x 128].
constexpr int PlaneWords(MmaPrecision precision, int t) {
  const int plane = 8 * GroupsPerChunk(precision, t) * t * kRows;
  return precision == MmaPrecision::k3xTf32 ? 4 * plane
         : precision == MmaPrecision::kTf32 ? 2 * plane
                                            : 2 * Bf16Steps(t) * 8 * kRows;
}

// Shared memory in 4-byte words: the B planes, the raw x2 items [8][K x 16], G slots [2][4 R per
// group][kThreads], x1 slots [kMax][kThreads], Pz [2][kZ][kPzStride], the 3j block.
constexpr int SmemWords(MmaPrecision precision, int t, int r) {
  const int groups = GroupsPerChunk(precision, t), z = 8 * groups, plane = z * t * kRows;
  return PlaneWords(precision, t) + plane + 2 * groups * 4 * r * kThreads + kMax * kThreads +
         2 * z * kPzStride + kCBlock;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

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
// Generic-proxy stores (the B planes) become visible to the tensor cores' reads after the barrier.
__device__ __forceinline__ void FenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
template <int kN>
__device__ __forceinline__ void PinRegisters(float (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

template <MmaPrecision kPrec, int kT, int kR>
struct WgradBlock {
  static constexpr bool kFp32 = kPrec == MmaPrecision::k3xTf32, kBf16 = kPrec == MmaPrecision::kBf16;
  static constexpr int kG = GroupsPerChunk(kPrec, kT);  // groups of 8 samples per chunk
  static constexpr int kZ = 8 * kG;              // samples per chunk
  static constexpr int kK = kZ * kT;             // K per chunk
  static constexpr int kSteps = kG * kT;         // k8 steps per chunk
  static constexpr int kPlane = kK * kRows;      // words of one TF32 plane (= raw x2 floats of a chunk)
  // bf16 slots of one buffer of the bf16 plane: fp32 2 per k (x2_small and x2), bf16 16 per k16 step.
  static constexpr int kPlaneC = kBf16 ? Bf16Steps(kT) * 16 * kRows : 2 * kPlane;
  static constexpr int kAcc = kRows / 2;         // accumulators per thread
  static constexpr int kGSlots = kG * 4 * kR;
  static constexpr int kPzThreads = kZ * kT * kR;
  static constexpr int kItems = kPlane / 8;      // (group, q, t) items of a chunk
  static_assert(kPzThreads <= kThreads, "one Pz entry per thread");

  const WeightGradArgs& args;
  const WeightGradPath& path;
  uint32_t* sX;    // [2][kPlane]
  uint16_t* sXc;   // [2][kPlaneC] (fp32, bf16)
  float* sRaw;     // [8][kItems]
  float* sGs;      // [2 (chunk parity)][kGSlots][kThreads]
  float* sX1;      // [kMax][kThreads]
  float* sPz;      // [2][kZ][kPzStride]
  float* sC;       // [(r * kMax + s) * kMax + t]
  int tid, t4, col0;
  int p, q0, n0, z_begin, z_end, q_valid;
  const float* g_lane;  // G of this thread's column col0 (row 0, r 0)
  bool n_ok0, n_ok1;    // columns col0, col0 + 8 inside the path

  __device__ WgradBlock(const WeightGradArgs& a, const WeightGradPath& pa, const WeightGradWork& item, char* smem)
      : args(a), path(pa) {
    sX = reinterpret_cast<uint32_t*>(smem);
    sXc = reinterpret_cast<uint16_t*>(kBf16 ? sX : sX + 2 * kPlane);
    sRaw = reinterpret_cast<float*>(sX + PlaneWords(kPrec, kT));
    sGs = sRaw + kPlane;
    sX1 = sGs + 2 * kGSlots * kThreads;
    sPz = sX1 + kMax * kThreads;
    sC = sPz + 2 * kZ * kPzStride;
    tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    t4 = lane & 3;
    col0 = (warp >> 2) * 64 + (warp & 3) * 16 + (lane >> 2);
    p = item.m0 / path.Q;
    q0 = item.m0 - p * path.Q;
    n0 = item.n0;
    z_begin = item.k_begin;
    z_end = item.k_end;
    q_valid = min(kRows, path.Q - q0);
    g_lane = args.g + path.g_offset + n0 + col0;
    n_ok0 = n0 + col0 < path.N;
    n_ok1 = n0 + col0 + 8 < path.N;
  }

  // Items of a chunk: (group gi of 8 samples, q, t), 8 x2 values each, numbered so that 8
  // consecutive lanes share (q / 8, t) and take q % 8 = 0..7 (their 16-byte plane stores hit
  // distinct banks), and a warp's copies stay within a few sectors of one sample's row.
  __device__ __forceinline__ void ItemCoords(int it, int& gi, int& q, int& t) const {
    gi = it / (kT * kRows);
    const int rem = it - gi * (kT * kRows), qhi_t = rem >> 3;
    const int qhi = qhi_t / kT;
    t = qhi_t - qhi * kT;
    q = qhi * 8 + (rem & 7);
  }

  // x2[z, b_offset + (q0 + q) T + t] of this thread's items into sRaw[sample of the group][item]
  // (zeros past the batch and past Q); x1 of this thread's Pz sample.
  __device__ __forceinline__ void IssueRawAndX1(int chunk) {
    const int zc = z_begin + chunk * kZ;
    const float* x2 = args.x2 + path.b_offset + q0 * kT;
#pragma unroll 1
    for (int it = tid; it < kItems; it += kThreads) {
      int gi, q, t;
      ItemCoords(it, gi, q, t);
      const int z0 = zc + gi * 8;
      const bool q_ok = q < q_valid;
      const float* src = x2 + static_cast<long long>(z0) * args.x2_row_stride + q * kT + t;
#pragma unroll
      for (int zl = 0; zl < 8; ++zl) {
        const bool valid = q_ok && z0 + zl < z_end;
        CpAsync4(sRaw + zl * kItems + it, valid ? src + zl * args.x2_row_stride : args.x2, valid);
      }
    }
    if (tid < kPzThreads) {
      const int zl = tid / (kT * kR);
      const bool live = zc + zl < z_end;
      const float* x1 = args.x1 + static_cast<long long>(zc + zl) * args.x1_row_stride + path.a_offset + p * path.S;
#pragma unroll 1
      for (int s = 0; s < path.S; ++s) CpAsync4(sX1 + s * kThreads + tid, live ? x1 + s : args.x1, live);
    }
  }

  // G[z, r, n] for this thread's A rows (col0, col0 + 8) and samples (t4, t4 + 4) of group gi into
  // its slots (gi, zi, h, r) = gi * 4 R + (zi * 2 + h) * R + r.
  __device__ __forceinline__ void IssueG(int chunk, int gi) {
    const int z_first = z_begin + chunk * kZ + gi * 8 + t4;
#pragma unroll 1
    for (int zi = 0; zi < 2; ++zi) {
      const int z = z_first + 4 * zi;
      const float* row = g_lane + static_cast<long long>(z) * args.g_row_stride;
      float* dst = sGs + ((chunk & 1) * kGSlots + gi * 4 * kR + zi * 2 * kR) * kThreads + tid;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const bool valid = z < z_end && (h == 0 ? n_ok0 : n_ok1);
#pragma unroll
        for (int r = 0; r < kR; ++r)
          CpAsync4(dst + (h * kR + r) * kThreads, valid ? row + r * path.N + 8 * h : args.g, valid);
      }
    }
  }

  // This thread's items into the B planes of `buf` (two 16-byte stores per plane and item: the
  // item's 8 samples are k = 8 st .. 8 st + 7 of one column q), and its Pz entry.
  __device__ __forceinline__ void StagePlanesAndPz(int buf) {
    uint32_t* x = sX + buf * kPlane;
    uint16_t* xc = sXc + buf * kPlaneC;
#pragma unroll 1
    for (int it = tid; it < kItems; it += kThreads) {
      int gi, q, t;
      ItemCoords(it, gi, q, t);
      const int st = gi * kT + t, cm = q >> 3, cr = q & 7;
      float v[8];
#pragma unroll
      for (int zl = 0; zl < 8; ++zl) v[zl] = sRaw[zl * kItems + it];
      // bf16 pairs (v[j], v[j + 4]): slots 2j + h = sample 4h + j of the item's k8 step.
      const uint4 pairs =
          make_uint4(PackBf16(v[0], v[4]), PackBf16(v[1], v[5]), PackBf16(v[2], v[6]), PackBf16(v[3], v[7]));
      if constexpr (kBf16) {
        *reinterpret_cast<uint4*>(xc + (st * kNGroups + cm) * 64 + cr * 8) = pairs;  // core matrix (st, q / 8)
      } else {
        uint32_t big[8];
#pragma unroll
        for (int zl = 0; zl < 8; ++zl) big[zl] = ToTf32(v[zl]);
        // TF32 word (k % 4) of core matrix (k / 4, q / 8), row q % 8.
        *reinterpret_cast<uint4*>(x + ((2 * st) * kNGroups + cm) * 32 + cr * 4) =
            make_uint4(big[0], big[1], big[2], big[3]);
        *reinterpret_cast<uint4*>(x + ((2 * st + 1) * kNGroups + cm) * 32 + cr * 4) =
            make_uint4(big[4], big[5], big[6], big[7]);
        if constexpr (kFp32) {
          // The k16 correction step's slots: 2j + h = x2_small at k = 8 st + 4h + j (core row 2 st),
          // 8 + 2j + h = x2 there (core row 2 st + 1).
          float small[8];
#pragma unroll
          for (int zl = 0; zl < 8; ++zl) small[zl] = v[zl] - __uint_as_float(big[zl]);
          *reinterpret_cast<uint4*>(xc + ((2 * st) * kNGroups + cm) * 64 + cr * 8) =
              make_uint4(PackBf16(small[0], small[4]), PackBf16(small[1], small[5]), PackBf16(small[2], small[6]),
                         PackBf16(small[3], small[7]));
          *reinterpret_cast<uint4*>(xc + ((2 * st + 1) * kNGroups + cm) * 64 + cr * 8) = pairs;
        }
      }
    }
    if (tid < kPzThreads) {
      const int zl = tid / (kT * kR), tr = tid - zl * (kT * kR), t = tr / kR, r = tr - t * kR;
      float acc = 0.f;
#pragma unroll
      for (int s = 0; s < kMax; ++s)
        if (s < path.S) acc += sC[(r * kMax + s) * kMax + t] * sX1[s * kThreads + tid];
      sPz[(buf * kZ + zl) * kPzStride + t * kR + r] = acc;
    }
  }

  __device__ __forceinline__ void Run() {
    // Chunk 0's copies first, so that their latency overlaps the 3j block's loads.
    const int num_chunks = (z_end - z_begin + kZ - 1) / kZ;
    IssueRawAndX1(0);
#pragma unroll
    for (int gi = 0; gi < kG; ++gi) IssueG(0, gi);
    CpAsyncCommit();
    // The path's 3j block, dense (zeros where C has none).
    for (int i = tid; i < kCBlock; i += kThreads) sC[i] = 0.f;
    if constexpr (kBf16 && kSteps % 2 == 1) {  // the pad row (k8 step kSteps) of both buffers
      for (int i = tid; i < 2 * kNGroups * 64 / 2; i += kThreads) {
        const int buf = i / (kNGroups * 32), w = i - buf * (kNGroups * 32);
        reinterpret_cast<uint32_t*>(sXc + buf * kPlaneC + kSteps * kNGroups * 64)[w] = 0u;
      }
    }
    __syncthreads();
    {
      const int* roff = args.roff + path.roff_begin;
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const int e_end = __ldg(roff + r + 1);
        for (int e = __ldg(roff + r) + tid; e < e_end; e += kThreads) {
          const NzEntry nz = args.nz[e];
          sC[(r * kMax + nz.s) * kMax + nz.t] = nz.c;
        }
      }
    }
    CpAsyncWait<0>();
    __syncthreads();  // sC
    StagePlanesAndPz(0);
    asm volatile("" ::: "memory");
    if (num_chunks > 1) IssueRawAndX1(1);
    CpAsyncCommit();
    FenceProxyAsync();
    __syncthreads();

    float acc[kAcc];
    float part[kFp32 ? kAcc : 1];
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

    // One k8 step spans 2 core matrices along K (leading byte offset: the next core matrix in K,
    // kNGroups x 128 bytes; stride byte offset: the next 8 columns, 128 bytes), as in tp_forward_wgmma.cu.
    constexpr uint32_t k_bytes = kNGroups * 128, n_bytes = 128;
    constexpr uint64_t kStepDesc = (2 * k_bytes) >> 4;
    const uint64_t x_desc0 = SmemDesc(static_cast<uint32_t>(__cvta_generic_to_shared(sX)), k_bytes, n_bytes);
    const uint64_t xc_desc0 = SmemDesc(static_cast<uint32_t>(__cvta_generic_to_shared(sXc)), k_bytes, n_bytes);
    constexpr uint64_t kPlaneDesc = (kPlane * 4) >> 4, kPlaneDescC = (kPlaneC * 2) >> 4;

    uint32_t a_tf32[2][4], a_fix[2][4], a_bf16[2][4];
    float gv[2][2][kR];  // [sample t4 + 4 zi][column col0 + 8 h][r]
    for (int c = 0; c < num_chunks; ++c) {
      const int buf = c & 1;
      const float* pz_buf = sPz + buf * kZ * kPzStride;
      // Chunk c + 1's G into the other slot buffer, a whole chunk ahead of its use (this thread
      // read that buffer in chunk c - 1, whose MMAs are complete). One copy group per chunk, empty
      // past the last, so that the waits count statically.
      if (c + 1 < num_chunks) {
#pragma unroll
        for (int gi = 0; gi < kG; ++gi) IssueG(c + 1, gi);
      }
      CpAsyncCommit();
#pragma unroll
      for (int st = 0; st < kSteps; ++st) {
        const int gi = st / kT, t = st - gi * kT;
        if (t == 0) {
          // Chunk c's G landed: two copy groups were committed after it (chunk c + 1's raw x2 and
          // chunk c + 1's G).
          CpAsyncWait<2>();
#pragma unroll
          for (int zi = 0; zi < 2; ++zi)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
              for (int r = 0; r < kR; ++r)
                gv[zi][h][r] = sGs[(buf * kGSlots + gi * 4 * kR + (zi * 2 + h) * kR + r) * kThreads + tid];
        }
        float a[4];  // (sample t4, col0), (t4, col0 + 8), (t4 + 4, col0), (t4 + 4, col0 + 8)
#pragma unroll
        for (int zi = 0; zi < 2; ++zi) {
          const float* pz = pz_buf + (gi * 8 + t4 + 4 * zi) * kPzStride + t * kR;
          float pr[kR];
#pragma unroll
          for (int r = 0; r < kR; ++r) pr[r] = pz[r];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float v = 0.f;
#pragma unroll
            for (int r = 0; r < kR; ++r) v += pr[r] * gv[zi][h][r];
            a[2 * zi + h] = v;
          }
        }
        if constexpr (kBf16) {
          // Steps 2j and 2j + 1 fill the two halves of k16 step j; an odd last step pairs with zeros.
          uint32_t(&ab)[4] = a_bf16[(st >> 1) & 1];
          ab[2 * (st & 1)] = PackBf16(a[0], a[2]);
          ab[2 * (st & 1) + 1] = PackBf16(a[1], a[3]);
          if (st % 2 == 0 && st + 1 < kSteps) continue;
          if (st % 2 == 0) ab[2] = ab[3] = 0u;
          WgmmaFence();
          wgmma::WgmmaBf16<kRows>(acc, ab, xc_desc0 + buf * kPlaneDescC + (st >> 1) * kStepDesc, 1);
          WgmmaCommit();
          WgmmaWait<1>();  // the previous k16 step is done: its fragment registers may be written next
          continue;
        }
        uint32_t(&at)[4] = a_tf32[st & 1];
#pragma unroll
        for (int i = 0; i < 4; ++i) at[i] = ToTf32(a[i]);
        if constexpr (kFp32) {
          float small[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) small[i] = a[i] - __uint_as_float(at[i]);
          a_fix[st & 1][0] = PackBf16(a[0], a[2]);
          a_fix[st & 1][1] = PackBf16(a[1], a[3]);
          a_fix[st & 1][2] = PackBf16(small[0], small[2]);
          a_fix[st & 1][3] = PackBf16(small[1], small[3]);
        }
        WgmmaFence();
        const uint64_t step = st * kStepDesc;
        if constexpr (kFp32) {
          wgmma::WgmmaTf32<kRows>(part, at, x_desc0 + buf * kPlaneDesc + step, st > 0);
          wgmma::WgmmaBf16<kRows>(part, a_fix[st & 1], xc_desc0 + buf * kPlaneDescC + step, 1);
        } else {
          wgmma::WgmmaTf32<kRows>(acc, at, x_desc0 + buf * kPlaneDesc + step, 1);
        }
        WgmmaCommit();
        WgmmaWait<1>();  // the previous step is done: its fragment registers may be written next
      }
      if (c + 1 < num_chunks) {
        CpAsyncWait<1>();  // chunk c + 1's raw x2 and x1 (chunk c + 1's G was committed since)
        StagePlanesAndPz(buf ^ 1);
        asm volatile("" ::: "memory");  // the reads of sRaw and sX1 above stay before their refill
        if (c + 2 < num_chunks) IssueRawAndX1(c + 2);
      }
      CpAsyncCommit();
      WgmmaWait<0>();
      if constexpr (kFp32) {
        PinRegisters(part);
#pragma unroll
        for (int i = 0; i < kAcc; ++i) acc[i] += part[i];
      }
      FenceProxyAsync();
      __syncthreads();  // planes and Pz of chunk c + 1 complete; those of chunk c read
    }
    WgmmaWait<0>();
    PinRegisters(acc);

    // Accumulator 4j + e: column n = col0 + 8 (e / 2), row q = 8j + 2 t4 + e % 2.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int n = n0 + col0 + 8 * h;
      if (n >= path.N) continue;
      float* dw = args.grad_w + path.w_offset + static_cast<long long>(p) * path.Q * path.N + n;
#pragma unroll
      for (int j = 0; j < kRows / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int q = q0 + 8 * j + 2 * t4 + e;
          if (q >= path.Q) continue;
          float* dst = dw + static_cast<long long>(q) * path.N;
          const float value = path.scale * acc[4 * j + 2 * h + e];
          switch (args.store) {
            case WeightGradStore::kAssign: *dst = value; break;
            case WeightGradStore::kAdd: *dst += value; break;
            case WeightGradStore::kAtomicAdd: atomicAdd(dst, value); break;
          }
        }
    }
  }
};

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <MmaPrecision kPrec>
__global__ void __launch_bounds__(kThreads, BlocksPerSm(kPrec)) WeightGradWgmmaKernel(const WeightGradArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ float4 smem_raw[];
  const WeightGradWork item = args.work[blockIdx.x];
  const WeightGradPath path = args.paths[item.path];
  char* smem = reinterpret_cast<char*>(smem_raw);
  switch (path.T * 8 + path.R) {
    case 1 * 8 + 1: WgradBlock<kPrec, 1, 1>(args, path, item, smem).Run(); break;
    case 1 * 8 + 3: WgradBlock<kPrec, 1, 3>(args, path, item, smem).Run(); break;
    case 1 * 8 + 5: WgradBlock<kPrec, 1, 5>(args, path, item, smem).Run(); break;
    case 3 * 8 + 1: WgradBlock<kPrec, 3, 1>(args, path, item, smem).Run(); break;
    case 3 * 8 + 3: WgradBlock<kPrec, 3, 3>(args, path, item, smem).Run(); break;
    case 3 * 8 + 5: WgradBlock<kPrec, 3, 5>(args, path, item, smem).Run(); break;
    case 5 * 8 + 1: WgradBlock<kPrec, 5, 1>(args, path, item, smem).Run(); break;
    case 5 * 8 + 3: WgradBlock<kPrec, 5, 3>(args, path, item, smem).Run(); break;
    default: WgradBlock<kPrec, 5, 5>(args, path, item, smem).Run(); break;
  }
#else
  __trap();  // built for another architecture: the host launches this only where FactoredWgmmaUsable
#endif
}

constexpr size_t kMaxSmem = 227 * 1024;

}  // namespace

bool WeightGradWgmmaSupports(const WeightGradPath& path) {
  auto odd_le5 = [](int d) { return d == 1 || d == 3 || d == 5; };
  return odd_le5(path.T) && odd_le5(path.R) && path.S >= 1 && path.S <= kMax;
}

// The largest chunk of any precision (the others' chunks divide it).
int WeightGradWgmmaSamples(int T) { return 8 * GroupsPerChunk(MmaPrecision::k3xTf32, T); }

size_t WeightGradWgmmaSmemBytes(MmaPrecision precision, const WeightGradPath& path) {
  return sizeof(float) * static_cast<size_t>(SmemWords(precision, path.T, path.R));
}

namespace {
template <MmaPrecision kPrec>
cudaError_t Configure() {
  cudaError_t e = cudaFuncSetAttribute(WeightGradWgmmaKernel<kPrec>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kMaxSmem));
  // All of the unified L1 as shared memory, so that BlocksPerSm blocks fit.
  if (e == cudaSuccess) {
    e = cudaFuncSetAttribute(WeightGradWgmmaKernel<kPrec>, cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared);
  }
  return e;
}
}  // namespace

cudaError_t ConfigureWeightGradWgmmaKernels() {
  for (cudaError_t e : {Configure<MmaPrecision::k3xTf32>(), Configure<MmaPrecision::kTf32>(),
                        Configure<MmaPrecision::kBf16>()}) {
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t LaunchWeightGradWgmma(MmaPrecision precision, size_t smem_bytes, const WeightGradArgs& args,
                                  cudaStream_t stream) {
  if (args.num_work == 0) return cudaSuccess;
  if (smem_bytes > kMaxSmem) return cudaErrorInvalidValue;
  switch (precision) {
    case MmaPrecision::k3xTf32:
      WeightGradWgmmaKernel<MmaPrecision::k3xTf32><<<args.num_work, kThreads, smem_bytes, stream>>>(args);
      break;
    case MmaPrecision::kTf32:
      WeightGradWgmmaKernel<MmaPrecision::kTf32><<<args.num_work, kThreads, smem_bytes, stream>>>(args);
      break;
    case MmaPrecision::kBf16:
      WeightGradWgmmaKernel<MmaPrecision::kBf16><<<args.num_work, kThreads, smem_bytes, stream>>>(args);
      break;
  }
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
