#include "kernels/core/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <tuple>

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
  // Outputs by irrep, so that each (i1, i2) visits only the outputs in its product (work in
  // proportion to the paths, not to every triple of terms).
  std::map<std::pair<int, int>, std::vector<int>> outputs_by_irrep;  // (l, parity) -> indices, ascending
  for (int io = 0; io < irreps_out.size(); ++io) outputs_by_irrep[{irreps_out[io].ir.l, irreps_out[io].ir.parity}].push_back(io);
  std::vector<InstructionSpec> instructions;
  std::vector<int> outputs;
  for (int i1 = 0; i1 < irreps_in1.size(); ++i1) {
    for (int i2 = 0; i2 < irreps_in2.size(); ++i2) {
      const Irrep& a = irreps_in1[i1].ir;
      const Irrep& b = irreps_in2[i2].ir;
      outputs.clear();
      for (int l = std::abs(a.l - b.l); l <= a.l + b.l; ++l) {
        auto it = outputs_by_irrep.find({l, a.parity * b.parity});
        if (it != outputs_by_irrep.end()) outputs.insert(outputs.end(), it->second.begin(), it->second.end());
      }
      std::sort(outputs.begin(), outputs.end());  // e3nn's order: i_out ascending within (i1, i2)
      for (int io : outputs) instructions.push_back({i1, i2, io, ConnectionMode::kUvw});
    }
  }
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
  // 3j blocks depend only on (l1, l2, l3): computed once per distinct triple, copied into each path.
  std::map<std::tuple<int, int, int>, std::pair<std::vector<double>, std::vector<Wigner3jEntry>>> cg_blocks;
  constexpr size_t kStopPollPaths = 256;
  plan.paths_.reserve(instructions.size());
  for (const InstructionSpec& spec : instructions) {
    if (options.should_stop && plan.paths_.size() % kStopPollPaths == 0 && options.should_stop()) {
      return absl::CancelledError(absl::StrCat("plan building stopped after ", plan.paths_.size(), " of ",
                                               instructions.size(), " paths"));
    }
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
    auto [block, inserted] = cg_blocks.try_emplace({path.l1, path.l2, path.l3});
    if (inserted) {
      ASSIGN_OR_RETURN(block->second.first, Wigner3j(path.l1, path.l2, path.l3));
      block->second.second = Wigner3jNonzeros(block->second.first, path.l1, path.l2, path.l3);
    }
    path.cg = block->second.first;
    path.cg_nonzeros = block->second.second;
    plan.paths_.push_back(std::move(path));
  }

  // e3nn's normalization: alpha = (2l3+1 | d1*d2 | 1) / fan-in, path_weight = sqrt(alpha). The
  // fan-in of an output sums over every path into it: one pass collects those sums per output.
  std::vector<int64_t> sum_fan_in(static_cast<size_t>(irreps_out.size()), 0);
  std::vector<int64_t> paths_into_output(static_cast<size_t>(irreps_out.size()), 0);
  for (const PathPlan& path : plan.paths_) {
    sum_fan_in[path.i_out] += FanIn(path);
    ++paths_into_output[path.i_out];
  }
  for (PathPlan& path : plan.paths_) {
    double alpha = 1.0;
    switch (options.irrep_normalization) {
      case IrrepNormalization::kComponent: alpha = path.dim_out(); break;
      case IrrepNormalization::kNorm: alpha = static_cast<double>(path.dim_in1()) * path.dim_in2(); break;
      case IrrepNormalization::kNone: alpha = 1.0; break;
    }
    double fan_in = 1.0;
    if (options.path_normalization != PathNormalization::kNone) {
      fan_in = options.path_normalization == PathNormalization::kElement
                   ? static_cast<double>(sum_fan_in[path.i_out])
                   : static_cast<double>(FanIn(path) * paths_into_output[path.i_out]);
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
