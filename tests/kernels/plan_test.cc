// Tests of kernels/core/plan.h: e3nn's FullyConnectedTensorProduct instructions, normalization
// and flat weight layout for every reference case; FromInstructions' checks; 'uvu' and per-sample
// weights.
#include "kernels/core/plan.h"

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/core/backend.h"
#include "kernels/core/wigner3j.h"
#include "tests/support/reference_case.h"

namespace tpserve {
namespace {

Irreps MustParse(const std::string& text) {
  absl::StatusOr<Irreps> irreps = Irreps::Parse(text);
  EXPECT_TRUE(irreps.ok()) << text << ": " << irreps.status();
  return irreps.ok() ? *irreps : Irreps();
}

// Layout invariants every plan must hold, whatever its mode and sharing.
void ExpectConsistentLayout(const TensorProductPlan& plan) {
  int64_t next_weight = 0;
  for (size_t p = 0; p < plan.paths().size(); ++p) {
    SCOPED_TRACE(absl::StrCat("path ", p));
    const PathPlan& path = plan.paths()[p];
    ASSERT_GE(path.i_in1, 0);
    ASSERT_LT(path.i_in1, plan.irreps_in1().size());
    ASSERT_GE(path.i_in2, 0);
    ASSERT_LT(path.i_in2, plan.irreps_in2().size());
    ASSERT_GE(path.i_out, 0);
    ASSERT_LT(path.i_out, plan.irreps_out().size());
    const MulIrrep& a = plan.irreps_in1()[path.i_in1];
    const MulIrrep& b = plan.irreps_in2()[path.i_in2];
    const MulIrrep& c = plan.irreps_out()[path.i_out];
    EXPECT_EQ(path.l1, a.ir.l);
    EXPECT_EQ(path.l2, b.ir.l);
    EXPECT_EQ(path.l3, c.ir.l);
    EXPECT_EQ(path.mul_in1, a.mul);
    EXPECT_EQ(path.mul_in2, b.mul);
    EXPECT_EQ(path.mul_out, c.mul);
    EXPECT_TRUE(IsInProduct(a.ir, b.ir, c.ir));
    EXPECT_EQ(path.offset_in1, plan.irreps_in1().offset(path.i_in1));
    EXPECT_EQ(path.offset_in2, plan.irreps_in2().offset(path.i_in2));
    EXPECT_EQ(path.offset_out, plan.irreps_out().offset(path.i_out));
    // Weight blocks are contiguous, in instruction order.
    EXPECT_EQ(path.weight_offset, next_weight);
    const int64_t want_numel = path.mode == ConnectionMode::kUvw ? int64_t{a.mul} * b.mul * c.mul
                                                                 : int64_t{a.mul} * b.mul;
    EXPECT_EQ(path.weight_numel, want_numel);
    next_weight = path.weight_offset + path.weight_numel;
    // The 3j block is the one Wigner3j gives, with its nonzeros.
    absl::StatusOr<std::vector<double>> cg = Wigner3j(path.l1, path.l2, path.l3);
    ASSERT_TRUE(cg.ok());
    EXPECT_EQ(path.cg, *cg);
    EXPECT_EQ(path.cg_nonzeros.size(), Wigner3jNonzeros(*cg, path.l1, path.l2, path.l3).size());
    EXPECT_TRUE(std::isfinite(path.path_weight));
    EXPECT_GT(path.path_weight, 0);
  }
  EXPECT_EQ(plan.weight_numel(), next_weight);
  EXPECT_EQ(plan.dim_in1(), plan.irreps_in1().dim());
  EXPECT_EQ(plan.dim_in2(), plan.irreps_in2().dim());
  EXPECT_EQ(plan.dim_out(), plan.irreps_out().dim());
}

TEST(FullyConnected, MatchesE3nnInstructionsOfEveryReferenceCase) {
  const std::vector<std::string> files = testing::ReferenceCaseFiles();
  ASSERT_FALSE(files.empty()) << "no ref_*.json in " << testing::ReferenceDir();
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    absl::StatusOr<testing::ReferenceCase> ref = testing::LoadReferenceCase(file);
    ASSERT_TRUE(ref.ok()) << ref.status();
    absl::StatusOr<TensorProductPlan> plan =
        TensorProductPlan::FullyConnected(ref->irreps_in1, ref->irreps_in2, ref->irreps_out);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->weight_sharing(), WeightSharing::kShared);
    ASSERT_EQ(plan->paths().size(), ref->instructions.size()) << plan->DebugString();
    for (size_t p = 0; p < ref->instructions.size(); ++p) {
      SCOPED_TRACE(absl::StrCat("instruction ", p));
      const testing::ReferenceInstruction& want = ref->instructions[p];
      const PathPlan& got = plan->paths()[p];
      EXPECT_EQ(got.i_in1, want.i_in1);
      EXPECT_EQ(got.i_in2, want.i_in2);
      EXPECT_EQ(got.i_out, want.i_out);
      EXPECT_EQ(std::string(ConnectionModeName(got.mode)), want.mode);
      ASSERT_EQ(want.path_shape.size(), 3u);
      EXPECT_EQ(got.mul_in1, want.path_shape[0]);
      EXPECT_EQ(got.mul_in2, want.path_shape[1]);
      EXPECT_EQ(got.mul_out, want.path_shape[2]);
      EXPECT_EQ(got.weight_numel, int64_t{want.path_shape[0]} * want.path_shape[1] * want.path_shape[2]);
      EXPECT_LE(std::abs(got.path_weight - want.path_weight), 1e-12 * std::abs(want.path_weight))
          << "got " << got.path_weight << ", e3nn " << want.path_weight;
    }
    EXPECT_EQ(plan->weight_numel(), ref->weight_numel);
    EXPECT_EQ(static_cast<int64_t>(ref->weight.size()), ref->weight_numel);
    EXPECT_EQ(static_cast<int64_t>(ref->x1.size()), ref->batch * plan->dim_in1());
    EXPECT_EQ(static_cast<int64_t>(ref->x2.size()), ref->batch * plan->dim_in2());
    EXPECT_EQ(static_cast<int64_t>(ref->out.size()), ref->batch * plan->dim_out());
    ExpectConsistentLayout(*plan);
  }
}

TEST(FullyConnected, SeedShapeHas15PathsAnd31457280Weights) {
  absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FullyConnected(
      "128x0e + 128x1e + 128x2e", "128x0e + 128x1e + 128x2e", "128x0e + 128x1e + 128x2e");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->paths().size(), 15u);
  EXPECT_EQ(plan->weight_numel(), 31457280);
  EXPECT_EQ(plan->dim_in1(), 1152);
  EXPECT_EQ(plan->dim_out(), 1152);
  ExpectConsistentLayout(*plan);
  // e3nn's loop order: i_in1 outermost, then i_in2, then i_out.
  for (size_t p = 1; p < plan->paths().size(); ++p) {
    const PathPlan &a = plan->paths()[p - 1], &b = plan->paths()[p];
    EXPECT_LT(std::make_tuple(a.i_in1, a.i_in2, a.i_out), std::make_tuple(b.i_in1, b.i_in2, b.i_out));
  }
  // FLOPs: 2 * batch * sum over paths of (2 l3 + 1) * mul1 * mul2 * mul_out.
  double want_flops = 0;
  for (const PathPlan& path : plan->paths()) want_flops += 2.0 * 64 * path.dim_out() * 128.0 * 128.0 * 128.0;
  EXPECT_DOUBLE_EQ(plan->ForwardFlops(64), want_flops);
}

TEST(FullyConnected, EnumeratesEveryAllowedTripleInLoopOrder) {
  const Irreps in1 = MustParse("1x1o + 2x0e + 1x2e + 1x1o"), in2 = MustParse("1x1e + 3x0o + 1x1o"),
               out = MustParse("2x0e + 1x1o + 1x2o + 1x1e + 1x3e");
  absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FullyConnected(in1, in2, out);
  ASSERT_TRUE(plan.ok()) << plan.status();
  size_t p = 0;
  for (int i1 = 0; i1 < in1.size(); ++i1)
    for (int i2 = 0; i2 < in2.size(); ++i2)
      for (int io = 0; io < out.size(); ++io) {
        if (!IsInProduct(in1[i1].ir, in2[i2].ir, out[io].ir)) continue;
        ASSERT_LT(p, plan->paths().size());
        EXPECT_EQ(plan->paths()[p].i_in1, i1);
        EXPECT_EQ(plan->paths()[p].i_in2, i2);
        EXPECT_EQ(plan->paths()[p].i_out, io);
        EXPECT_EQ(plan->paths()[p].mode, ConnectionMode::kUvw);
        ++p;
      }
  EXPECT_EQ(p, plan->paths().size());
  ExpectConsistentLayout(*plan);
}

// e3nn's default normalization: path_weight = sqrt((2 l3 + 1) / sum over paths into the same
// output of mul1 * mul2). Checked on paths that share an output and on ones that do not.
TEST(FullyConnected, PathWeightIsComponentElementNormalization) {
  absl::StatusOr<TensorProductPlan> plan =
      TensorProductPlan::FullyConnected("3x0e + 2x1o", "4x0e + 5x1o", "6x0e + 7x1o + 2x2e");
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const PathPlan& path : plan->paths()) {
    double fan_in = 0;
    for (const PathPlan& other : plan->paths())
      if (other.i_out == path.i_out) fan_in += double{1.0} * other.mul_in1 * other.mul_in2;
    EXPECT_NEAR(path.path_weight, std::sqrt((2.0 * path.l3 + 1) / fan_in), 1e-15)
        << "(" << path.i_in1 << "," << path.i_in2 << "," << path.i_out << ")";
  }
}

TEST(FullyConnected, StringOverloadReportsParseErrors) {
  absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FullyConnected("1x0e", "1x0q", "1x0e");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(plan.status().message(), "1x0q")) << plan.status();
}

TEST(FullyConnected, NoAllowedPathGivesEmptyPlan) {
  absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FullyConnected("2x0e", "3x0e", "4x1o");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->paths().empty());
  EXPECT_EQ(plan->weight_numel(), 0);
  EXPECT_EQ(plan->dim_out(), 12);
}

// FromInstructions must reject each kind of bad instruction with INVALID_ARGUMENT naming it.
TEST(FromInstructions, RejectsBadInstructions) {
  const Irreps in1 = MustParse("2x0e + 2x1o"), in2 = MustParse("3x0e + 1x1o"), out = MustParse("2x0e + 4x1o + 2x1e");
  struct Case {
    const char* why;
    InstructionSpec spec;
  };
  const Case cases[] = {
      {"i_in1 out of range", {2, 0, 0, ConnectionMode::kUvw}},
      {"negative i_in1", {-1, 0, 0, ConnectionMode::kUvw}},
      {"i_in2 out of range", {0, 2, 0, ConnectionMode::kUvw}},
      {"negative i_in2", {0, -1, 0, ConnectionMode::kUvw}},
      {"i_out out of range", {0, 0, 3, ConnectionMode::kUvw}},
      {"negative i_out", {0, 0, -1, ConnectionMode::kUvw}},
      {"0e x 0e -> 1o not in product", {0, 0, 1, ConnectionMode::kUvw}},
      {"1o x 1o -> 1o: parity", {1, 1, 1, ConnectionMode::kUvw}},
      {"0e x 1o -> 1e: parity", {0, 1, 2, ConnectionMode::kUvw}},
      {"uvu with mul_out (4) != mul_in1 (2)", {1, 0, 1, ConnectionMode::kUvu}},
      {"uvu with mul_out (4) != mul_in1 (2), l=0 x l=1", {0, 1, 1, ConnectionMode::kUvu}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.why);
    // Alone, and after a valid instruction (the error must not depend on position).
    for (bool after_valid : {false, true}) {
      std::vector<InstructionSpec> instructions;
      if (after_valid) instructions.push_back({0, 0, 0, ConnectionMode::kUvw});
      instructions.push_back(c.spec);
      absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FromInstructions(in1, in2, out, instructions);
      ASSERT_FALSE(plan.ok()) << "accepted:\n" << plan->DebugString();
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << plan.status();
      const std::string name = absl::StrCat("(", c.spec.i_in1, ", ", c.spec.i_in2, ", ", c.spec.i_out, ")");
      EXPECT_TRUE(absl::StrContains(plan.status().message(), name))
          << "message does not name instruction " << name << ": " << plan.status();
      EXPECT_TRUE(absl::StrContains(plan.status().message(), "expect") ||
                  absl::StrContains(plan.status().message(), "not in"))
          << plan.status();
    }
  }
  // The same instructions with valid indices and modes are accepted.
  absl::StatusOr<TensorProductPlan> ok = TensorProductPlan::FromInstructions(
      in1, in2, out, {{0, 0, 0, ConnectionMode::kUvw}, {1, 1, 2, ConnectionMode::kUvw}, {1, 0, 1, ConnectionMode::kUvw}});
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST(FromInstructions, UvuPlanHasMul1TimesMul2WeightsPerPath) {
  const Irreps in1 = MustParse("3x0e + 3x1o"), in2 = MustParse("2x0e + 5x1o"),
               out = MustParse("3x0e + 3x1o + 3x1e + 3x0e");
  // 'uvu' paths (mul_out == mul_in1) mixed with one 'uvw' path.
  const std::vector<InstructionSpec> valid = {
      {0, 0, 0, ConnectionMode::kUvu}, {0, 1, 1, ConnectionMode::kUvu}, {1, 0, 1, ConnectionMode::kUvu},
      {1, 1, 2, ConnectionMode::kUvu}, {1, 1, 3, ConnectionMode::kUvu}, {0, 0, 3, ConnectionMode::kUvw},
  };
  absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FromInstructions(in1, in2, out, valid);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->paths().size(), valid.size());
  int64_t total = 0;
  for (size_t p = 0; p < valid.size(); ++p) {
    const PathPlan& path = plan->paths()[p];
    EXPECT_EQ(path.mode, valid[p].mode);
    const int64_t want = valid[p].mode == ConnectionMode::kUvu ? int64_t{path.mul_in1} * path.mul_in2
                                                                : int64_t{path.mul_in1} * path.mul_in2 * path.mul_out;
    EXPECT_EQ(path.weight_numel, want) << "path " << p;
    if (path.mode == ConnectionMode::kUvu) EXPECT_EQ(path.mul_out, path.mul_in1);
    total += want;
  }
  EXPECT_EQ(plan->weight_numel(), total);
  EXPECT_EQ(plan->weight_numel(), 3 * 2 + 3 * 5 + 3 * 2 + 3 * 5 + 3 * 5 + 3 * 2 * 3);
  ExpectConsistentLayout(*plan);
  // e3nn's element normalization with 'uvu' fan-in mul_in2 (and 'uvw' fan-in mul_in1 * mul_in2).
  for (const PathPlan& path : plan->paths()) {
    double fan_in = 0;
    for (const PathPlan& other : plan->paths()) {
      if (other.i_out != path.i_out) continue;
      fan_in += other.mode == ConnectionMode::kUvu ? other.mul_in2 : double{1.0} * other.mul_in1 * other.mul_in2;
    }
    EXPECT_NEAR(path.path_weight, std::sqrt((2.0 * path.l3 + 1) / fan_in), 1e-15);
  }
  EXPECT_STREQ(ConnectionModeName(ConnectionMode::kUvu), "uvu");
  EXPECT_STREQ(ConnectionModeName(ConnectionMode::kUvw), "uvw");
}

TEST(FromInstructions, PerSampleSharingGivesBatchByNumelWeights) {
  TensorProductOptions options;
  options.weight_sharing = WeightSharing::kPerSample;
  absl::StatusOr<TensorProductPlan> per_sample =
      TensorProductPlan::FullyConnected("2x0e + 1x1o", "1x0e + 1x1o", "3x0e + 2x1o", options);
  ASSERT_TRUE(per_sample.ok()) << per_sample.status();
  absl::StatusOr<TensorProductPlan> shared =
      TensorProductPlan::FullyConnected("2x0e + 1x1o", "1x0e + 1x1o", "3x0e + 2x1o");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(per_sample->weight_sharing(), WeightSharing::kPerSample);
  EXPECT_EQ(shared->weight_sharing(), WeightSharing::kShared);
  // weight_numel is per sample, the same as the shared plan's total.
  EXPECT_EQ(per_sample->weight_numel(), shared->weight_numel());
  EXPECT_GT(per_sample->weight_numel(), 0);
  for (int64_t batch : {1, 7, 64}) {
    EXPECT_EQ(WeightShape(*per_sample, batch), (std::vector<int64_t>{batch, per_sample->weight_numel()}));
    EXPECT_EQ(WeightShape(*shared, batch), (std::vector<int64_t>{shared->weight_numel()}));
  }
  // The same for a 'uvu' plan.
  absl::StatusOr<TensorProductPlan> uvu = TensorProductPlan::FromInstructions(
      MustParse("3x1o"), MustParse("2x0e"), MustParse("3x1o"), {{0, 0, 0, ConnectionMode::kUvu}}, options);
  ASSERT_TRUE(uvu.ok()) << uvu.status();
  EXPECT_EQ(uvu->weight_numel(), 6);
  EXPECT_EQ(WeightShape(*uvu, 5), (std::vector<int64_t>{5, 6}));
}

TEST(FromInstructions, OtherNormalizations) {
  const Irreps in1 = MustParse("3x1o + 2x0e"), in2 = MustParse("2x1o"), out = MustParse("4x1e + 2x0e + 1x1o");
  absl::StatusOr<TensorProductPlan> base = TensorProductPlan::FullyConnected(in1, in2, out);
  ASSERT_TRUE(base.ok());
  for (auto irrep_norm : {IrrepNormalization::kComponent, IrrepNormalization::kNorm, IrrepNormalization::kNone})
    for (auto path_norm : {PathNormalization::kElement, PathNormalization::kPath, PathNormalization::kNone}) {
      TensorProductOptions options;
      options.irrep_normalization = irrep_norm;
      options.path_normalization = path_norm;
      absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FullyConnected(in1, in2, out, options);
      ASSERT_TRUE(plan.ok());
      for (const PathPlan& path : plan->paths()) {
        double alpha = irrep_norm == IrrepNormalization::kComponent ? 2.0 * path.l3 + 1
                       : irrep_norm == IrrepNormalization::kNorm    ? (2.0 * path.l1 + 1) * (2.0 * path.l2 + 1)
                                                                    : 1.0;
        double sum = 0, count = 0;
        for (const PathPlan& other : plan->paths())
          if (other.i_out == path.i_out) {
            sum += double{1.0} * other.mul_in1 * other.mul_in2;
            count += 1;
          }
        const double x = path_norm == PathNormalization::kElement ? sum
                         : path_norm == PathNormalization::kPath  ? double{1.0} * path.mul_in1 * path.mul_in2 * count
                                                                  : 1.0;
        EXPECT_NEAR(path.path_weight, std::sqrt(alpha / x), 1e-15);
      }
    }
}

}  // namespace
}  // namespace tpserve
