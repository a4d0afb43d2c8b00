#include "kernels/core/plan.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/core/status_macros.h"

namespace tpserve {
namespace {

// e3nn's fan-in of one path ("num_elements"): the number of (u, v) pairs feeding one output channel.
int64_t FanIn(const PathPlan& path) {
  return path.mode == ConnectionMode::kUvw ? int64_t{path.mul_in1} * path.mul_in2 : int64_t{path.mul_in2};
}

}  // namespace

const char* ConnectionModeName(ConnectionMode mode) { return mode == ConnectionMode::kUvw ? "uvw" : "uvu"; }

absl::StatusOr<TensorProductPlan> TensorProductPlan::FullyConnected(const Irreps& irreps_in1,
                                                                    const Irreps& irreps_in2,
                                                                    const Irreps& irreps_out,
                                                                    const TensorProductOptions& options) {
  std::vector<InstructionSpec> instructions;
  for (int i1 = 0; i1 < irreps_in1.size(); ++i1)
    for (int i2 = 0; i2 < irreps_in2.size(); ++i2)
      for (int io = 0; io < irreps_out.size(); ++io)
        if (IsInProduct(irreps_in1[i1].ir, irreps_in2[i2].ir, irreps_out[io].ir))
          instructions.push_back({i1, i2, io, ConnectionMode::kUvw});
  return FromInstructions(irreps_in1, irreps_in2, irreps_out, instructions, options);
}

absl::StatusOr<TensorProductPlan> TensorProductPlan::FullyConnected(absl::string_view irreps_in1,
                                                                    absl::string_view irreps_in2,
                                                                    absl::string_view irreps_out,
                                                                    const TensorProductOptions& options) {
  ASSIGN_OR_RETURN(Irreps in1, Irreps::Parse(irreps_in1));
  ASSIGN_OR_RETURN(Irreps in2, Irreps::Parse(irreps_in2));
  ASSIGN_OR_RETURN(Irreps out, Irreps::Parse(irreps_out));
  return FullyConnected(in1, in2, out, options);
}

absl::StatusOr<TensorProductPlan> TensorProductPlan::FromInstructions(
    const Irreps& irreps_in1, const Irreps& irreps_in2, const Irreps& irreps_out,
    const std::vector<InstructionSpec>& instructions, const TensorProductOptions& options) {
  TensorProductPlan plan;
  plan.irreps_in1_ = irreps_in1;
  plan.irreps_in2_ = irreps_in2;
  plan.irreps_out_ = irreps_out;
  plan.weight_sharing_ = options.weight_sharing;
  for (const InstructionSpec& spec : instructions) {
    if (spec.i_in1 < 0 || spec.i_in1 >= irreps_in1.size() || spec.i_in2 < 0 || spec.i_in2 >= irreps_in2.size() ||
        spec.i_out < 0 || spec.i_out >= irreps_out.size()) {
      return absl::InvalidArgumentError(absl::StrCat("instruction (", spec.i_in1, ", ", spec.i_in2, ", ",
                                                     spec.i_out, "): expected indices below (", irreps_in1.size(),
                                                     ", ", irreps_in2.size(), ", ", irreps_out.size(), ")"));
    }
    const MulIrrep& a = irreps_in1[spec.i_in1];
    const MulIrrep& b = irreps_in2[spec.i_in2];
    const MulIrrep& c = irreps_out[spec.i_out];
    if (!IsInProduct(a.ir, b.ir, c.ir)) {
      return absl::InvalidArgumentError(absl::StrCat("instruction (", spec.i_in1, ", ", spec.i_in2, ", ", spec.i_out,
                                                     "): ", c.ir.ToString(), " is not in ", a.ir.ToString(), " x ",
                                                     b.ir.ToString()));
    }
    if (spec.mode == ConnectionMode::kUvu && c.mul != a.mul) {
      return absl::InvalidArgumentError(absl::StrCat("instruction (", spec.i_in1, ", ", spec.i_in2, ", ", spec.i_out,
                                                     "): 'uvu' expects mul_out == mul_in1, got ", c.mul, " and ",
                                                     a.mul));
    }
    PathPlan path;
    path.i_in1 = spec.i_in1;
    path.i_in2 = spec.i_in2;
    path.i_out = spec.i_out;
    path.l1 = a.ir.l;
    path.l2 = b.ir.l;
    path.l3 = c.ir.l;
    path.mul_in1 = a.mul;
    path.mul_in2 = b.mul;
    path.mul_out = c.mul;
    path.mode = spec.mode;
    path.offset_in1 = irreps_in1.offset(spec.i_in1);
    path.offset_in2 = irreps_in2.offset(spec.i_in2);
    path.offset_out = irreps_out.offset(spec.i_out);
    path.weight_offset = plan.weight_numel_;
    path.weight_numel = spec.mode == ConnectionMode::kUvw ? int64_t{a.mul} * b.mul * c.mul : int64_t{a.mul} * b.mul;
    plan.weight_numel_ += path.weight_numel;
    ASSIGN_OR_RETURN(path.cg, Wigner3j(path.l1, path.l2, path.l3));
    path.cg_nonzeros = Wigner3jNonzeros(path.cg, path.l1, path.l2, path.l3);
    plan.paths_.push_back(std::move(path));
  }

  // e3nn's normalization: alpha = (2l3+1 | d1*d2 | 1) / fan-in, path_weight = sqrt(alpha).
  for (PathPlan& path : plan.paths_) {
    double alpha = 1.0;
    switch (options.irrep_normalization) {
      case IrrepNormalization::kComponent: alpha = path.dim_out(); break;
      case IrrepNormalization::kNorm: alpha = static_cast<double>(path.dim_in1()) * path.dim_in2(); break;
      case IrrepNormalization::kNone: alpha = 1.0; break;
    }
    double fan_in = 1.0;
    if (options.path_normalization != PathNormalization::kNone) {
      int64_t sum_fan_in = 0, paths_into_output = 0;
      for (const PathPlan& other : plan.paths_) {
        if (other.i_out != path.i_out) continue;
        sum_fan_in += FanIn(other);
        ++paths_into_output;
      }
      fan_in = options.path_normalization == PathNormalization::kElement
                   ? static_cast<double>(sum_fan_in)
                   : static_cast<double>(FanIn(path) * paths_into_output);
    }
    if (fan_in > 0) alpha /= fan_in;
    path.path_weight = std::sqrt(alpha);
  }
  return plan;
}

double TensorProductPlan::ForwardFlops(int64_t batch) const {
  double multiply_adds = 0;
  for (const PathPlan& path : paths_) {
    multiply_adds += static_cast<double>(batch) * path.dim_out() * static_cast<double>(path.weight_numel);
  }
  return 2.0 * multiply_adds;
}

std::string TensorProductPlan::DebugString() const {
  std::string out = absl::StrCat(irreps_in1_.ToString(), " x ", irreps_in2_.ToString(), " -> ",
                                 irreps_out_.ToString(), ": ", paths_.size(), " paths, ", weight_numel_,
                                 " weights\n");
  for (const PathPlan& p : paths_) {
    absl::StrAppendFormat(&out, "  (%d,%d,%d) %s l=(%d,%d,%d) mul=(%d,%d,%d) path_weight=%.6g\n", p.i_in1, p.i_in2,
                          p.i_out, ConnectionModeName(p.mode), p.l1, p.l2, p.l3, p.mul_in1, p.mul_in2, p.mul_out,
                          p.path_weight);
  }
  return out;
}

}  // namespace tpserve
