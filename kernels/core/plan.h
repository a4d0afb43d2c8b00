// The plan of a tensor product: which paths (instructions) it has, their normalization, where
// each path's operands and weights live in the flat e3nn layouts, and their Wigner 3j blocks.
//
// For a path p = (l1, l2, l3) with path weight a and 3j block C:
//   'uvw':  out[z, w, k] += a * sum_{u,v} W[u, v, w] * T[z, k, u, v]     weight block [mul1][mul2][mul_out]
//   'uvu':  out[z, u, k] += a * sum_{v}   W[u, v]    * T[z, k, u, v]     weight block [mul1][mul2], mul_out == mul1
//   T[z, k, u, v] = sum_{i,j} C[i, j, k] * x1[z, u, i] * x2[z, v, j]
// with x1[z, u, i] = x1_flat[z, offset_in1 + u * (2l1+1) + i] (likewise x2, out).
// Weights are shared by the whole batch (one block set) or per sample ([batch][weight_numel]).
// Mode and weight sharing are data of the plan; backends read them, they do not assume them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/irreps.h"
#include "kernels/core/wigner3j.h"

namespace tpserve {

enum class ConnectionMode { kUvw, kUvu };
enum class WeightSharing { kShared, kPerSample };

const char* ConnectionModeName(ConnectionMode mode);  // "uvw", "uvu"

struct PathPlan {
  // Indices into irreps_in1 / irreps_in2 / irreps_out (e3nn's i_in1, i_in2, i_out).
  int i_in1 = 0, i_in2 = 0, i_out = 0;
  int l1 = 0, l2 = 0, l3 = 0;
  int mul_in1 = 0, mul_in2 = 0, mul_out = 0;
  ConnectionMode mode = ConnectionMode::kUvw;
  double path_weight = 1.0;  // e3nn's normalization coefficient, sqrt(alpha)
  // Offsets in the flat per-sample vectors x1, x2 and out.
  int64_t offset_in1 = 0, offset_in2 = 0, offset_out = 0;
  // This path's block in the flat weight vector (per sample when weights are per sample).
  int64_t weight_offset = 0, weight_numel = 0;
  // Dense 3j block [2l1+1][2l2+1][2l3+1] and its nonzeros.
  std::vector<double> cg;
  std::vector<Wigner3jEntry> cg_nonzeros;

  int dim_in1() const { return 2 * l1 + 1; }
  int dim_in2() const { return 2 * l2 + 1; }
  int dim_out() const { return 2 * l3 + 1; }
};

// Normalization options of e3nn's TensorProduct (defaults: 'component' and 'element').
enum class IrrepNormalization { kComponent, kNorm, kNone };
enum class PathNormalization { kElement, kPath, kNone };

struct TensorProductOptions {
  IrrepNormalization irrep_normalization = IrrepNormalization::kComponent;
  PathNormalization path_normalization = PathNormalization::kElement;
  WeightSharing weight_sharing = WeightSharing::kShared;
  // Polled while the plan is built (every few hundred paths): returning true stops the build with
  // CANCELLED. Lets a server drop the work of a client that cancelled or ran out of time.
  std::function<bool()> should_stop;
};

// One requested instruction, as in e3nn's TensorProduct(instructions=[(i1, i2, io, mode, True)]).
struct InstructionSpec {
  int i_in1, i_in2, i_out;
  ConnectionMode mode;
};

class TensorProductPlan {
 public:
  // e3nn's o3.FullyConnectedTensorProduct(irreps_in1, irreps_in2, irreps_out): one 'uvw' path
  // for every (i_in1, i_in2, i_out) with ir_out in ir1 x ir2, in that loop order.
  static absl::StatusOr<TensorProductPlan> FullyConnected(const Irreps& irreps_in1, const Irreps& irreps_in2,
                                                          const Irreps& irreps_out,
                                                          const TensorProductOptions& options = {});
  // Convenience overload that parses the three irreps strings.
  static absl::StatusOr<TensorProductPlan> FullyConnected(absl::string_view irreps_in1,
                                                          absl::string_view irreps_in2,
                                                          absl::string_view irreps_out,
                                                          const TensorProductOptions& options = {});
  // A general tensor product from an explicit instruction list (e.g. 'uvu' convolutions).
  // Linear in the number of instructions: each distinct (l1, l2, l3) 3j block is computed once and
  // the normalization's fan-ins are summed per output in one pass.
  static absl::StatusOr<TensorProductPlan> FromInstructions(const Irreps& irreps_in1, const Irreps& irreps_in2,
                                                            const Irreps& irreps_out,
                                                            const std::vector<InstructionSpec>& instructions,
                                                            const TensorProductOptions& options = {});

  const Irreps& irreps_in1() const { return irreps_in1_; }
  const Irreps& irreps_in2() const { return irreps_in2_; }
  const Irreps& irreps_out() const { return irreps_out_; }
  const std::vector<PathPlan>& paths() const { return paths_; }
  WeightSharing weight_sharing() const { return weight_sharing_; }
  // Weights per sample (per-sample sharing) or in all (shared): e3nn's weight_numel.
  int64_t weight_numel() const { return weight_numel_; }
  int64_t dim_in1() const { return irreps_in1_.dim(); }
  int64_t dim_in2() const { return irreps_in2_.dim(); }
  int64_t dim_out() const { return irreps_out_.dim(); }

  // Multiply-adds of the GEMM-shaped work of one forward pass over `batch` samples
  // (sum over paths of batch * (2l3+1) * K * N), as counted in docs/BENCHMARKS.md; x2 for FLOPs.
  double ForwardFlops(int64_t batch) const;
  std::string DebugString() const;

 private:
  Irreps irreps_in1_, irreps_in2_, irreps_out_;
  std::vector<PathPlan> paths_;
  WeightSharing weight_sharing_ = WeightSharing::kShared;
  int64_t weight_numel_ = 0;
};

}  // namespace tpserve
