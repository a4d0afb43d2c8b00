#include "kernels/core/qm9_edge_plan.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tpserve {

absl::StatusOr<TensorProductPlan> MakeQm9EdgePlan(int lmax, int mul) {
  std::string node, sh;
  for (int l = 0; l <= lmax; ++l) {
    absl::StrAppend(&node, l ? "+" : "", mul, "x", l, "e+", mul, "x", l, "o");
    absl::StrAppend(&sh, l ? "+" : "", "1x", l, l % 2 ? "o" : "e");
  }
  absl::StatusOr<Irreps> in1 = Irreps::Parse(node), in2 = Irreps::Parse(sh);
  if (!in1.ok()) return in1.status();
  if (!in2.ok()) return in2.status();
  std::vector<MulIrrep> out;
  std::vector<InstructionSpec> instructions;
  for (int i = 0; i < in1->size(); ++i) {
    for (int j = 0; j < in2->size(); ++j) {
      const Irrep a = (*in1)[i].ir, b = (*in2)[j].ir;
      for (int l = std::abs(a.l - b.l); l <= std::min(a.l + b.l, lmax); ++l) {
        instructions.push_back({i, j, static_cast<int>(out.size()), ConnectionMode::kUvu});
        out.push_back({(*in1)[i].mul, Irrep{l, a.parity * b.parity}});
      }
    }
  }
  TensorProductOptions options;
  options.weight_sharing = WeightSharing::kPerSample;
  return TensorProductPlan::FromInstructions(*in1, *in2, Irreps(out), instructions, options);
}

}  // namespace tpserve
