// Launch interface of the tensor-product kernels: the device-side tables the host fills in
// (path descriptors, tile work lists, 3j nonzeros) and one launcher per kernel family.
// Host code includes this header only; kernel bodies live in the .cu files.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace tpserve::cuda {

// Arithmetic of the tensor-core products (fp32 accumulation in every case).
enum class MmaPrecision : int { k3xTf32 = 0, kTf32 = 1, kBf16 = 2 };
// Tile shapes: kWide 128 rows x 128 columns (multiplicities above 32), kNarrow 128 x 32.
enum class TileShape : int { kWide = 0, kNarrow = 1 };
inline constexpr int kTileRows = 128;  // BM of both shapes
inline constexpr int kTileK = 32;      // BK of both shapes
inline int TileCols(TileShape shape) { return shape == TileShape::kWide ? 128 : 32; }

// One nonzero 3j coefficient in a role's index names: c = C[s-index of a, t-index of b, r-index].
struct NzEntry {
  int16_t s, t;
  float c;
};

// One path in a "forward-shaped" role (forward, grad_x1, grad_x2):
//   out[z, off_out + n*R + r] += scale * sum_{p<P, q<Q} Wt[p, q, n] * A[z, r, p, q]
//   A[z, r, p, q] = sum_{(s, t) nonzero for r} c * a[z, off_a + p*S + s] * b[z, off_b + q*T + t]
//   Wt[p, q, n]   = w[w_offset + p*w_stride_p + q*w_stride_q + n*w_stride_n]
struct TpGemmPath {
  int R, P, Q, N, S, T;
  int a_offset, b_offset, out_offset;
  int roff_begin;  // nonzeros with r-index r are nz[roff[roff_begin + r] .. roff[roff_begin + r + 1])
  long long w_offset, w_stride_p, w_stride_q, w_stride_n;
  float scale;
  // Fast A generation (T of 1, 3, 5 or 7 and Q a multiple of 32, so one K tile has one p): T, else 0.
  int fast_t;
  // W tiles load as 16-byte copies (w_stride_n == 1 and every offset a multiple of 4 floats).
  int w_vec4;
};

// One thread block of a forward-shaped launch: rows of samples [z0, z0 + 128 / R), output columns
// [n0, n0 + tile cols), reduction indices [k_begin, k_end) of the flattened (p, q).
struct TpGemmWork {
  int path, z0, n0, k_begin, k_end;
};

struct TpGemmArgs {
  const TpGemmPath* paths;
  const TpGemmWork* work;
  int num_work;
  const NzEntry* nz;
  const int* roff;
  const float* a;
  long long a_row_stride;
  const float* b;
  long long b_row_stride;
  const float* w;
  float* out;  // accumulated with atomics: zero it first
  long long out_row_stride;
  int batch;
  // 0: out in e3nn's layout out[z, off + n*R + r]; 1: transposed per irrep, out[z, off + r*N + n]
  // (the layout the weight gradient reads g in, so a loss can turn out into g in place).
  int out_ir_mul;
};

// One path of the weight gradient (g in the transposed layout g_ir_mul):
//   dW[w_offset + (p*Q + q)*N + n] (=|+=) scale * sum_{z, r} A[z, r, p, q] * g_ir_mul[z, off_g + r*N + n]
// with A generated as above from a = x1, b = x2.
struct WeightGradPath {
  int R, P, Q, N, S, T;
  int a_offset, b_offset, g_offset;
  int roff_begin;
  long long w_offset;
  float scale;
  int fast_t;  // as in TpGemmPath
  int g_vec4;  // N and off_g multiples of 4: g rows copy as 16-byte pieces
};

// One thread block: rows [m0, m0 + 128) of the flattened (p, q), columns [n0, ...), reduction
// indices [k_begin, k_end) of the flattened (z, r).
struct WeightGradWork {
  int path, m0, n0, k_begin, k_end;
};

enum class WeightGradStore : int { kAssign = 0, kAdd = 1, kAtomicAdd = 2 };

struct WeightGradArgs {
  const WeightGradPath* paths;
  const WeightGradWork* work;
  int num_work;
  const NzEntry* nz;
  const int* roff;
  const float* x1;
  long long x1_row_stride;
  const float* x2;
  long long x2_row_stride;
  const float* g;  // g_ir_mul
  long long g_row_stride;
  float* grad_w;
  WeightGradStore store;
};

// Raise the shared-memory limits of every kernel instantiation on the current device (once per device).
cudaError_t ConfigureTpGemmKernels();
cudaError_t ConfigureWeightGradKernels();

cudaError_t LaunchTpGemm(MmaPrecision precision, TileShape shape, const TpGemmArgs& args, cudaStream_t stream);

// Forward with the x2 contraction first (tp_forward_factored.cu): same arguments, but a work item's
// [k_begin, k_end) is a range of p (x1 multiplicity index), z0 steps by FactoredForwardSamples() and
// n0 by FactoredForwardCols(). 3xTF32 and TF32 only, for paths where FactoredForwardSupports();
// max_t_ldq = the largest T * (Q + 4) among the launch's paths (sizes shared memory).
bool FactoredForwardSupports(const TpGemmPath& path);
int FactoredForwardSamples();
int FactoredForwardCols();
cudaError_t ConfigureFactoredForwardKernels();
// k3xTf32 (fp32 accuracy) runs one TF32 MMA plus one bf16 MMA carrying both correction terms per
// product, unless three_tf32 (the classic three TF32 MMAs: slower, ~2x smaller error; comparisons).
// warp_cols: output columns per warp, 32 (8 warps per block; faster) or 16 (16 warps; comparisons).
cudaError_t LaunchFactoredForward(MmaPrecision precision, bool three_tf32, int warp_cols, int max_t_ldq,
                                  const TpGemmArgs& args, cudaStream_t stream);
// The same work list on Hopper's wgmma (tp_forward_wgmma.cu; k3xTf32 = TF32 + bf16 correction, or
// kTf32): usable where FactoredWgmmaUsable(device) (an sm_90 device running the sm_90a image) and
// every factored path FactoredWgmmaFits(); max_t_q = the largest T * Q among the launch's paths.
bool FactoredWgmmaUsable(int device);
bool FactoredWgmmaFits(const TpGemmPath& path);
cudaError_t ConfigureFactoredWgmmaKernels();
cudaError_t LaunchFactoredForwardWgmma(MmaPrecision precision, int max_t_q, const TpGemmArgs& args,
                                       cudaStream_t stream);
cudaError_t LaunchWeightGrad(MmaPrecision precision, TileShape shape, const WeightGradArgs& args,
                             cudaStream_t stream);
// The weight gradient on Hopper's wgmma (tp_weight_grad_wgmma.cu; k3xTf32 = TF32 + bf16 correction,
// kTf32 or kBf16), usable where FactoredWgmmaUsable(device) and every path WeightGradWgmmaSupports (T, R in
// {1, 3, 5}, S <= 5). A work item is (path, m0 = p * Q + q0 with q0 a multiple of 128, n0 a multiple
// of 128, samples [k_begin, k_end)); K slices should be multiples of WeightGradWgmmaSamples(T).
// smem_bytes = the largest WeightGradWgmmaSmemBytes among the launch's paths.
bool WeightGradWgmmaSupports(const WeightGradPath& path);
int WeightGradWgmmaSamples(int T);
size_t WeightGradWgmmaSmemBytes(MmaPrecision precision, const WeightGradPath& path);
cudaError_t ConfigureWeightGradWgmmaKernels();
cudaError_t LaunchWeightGradWgmma(MmaPrecision precision, size_t smem_bytes, const WeightGradArgs& args,
                                  cudaStream_t stream);
// Output gradient from the forward result (losses) or a given grad_out, written in e3nn's layout
// (g_mul_ir, optional) and in the per-irrep transposed layout g_ir_mul[z, off + k*mul + w] that the
// weight gradient reads (see loss_grad.cu). With ir_mul_col == nullptr, src is already transposed
// and g_ir_mul[i] = g(src[i]) elementwise (src == g_ir_mul allowed).
enum class OutputGradMode : int { kSumTanh = 0, kSum = 1, kCopy = 2 };
cudaError_t LaunchOutputGrad(OutputGradMode mode, const float* src, const int* ir_mul_col, int dim_out,
                             long long batch, float* g_mul_ir, float* g_ir_mul, cudaStream_t stream);

}  // namespace tpserve::cuda
