// Tests of the CPU backend (kernels/cpu/cpu_backend.h):
//  - every e3nn reference case, float64 (1e-10) and float32 (1e-5): Forward, Backward, LossGradient;
//  - each gradient optional, accumulate_grad_weight, no writes outside the given buffers;
//  - on fresh random inputs: equivariance (proper and improper rotations), finite differences,
//    LossGradient(kSum) == Backward(grad_out = 1), thread-count and batch-chunk independence;
//  - 'uvu' and per-sample-weight plans against a naive loop implementation written here;
//  - bad inputs give INVALID_ARGUMENT naming the expected shape.
#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/core/backend.h"
#include "kernels/core/plan.h"
#include "kernels/core/wigner3j.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"
#include "tests/support/wigner_d.h"

namespace tpserve {
namespace {

using testing::FreshRng;
using testing::MaxRelativeError;
using testing::RandomNormal;
using testing::RelativeError;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kGuard = 8;             // elements of guard before and after every buffer
constexpr double kGuardValue = -7777.25;  // exactly representable in float32

// A host array of float32 or float64 with guard regions on both sides, so that a write past
// either end is seen.
class Buffer {
 public:
  Buffer() = default;
  Buffer(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
    numel_ = 1;
    for (int64_t s : shape_) numel_ *= s;
    bytes_.assign((numel_ + 2 * kGuard) * DTypeSize(dtype_), 0);
    for (int64_t n = 0; n < kGuard; ++n) {
      SetRaw(n, kGuardValue);
      SetRaw(kGuard + numel_ + n, kGuardValue);
    }
  }
  Buffer(DType dtype, std::vector<int64_t> shape, const std::vector<double>& values) : Buffer(dtype, std::move(shape)) {
    Set(values);
  }

  void Set(const std::vector<double>& values) {
    EXPECT_EQ(static_cast<int64_t>(values.size()), numel_);
    for (int64_t n = 0; n < numel_ && n < static_cast<int64_t>(values.size()); ++n) SetRaw(kGuard + n, values[n]);
  }
  void Fill(double value) {
    for (int64_t n = 0; n < numel_; ++n) SetRaw(kGuard + n, value);
  }
  std::vector<double> Get() const {
    std::vector<double> values(numel_);
    for (int64_t n = 0; n < numel_; ++n) values[n] = GetRaw(kGuard + n);
    return values;
  }
  bool GuardsIntact() const {
    for (int64_t n = 0; n < kGuard; ++n)
      if (GetRaw(n) != kGuardValue || GetRaw(kGuard + numel_ + n) != kGuardValue) return false;
    return true;
  }
  void* data() { return bytes_.data() + kGuard * DTypeSize(dtype_); }
  const void* data() const { return bytes_.data() + kGuard * DTypeSize(dtype_); }
  TensorView view() { return {data(), dtype_, shape_}; }
  ConstTensorView cview() const { return {data(), dtype_, shape_}; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }

 private:
  void SetRaw(int64_t n, double value) {
    if (dtype_ == DType::kFloat32) {
      const float f = static_cast<float>(value);
      std::memcpy(bytes_.data() + n * 4, &f, 4);
    } else {
      std::memcpy(bytes_.data() + n * 8, &value, 8);
    }
  }
  double GetRaw(int64_t n) const {
    if (dtype_ == DType::kFloat32) {
      float f;
      std::memcpy(&f, bytes_.data() + n * 4, 4);
      return f;
    }
    double d;
    std::memcpy(&d, bytes_.data() + n * 8, 8);
    return d;
  }

  DType dtype_ = DType::kFloat64;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::vector<unsigned char> bytes_;
};

// Asserts got ~= want by both measures: ||got - want|| / ||want|| and max|got - want| / max|want|.
::testing::AssertionResult Close(const std::vector<double>& got, const std::vector<double>& want, double tolerance) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << ", want " << want.size();
  }
  double max_abs_want = 0;
  for (double v : want) max_abs_want = std::max(max_abs_want, std::abs(v));
  if (max_abs_want == 0) return ::testing::AssertionFailure() << "reference is all zeros";
  const double rel = RelativeError(got, want), max_rel = MaxRelativeError(got, want);
  if (rel <= tolerance && max_rel <= tolerance) return ::testing::AssertionSuccess();
  size_t worst = 0;
  double worst_diff = -1;
  for (size_t n = 0; n < want.size(); ++n) {
    const double diff = std::abs(got[n] - want[n]);
    if (!(diff <= worst_diff)) {
      worst_diff = diff;
      worst = n;
      if (std::isnan(diff)) break;
    }
  }
  return ::testing::AssertionFailure() << "relative error " << rel << ", max-element relative error " << max_rel
                                       << " > " << tolerance << "; worst at [" << worst << "]: got " << got[worst]
                                       << ", want " << want[worst];
}

double Tolerance(DType dtype) { return dtype == DType::kFloat64 ? 1e-10 : 1e-5; }

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (size_t n = 0; n < a.size(); ++n) sum += a[n] * b[n];
  return sum;
}

std::vector<double> Axpy(const std::vector<double>& x, double t, const std::vector<double>& d) {
  std::vector<double> y(x);
  for (size_t n = 0; n < y.size(); ++n) y[n] += t * d[n];
  return y;
}

std::string SeedTrace(uint64_t seed) { return absl::StrCat("random seed ", seed); }

// Runs the backend on host vectors (stored as `dtype`) and returns host vectors as double.
class Runner {
 public:
  Runner(const TensorProductPlan& plan, DType dtype, int64_t batch, CpuBackendOptions options = {})
      : backend_(options), plan_(plan), dtype_(dtype), batch_(batch) {
    auto prepared = backend_.Prepare(plan);
    EXPECT_TRUE(prepared.ok()) << prepared.status();
    if (prepared.ok()) prepared_ = std::move(*prepared);
  }

  std::vector<int64_t> weight_shape() const { return WeightShape(plan_, batch_); }
  std::vector<int64_t> x1_shape() const { return {batch_, plan_.dim_in1()}; }
  std::vector<int64_t> x2_shape() const { return {batch_, plan_.dim_in2()}; }
  std::vector<int64_t> out_shape() const { return {batch_, plan_.dim_out()}; }

  std::vector<double> Forward(const std::vector<double>& w, const std::vector<double>& x1,
                              const std::vector<double>& x2) {
    Buffer bw(dtype_, weight_shape(), w), b1(dtype_, x1_shape(), x1), b2(dtype_, x2_shape(), x2);
    Buffer out(dtype_, out_shape());
    out.Fill(kNaN);
    absl::Status status = backend_.Forward(*prepared_, bw.cview(), b1.cview(), b2.cview(), out.view(), ctx_);
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_TRUE(out.GuardsIntact()) << "Forward wrote outside out";
    return out.Get();
  }

  struct Grads {
    std::vector<double> weight, x1, x2, out;
  };

  // Backward with the three gradients requested (or those in `want`).
  Grads Backward(const std::vector<double>& w, const std::vector<double>& x1, const std::vector<double>& x2,
                 const std::vector<double>& grad_out, bool want_w = true, bool want_x1 = true, bool want_x2 = true) {
    Buffer bw(dtype_, weight_shape(), w), b1(dtype_, x1_shape(), x1), b2(dtype_, x2_shape(), x2),
        bg(dtype_, out_shape(), grad_out);
    return RunGradients(bw, b1, b2, &bg, nullptr, Loss::kSum, want_w, want_x1, want_x2);
  }

  Grads LossGradient(Loss loss, const std::vector<double>& w, const std::vector<double>& x1,
                     const std::vector<double>& x2, bool want_out = true, bool want_w = true, bool want_x1 = true,
                     bool want_x2 = true) {
    Buffer bw(dtype_, weight_shape(), w), b1(dtype_, x1_shape(), x1), b2(dtype_, x2_shape(), x2);
    Buffer out(dtype_, out_shape());
    out.Fill(kNaN);
    return RunGradients(bw, b1, b2, nullptr, want_out ? &out : nullptr, loss, want_w, want_x1, want_x2);
  }

  Backend& backend() { return backend_; }
  const PreparedPlan& prepared() const { return *prepared_; }
  const ExecutionContext& ctx() const { return ctx_; }

 private:
  Grads RunGradients(Buffer& bw, Buffer& b1, Buffer& b2, Buffer* grad_out, Buffer* out, Loss loss, bool want_w,
                     bool want_x1, bool want_x2) {
    Buffer gw(dtype_, weight_shape()), g1(dtype_, x1_shape()), g2(dtype_, x2_shape());
    gw.Fill(kNaN);
    g1.Fill(kNaN);
    g2.Fill(kNaN);
    GradientOutputs grads;
    if (want_w) grads.grad_weight = gw.view();
    if (want_x1) grads.grad_x1 = g1.view();
    if (want_x2) grads.grad_x2 = g2.view();
    absl::Status status =
        grad_out != nullptr
            ? backend_.Backward(*prepared_, bw.cview(), b1.cview(), b2.cview(), grad_out->cview(), grads, ctx_)
            : backend_.LossGradient(*prepared_, loss, bw.cview(), b1.cview(), b2.cview(),
                                    out != nullptr ? out->view() : TensorView{}, grads, ctx_);
    EXPECT_TRUE(status.ok()) << status;
    Grads result;
    for (auto [buffer, wanted, target, name] :
         {std::make_tuple(&gw, want_w, &result.weight, "grad_weight"), std::make_tuple(&g1, want_x1, &result.x1, "grad_x1"),
          std::make_tuple(&g2, want_x2, &result.x2, "grad_x2")}) {
      EXPECT_TRUE(buffer->GuardsIntact()) << "wrote outside " << name;
      const std::vector<double> values = buffer->Get();
      if (wanted) {
        *target = values;
      } else {
        // Not requested: still the NaN poison, untouched.
        EXPECT_TRUE(std::all_of(values.begin(), values.end(), [](double v) { return std::isnan(v); }))
            << name << " was not requested but was written";
      }
    }
    if (out != nullptr) {
      EXPECT_TRUE(out->GuardsIntact()) << "wrote outside out";
      result.out = out->Get();
    }
    return result;
  }

  CpuBackend backend_;
  TensorProductPlan plan_;
  DType dtype_;
  int64_t batch_;
  std::unique_ptr<PreparedPlan> prepared_;
  ExecutionContext ctx_;
};

std::vector<double> RoundTo(DType dtype, const std::vector<double>& values) {
  if (dtype == DType::kFloat64) return values;
  std::vector<double> rounded(values.size());
  for (size_t n = 0; n < values.size(); ++n) rounded[n] = static_cast<float>(values[n]);
  return rounded;
}

// --- A naive implementation of plan.h's formulas, independent of the backend ---------------------

// out[z, w, k] += a * sum_{u,v,i,j} W[u,v,w] C[i,j,k] x1[z,u,i] x2[z,v,j]      ('uvw')
// out[z, u, k] += a * sum_{v,i,j}   W[u,v]   C[i,j,k] x1[z,u,i] x2[z,v,j]      ('uvu')
std::vector<double> NaiveForward(const TensorProductPlan& plan, const std::vector<double>& weight,
                                 const std::vector<double>& x1, const std::vector<double>& x2, int64_t batch) {
  const int64_t dim1 = plan.irreps_in1().dim(), dim2 = plan.irreps_in2().dim(), dim_out = plan.irreps_out().dim();
  const bool per_sample = plan.weight_sharing() == WeightSharing::kPerSample;
  std::vector<double> out(batch * dim_out, 0.0);
  for (const PathPlan& path : plan.paths()) {
    const MulIrrep& a1 = plan.irreps_in1()[path.i_in1];
    const MulIrrep& a2 = plan.irreps_in2()[path.i_in2];
    const MulIrrep& ao = plan.irreps_out()[path.i_out];
    const int d1 = a1.ir.dim(), d2 = a2.ir.dim(), d3 = ao.ir.dim();
    const std::vector<double> c = *Wigner3j(a1.ir.l, a2.ir.l, ao.ir.l);
    const int64_t off1 = plan.irreps_in1().offset(path.i_in1), off2 = plan.irreps_in2().offset(path.i_in2),
                  offo = plan.irreps_out().offset(path.i_out);
    for (int64_t z = 0; z < batch; ++z) {
      const double* w = weight.data() + (per_sample ? z * plan.weight_numel() : 0) + path.weight_offset;
      for (int u = 0; u < a1.mul; ++u)
        for (int v = 0; v < a2.mul; ++v)
          for (int k = 0; k < d3; ++k) {
            double t = 0;
            for (int i = 0; i < d1; ++i)
              for (int j = 0; j < d2; ++j)
                t += c[(i * d2 + j) * d3 + k] * x1[z * dim1 + off1 + u * d1 + i] * x2[z * dim2 + off2 + v * d2 + j];
            if (path.mode == ConnectionMode::kUvw) {
              for (int wo = 0; wo < ao.mul; ++wo)
                out[z * dim_out + offo + wo * d3 + k] += path.path_weight * w[(u * a2.mul + v) * ao.mul + wo] * t;
            } else {
              out[z * dim_out + offo + u * d3 + k] += path.path_weight * w[u * a2.mul + v] * t;
            }
          }
    }
  }
  return out;
}

// The TP is linear in each argument, so d<g, TP>/d(arg)[n] = <g, TP with arg = e_n>.
struct NaiveGradients {
  std::vector<double> weight, x1, x2;
};
NaiveGradients NaiveBackward(const TensorProductPlan& plan, const std::vector<double>& weight,
                             const std::vector<double>& x1, const std::vector<double>& x2,
                             const std::vector<double>& grad_out, int64_t batch) {
  NaiveGradients g;
  auto gradient = [&](const std::vector<double>& arg, int which) {
    std::vector<double> result(arg.size());
    std::vector<double> basis(arg.size(), 0.0);
    for (size_t n = 0; n < arg.size(); ++n) {
      basis[n] = 1.0;
      const std::vector<double> out = which == 0   ? NaiveForward(plan, basis, x1, x2, batch)
                                      : which == 1 ? NaiveForward(plan, weight, basis, x2, batch)
                                                   : NaiveForward(plan, weight, x1, basis, batch);
      result[n] = Dot(grad_out, out);
      basis[n] = 0.0;
    }
    return result;
  };
  g.weight = gradient(weight, 0);
  g.x1 = gradient(x1, 1);
  g.x2 = gradient(x2, 2);
  return g;
}

Irreps MustParse(const std::string& text) {
  absl::StatusOr<Irreps> irreps = Irreps::Parse(text);
  EXPECT_TRUE(irreps.ok()) << irreps.status();
  return irreps.ok() ? *irreps : Irreps();
}

// Random irreps: 1..4 entries, l <= max_l, random parity, mul 1..3 (repeats and any order allowed).
Irreps RandomIrreps(std::mt19937_64& rng, int max_l) {
  std::uniform_int_distribution<int> count(1, 4), l(0, max_l), mul(1, 3), parity(0, 1);
  std::vector<MulIrrep> entries;
  for (int e = count(rng); e > 0; --e) entries.push_back({mul(rng), {l(rng), parity(rng) ? 1 : -1}});
  return Irreps(std::move(entries));
}

// A random fully connected plan with at least `min_paths` paths.
TensorProductPlan RandomPlan(std::mt19937_64& rng, int max_l, size_t min_paths = 2,
                             const TensorProductOptions& options = {}) {
  for (;;) {
    const Irreps in1 = RandomIrreps(rng, max_l), in2 = RandomIrreps(rng, max_l), out = RandomIrreps(rng, max_l);
    absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FullyConnected(in1, in2, out, options);
    if (plan.ok() && plan->paths().size() >= min_paths) return *plan;
  }
}

const DType kDTypes[] = {DType::kFloat64, DType::kFloat32};

// --- e3nn reference cases ---------------------------------------------------------------------

// Runs `body` on every reference case with a runner for `dtype`.
void ForEachReferenceCase(DType dtype, const std::function<void(const testing::ReferenceCase&, Runner&)>& body) {
  const std::vector<std::string> files = testing::ReferenceCaseFiles();
  ASSERT_FALSE(files.empty()) << "no ref_*.json in " << testing::ReferenceDir();
  for (const std::string& file : files) {
    SCOPED_TRACE(absl::StrCat(file, " ", DTypeName(dtype)));
    absl::StatusOr<testing::ReferenceCase> ref = testing::LoadReferenceCase(file);
    ASSERT_TRUE(ref.ok()) << ref.status();
    absl::StatusOr<TensorProductPlan> plan =
        TensorProductPlan::FullyConnected(ref->irreps_in1, ref->irreps_in2, ref->irreps_out);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->weight_numel(), ref->weight_numel);
    Runner runner(*plan, dtype, ref->batch);
    body(*ref, runner);
  }
}

class ReferenceTest : public ::testing::TestWithParam<DType> {
 protected:
  void ForEachCase(const std::function<void(const testing::ReferenceCase&, Runner&)>& body) {
    ForEachReferenceCase(GetParam(), body);
  }
  double tolerance() const { return Tolerance(GetParam()); }
};

TEST_P(ReferenceTest, Forward_MatchesE3nn) {
  ForEachCase([&](const testing::ReferenceCase& ref, Runner& runner) {
    EXPECT_TRUE(Close(runner.Forward(ref.weight, ref.x1, ref.x2), ref.out, tolerance()));
  });
}

TEST_P(ReferenceTest, Backward_MatchesE3nnInEveryGradient) {
  ForEachCase([&](const testing::ReferenceCase& ref, Runner& runner) {
    const Runner::Grads g = runner.Backward(ref.weight, ref.x1, ref.x2, ref.grad_out);
    EXPECT_TRUE(Close(g.weight, ref.grad_weight, tolerance())) << "grad_weight";
    EXPECT_TRUE(Close(g.x1, ref.grad_x1, tolerance())) << "grad_x1";
    EXPECT_TRUE(Close(g.x2, ref.grad_x2, tolerance())) << "grad_x2";
  });
}

TEST_P(ReferenceTest, Backward_EachSubsetOfGradientsMatchesAndLeavesTheOthersUntouched) {
  ForEachCase([&](const testing::ReferenceCase& ref, Runner& runner) {
    for (int mask = 0; mask < 8; ++mask) {
      SCOPED_TRACE(absl::StrCat("requested: w=", mask & 1, " x1=", mask >> 1 & 1, " x2=", mask >> 2 & 1));
      const bool want_w = mask & 1, want_x1 = mask & 2, want_x2 = mask & 4;
      const Runner::Grads g = runner.Backward(ref.weight, ref.x1, ref.x2, ref.grad_out, want_w, want_x1, want_x2);
      if (want_w) EXPECT_TRUE(Close(g.weight, ref.grad_weight, tolerance())) << "grad_weight";
      if (want_x1) EXPECT_TRUE(Close(g.x1, ref.grad_x1, tolerance())) << "grad_x1";
      if (want_x2) EXPECT_TRUE(Close(g.x2, ref.grad_x2, tolerance())) << "grad_x2";
    }
  });
}

TEST_P(ReferenceTest, LossGradientSumTanh_MatchesE3nnSeedGradient) {
  ForEachCase([&](const testing::ReferenceCase& ref, Runner& runner) {
    // The seed task: grad_weight only, no out.
    const Runner::Grads only_w = runner.LossGradient(Loss::kSumTanh, ref.weight, ref.x1, ref.x2,
                                                     /*want_out=*/false, true, false, false);
    EXPECT_TRUE(Close(only_w.weight, ref.grad_weight_sum_tanh, tolerance())) << "grad_weight";
    // With out requested as well.
    const Runner::Grads with_out = runner.LossGradient(Loss::kSumTanh, ref.weight, ref.x1, ref.x2,
                                                       /*want_out=*/true, true, false, false);
    EXPECT_TRUE(Close(with_out.weight, ref.grad_weight_sum_tanh, tolerance())) << "grad_weight";
    EXPECT_TRUE(Close(with_out.out, ref.out, tolerance())) << "out";
  });
}

TEST_P(ReferenceTest, AccumulateGradWeight_AddsToTheBuffer) {
  uint64_t seed = 0;
  std::mt19937_64 rng = FreshRng(&seed);
  SCOPED_TRACE(SeedTrace(seed));
  const DType dtype = GetParam();
  ForEachCase([&](const testing::ReferenceCase& ref, Runner& runner) {
    const std::vector<double> previous = RoundTo(dtype, RandomNormal(ref.weight_numel, rng));
    Buffer w(dtype, {ref.weight_numel}, ref.weight), x1(dtype, {ref.batch, static_cast<int64_t>(ref.x1.size()) / ref.batch}, ref.x1),
        x2(dtype, {ref.batch, static_cast<int64_t>(ref.x2.size()) / ref.batch}, ref.x2),
        g(dtype, {ref.batch, static_cast<int64_t>(ref.out.size()) / ref.batch}, ref.grad_out);
    Buffer grad_weight(dtype, {ref.weight_numel}, previous);
    GradientOutputs grads;
    grads.grad_weight = grad_weight.view();
    grads.accumulate_grad_weight = true;
    absl::Status status =
        runner.backend().Backward(runner.prepared(), w.cview(), x1.cview(), x2.cview(), g.cview(), grads, runner.ctx());
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_TRUE(grad_weight.GuardsIntact());
    std::vector<double> want = previous;
    for (size_t n = 0; n < want.size(); ++n) want[n] += ref.grad_weight[n];
    EXPECT_TRUE(Close(grad_weight.Get(), want, tolerance())) << "Backward accumulate";

    // Twice more through LossGradient: previous + grad + 2 * seed gradient.
    for (int k = 0; k < 2; ++k) {
      status = runner.backend().LossGradient(runner.prepared(), Loss::kSumTanh, w.cview(), x1.cview(), x2.cview(),
                                             TensorView{}, grads, runner.ctx());
      ASSERT_TRUE(status.ok()) << status;
    }
    for (size_t n = 0; n < want.size(); ++n) want[n] += 2 * ref.grad_weight_sum_tanh[n];
    EXPECT_TRUE(Close(grad_weight.Get(), want, tolerance())) << "LossGradient accumulate";
    EXPECT_TRUE(grad_weight.GuardsIntact());
  });
}

// The naive implementation below is itself checked against e3nn, so that the 'uvu' and
// per-sample tests that rely on it stand on a verified reference.
TEST(NaiveReference, NaiveImplementationInThisTestMatchesE3nn) {
  ForEachReferenceCase(DType::kFloat64, [&](const testing::ReferenceCase& ref, Runner&) {
    const TensorProductPlan plan = *TensorProductPlan::FullyConnected(ref.irreps_in1, ref.irreps_in2, ref.irreps_out);
    EXPECT_TRUE(Close(NaiveForward(plan, ref.weight, ref.x1, ref.x2, ref.batch), ref.out, 1e-12));
    const NaiveGradients g = NaiveBackward(plan, ref.weight, ref.x1, ref.x2, ref.grad_out, ref.batch);
    EXPECT_TRUE(Close(g.weight, ref.grad_weight, 1e-12));
    EXPECT_TRUE(Close(g.x1, ref.grad_x1, 1e-12));
    EXPECT_TRUE(Close(g.x2, ref.grad_x2, 1e-12));
  });
}

INSTANTIATE_TEST_SUITE_P(DTypes, ReferenceTest, ::testing::ValuesIn(kDTypes),
                         [](const ::testing::TestParamInfo<DType>& info) { return DTypeName(info.param); });

// --- Fresh random inputs ----------------------------------------------------------------------

// Fresh random inputs, rounded to the dtype under test.
class RandomInputs {
 protected:
  explicit RandomInputs(DType dtype) : dtype_(dtype) { rng_ = FreshRng(&seed_); }
  std::string trace() const { return SeedTrace(seed_); }
  std::vector<double> Random(int64_t n) { return RoundTo(dtype_, RandomNormal(n, rng_)); }
  DType dtype_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

class RandomTest : public ::testing::TestWithParam<DType>, public RandomInputs {
 protected:
  RandomTest() : RandomInputs(GetParam()) {}
};

// Float64 only: finite differences and checks of the checks.
class Float64RandomTest : public ::testing::Test, public RandomInputs {
 protected:
  Float64RandomTest() : RandomInputs(DType::kFloat64) {}
};

// TP(D x1, D x2) = D TP(x1, x2) for rotations and improper rotations (parity p: D -> p^k D), and
// the gradients transform accordingly: grad_w is invariant, grad_x1/x2 rotate.
TEST_P(RandomTest, Equivariance_OutputsAndGradientsRotateWithTheInputs) {
  SCOPED_TRACE(trace());
  const double tol = GetParam() == DType::kFloat64 ? 1e-10 : 1e-4;
  for (int trial = 0; trial < 6; ++trial) {
    const TensorProductPlan plan = RandomPlan(rng_, /*max_l=*/4);
    SCOPED_TRACE(plan.DebugString());
    const int64_t batch = 3;
    Runner runner(plan, GetParam(), batch);
    const std::vector<double> w = Random(plan.weight_numel()), x1 = Random(batch * plan.dim_in1()),
                              x2 = Random(batch * plan.dim_in2()), g = Random(batch * plan.dim_out());
    const std::vector<double> out = runner.Forward(w, x1, x2);
    const Runner::Grads grads = runner.Backward(w, x1, x2, g);
    for (bool improper : {false, true}) {
      SCOPED_TRACE(improper ? "improper rotation" : "rotation");
      const testing::Rotation r = testing::RandomRotation(rng_, improper);
      const std::vector<double> rx1 = testing::RotateIrreps(plan.irreps_in1(), r, x1, batch);
      const std::vector<double> rx2 = testing::RotateIrreps(plan.irreps_in2(), r, x2, batch);
      const std::vector<double> rg = testing::RotateIrreps(plan.irreps_out(), r, g, batch);
      EXPECT_TRUE(Close(runner.Forward(w, rx1, rx2), testing::RotateIrreps(plan.irreps_out(), r, out, batch), tol))
          << "out";
      const Runner::Grads rotated = runner.Backward(w, rx1, rx2, rg);
      EXPECT_TRUE(Close(rotated.weight, grads.weight, tol)) << "grad_weight";
      EXPECT_TRUE(Close(rotated.x1, testing::RotateIrreps(plan.irreps_in1(), r, grads.x1, batch), tol)) << "grad_x1";
      EXPECT_TRUE(Close(rotated.x2, testing::RotateIrreps(plan.irreps_in2(), r, grads.x2, batch), tol)) << "grad_x2";
    }
  }
}

// The equivariance check can fail: flipping the parity of one input entry while keeping the
// plan breaks it under an improper rotation (the test is not vacuous).
TEST_F(Float64RandomTest, Equivariance_CheckDetectsAWrongParity) {
  SCOPED_TRACE(trace());
  const TensorProductPlan plan = *TensorProductPlan::FullyConnected("2x1o + 1x2e", "1x1o", "2x0e + 1x1e + 2x2e");
  const Irreps wrong_in1 = MustParse("2x1e + 1x2e");  // the first entry with the wrong parity
  const int64_t batch = 2;
  Runner runner(plan, DType::kFloat64, batch);
  const std::vector<double> w = Random(plan.weight_numel()), x1 = Random(batch * plan.dim_in1()),
                            x2 = Random(batch * plan.dim_in2());
  const testing::Rotation r = testing::RandomRotation(rng_, /*improper=*/true);
  const std::vector<double> want = testing::RotateIrreps(plan.irreps_out(), r, runner.Forward(w, x1, x2), batch);
  EXPECT_TRUE(Close(runner.Forward(w, testing::RotateIrreps(plan.irreps_in1(), r, x1, batch),
                                   testing::RotateIrreps(plan.irreps_in2(), r, x2, batch)),
                    want, 1e-10));
  EXPECT_FALSE(Close(runner.Forward(w, testing::RotateIrreps(wrong_in1, r, x1, batch),
                                    testing::RotateIrreps(plan.irreps_in2(), r, x2, batch)),
                     want, 1e-3));
}

// Directional derivatives of f = <grad_out, TP(w, x1, x2)> by central differences (float64).
TEST_F(Float64RandomTest, Backward_MatchesCentralFiniteDifferences) {
  SCOPED_TRACE(trace());
  for (int trial = 0; trial < 4; ++trial) {
    const TensorProductPlan plan = RandomPlan(rng_, /*max_l=*/3);
    SCOPED_TRACE(plan.DebugString());
    const int64_t batch = 4;
    Runner runner(plan, DType::kFloat64, batch);
    const std::vector<double> w = Random(plan.weight_numel()), x1 = Random(batch * plan.dim_in1()),
                              x2 = Random(batch * plan.dim_in2()), g = Random(batch * plan.dim_out());
    const Runner::Grads grads = runner.Backward(w, x1, x2, g);
    const std::vector<double> dw = Random(w.size()), dx1 = Random(x1.size()), dx2 = Random(x2.size());
    auto f = [&](double tw, double t1, double t2) {
      return Dot(g, runner.Forward(Axpy(w, tw, dw), Axpy(x1, t1, dx1), Axpy(x2, t2, dx2)));
    };
    const double h = 1e-4;
    const double fd_w = (f(h, 0, 0) - f(-h, 0, 0)) / (2 * h);
    const double fd_x1 = (f(0, h, 0) - f(0, -h, 0)) / (2 * h);
    const double fd_x2 = (f(0, 0, h) - f(0, 0, -h)) / (2 * h);
    const double fd_all = (f(h, h, h) - f(-h, -h, -h)) / (2 * h);
    const double an_w = Dot(grads.weight, dw), an_x1 = Dot(grads.x1, dx1), an_x2 = Dot(grads.x2, dx2);
    // Scale: the size of the terms, so that a near-zero derivative is not judged relatively.
    auto scale = [&](const std::vector<double>& grad, const std::vector<double>& dir) {
      double s = 0;
      for (size_t n = 0; n < grad.size(); ++n) s += std::abs(grad[n] * dir[n]);
      return std::max(s, 1e-12);
    };
    EXPECT_NEAR(fd_w, an_w, 1e-7 * scale(grads.weight, dw)) << "weight";
    EXPECT_NEAR(fd_x1, an_x1, 1e-7 * scale(grads.x1, dx1)) << "x1";
    EXPECT_NEAR(fd_x2, an_x2, 1e-7 * scale(grads.x2, dx2)) << "x2";
    // Along all three at once f is cubic in t: the O(h^2) term is small at h = 1e-4.
    EXPECT_NEAR(fd_all, an_w + an_x1 + an_x2,
                1e-6 * (scale(grads.weight, dw) + scale(grads.x1, dx1) + scale(grads.x2, dx2)))
        << "all";
  }
}

// d/d(w, x1, x2) sum tanh(TP) by central differences (float64).
TEST_F(Float64RandomTest, LossGradientSumTanh_MatchesCentralFiniteDifferences) {
  SCOPED_TRACE(trace());
  for (int trial = 0; trial < 3; ++trial) {
    const TensorProductPlan plan = RandomPlan(rng_, /*max_l=*/3);
    SCOPED_TRACE(plan.DebugString());
    const int64_t batch = 3;
    Runner runner(plan, DType::kFloat64, batch);
    const std::vector<double> w = Random(plan.weight_numel()), x1 = Random(batch * plan.dim_in1()),
                              x2 = Random(batch * plan.dim_in2());
    const Runner::Grads grads = runner.LossGradient(Loss::kSumTanh, w, x1, x2);
    const std::vector<double> dw = Random(w.size()), dx1 = Random(x1.size()), dx2 = Random(x2.size());
    auto f = [&](double tw, double t1, double t2) {
      double sum = 0;
      for (double v : runner.Forward(Axpy(w, tw, dw), Axpy(x1, t1, dx1), Axpy(x2, t2, dx2))) sum += std::tanh(v);
      return sum;
    };
    const double h = 1e-5;
    struct Check {
      const char* name;
      double fd, analytic, scale;
    };
    auto scale = [&](const std::vector<double>& grad, const std::vector<double>& dir) {
      double s = 0;
      for (size_t n = 0; n < grad.size(); ++n) s += std::abs(grad[n] * dir[n]);
      return std::max(s, 1e-12);
    };
    const Check checks[] = {
        {"weight", (f(h, 0, 0) - f(-h, 0, 0)) / (2 * h), Dot(grads.weight, dw), scale(grads.weight, dw)},
        {"x1", (f(0, h, 0) - f(0, -h, 0)) / (2 * h), Dot(grads.x1, dx1), scale(grads.x1, dx1)},
        {"x2", (f(0, 0, h) - f(0, 0, -h)) / (2 * h), Dot(grads.x2, dx2), scale(grads.x2, dx2)},
    };
    for (const Check& c : checks) EXPECT_NEAR(c.fd, c.analytic, 1e-6 * c.scale) << c.name;
  }
}

// LossGradient(kSum) is Backward with grad_out = 1, and its out is Forward's.
TEST_P(RandomTest, LossGradientSum_EqualsBackwardWithOnes) {
  SCOPED_TRACE(trace());
  const double tol = Tolerance(GetParam());
  for (int trial = 0; trial < 3; ++trial) {
    const TensorProductPlan plan = RandomPlan(rng_, /*max_l=*/3);
    SCOPED_TRACE(plan.DebugString());
    const int64_t batch = 5;
    Runner runner(plan, GetParam(), batch);
    const std::vector<double> w = Random(plan.weight_numel()), x1 = Random(batch * plan.dim_in1()),
                              x2 = Random(batch * plan.dim_in2());
    const Runner::Grads loss = runner.LossGradient(Loss::kSum, w, x1, x2);
    const Runner::Grads backward = runner.Backward(w, x1, x2, std::vector<double>(batch * plan.dim_out(), 1.0));
    EXPECT_TRUE(Close(loss.weight, backward.weight, tol)) << "grad_weight";
    EXPECT_TRUE(Close(loss.x1, backward.x1, tol)) << "grad_x1";
    EXPECT_TRUE(Close(loss.x2, backward.x2, tol)) << "grad_x2";
    EXPECT_TRUE(Close(loss.out, runner.Forward(w, x1, x2), tol)) << "out";
    // sum_tanh: grad_out = 1 - tanh(out)^2.
    const std::vector<double> out = runner.Forward(w, x1, x2);
    std::vector<double> g(out.size());
    for (size_t n = 0; n < out.size(); ++n) g[n] = 1 - std::tanh(out[n]) * std::tanh(out[n]);
    const Runner::Grads tanh_loss = runner.LossGradient(Loss::kSumTanh, w, x1, x2, /*want_out=*/false);
    const Runner::Grads tanh_backward = runner.Backward(w, x1, x2, g);
    EXPECT_TRUE(Close(tanh_loss.weight, tanh_backward.weight, 10 * tol)) << "sum_tanh grad_weight";
    EXPECT_TRUE(Close(tanh_loss.x1, tanh_backward.x1, 10 * tol)) << "sum_tanh grad_x1";
    EXPECT_TRUE(Close(tanh_loss.x2, tanh_backward.x2, 10 * tol)) << "sum_tanh grad_x2";
  }
}

// A random fully connected plan against the naive loops.
TEST_P(RandomTest, UvwSharedPlan_MatchesNaiveLoops) {
  SCOPED_TRACE(trace());
  const double tol = Tolerance(GetParam());
  const TensorProductPlan plan = RandomPlan(rng_, /*max_l=*/3);
  SCOPED_TRACE(plan.DebugString());
  const int64_t batch = 3;
  Runner runner(plan, GetParam(), batch);
  const std::vector<double> w = Random(plan.weight_numel()), x1 = Random(batch * plan.dim_in1()),
                            x2 = Random(batch * plan.dim_in2()), g = Random(batch * plan.dim_out());
  EXPECT_TRUE(Close(runner.Forward(w, x1, x2), NaiveForward(plan, w, x1, x2, batch), tol));
  const Runner::Grads got = runner.Backward(w, x1, x2, g);
  const NaiveGradients want = NaiveBackward(plan, w, x1, x2, g, batch);
  EXPECT_TRUE(Close(got.weight, want.weight, tol)) << "grad_weight";
  EXPECT_TRUE(Close(got.x1, want.x1, tol)) << "grad_x1";
  EXPECT_TRUE(Close(got.x2, want.x2, tol)) << "grad_x2";
}

// 'uvu' (and mixed 'uvu' + 'uvw'), shared and per-sample weights, against the naive loops.
TEST_P(RandomTest, UvuAndPerSamplePlans_MatchNaiveLoops) {
  SCOPED_TRACE(trace());
  const double tol = Tolerance(GetParam());
  const Irreps in1 = MustParse("3x0e + 2x1o + 2x2e"), in2 = MustParse("2x0e + 1x1o + 2x2e"),
               out = MustParse("3x0e + 2x1o + 2x2e + 2x1e + 3x0o");
  // Every 'uvu' path these irreps allow (mul_out == mul_in1).
  const std::vector<InstructionSpec> uvu_only = {
      {0, 0, 0, ConnectionMode::kUvu}, {1, 0, 1, ConnectionMode::kUvu}, {2, 1, 1, ConnectionMode::kUvu},
      {1, 1, 3, ConnectionMode::kUvu}, {2, 2, 2, ConnectionMode::kUvu}, {1, 2, 1, ConnectionMode::kUvu},
      {2, 0, 2, ConnectionMode::kUvu}, {1, 1, 2, ConnectionMode::kUvu}, {2, 2, 3, ConnectionMode::kUvu}};
  // Plus 'uvw' paths, two of them on the same (i_in1, i_in2, i_out) as a 'uvu' one.
  std::vector<InstructionSpec> mixed = uvu_only;
  mixed.push_back({0, 0, 0, ConnectionMode::kUvw});
  mixed.push_back({1, 1, 0, ConnectionMode::kUvw});
  mixed.push_back({2, 2, 3, ConnectionMode::kUvw});
  struct Variant {
    const char* name;
    const std::vector<InstructionSpec>* instructions;
    WeightSharing sharing;
  };
  for (const Variant& variant : {Variant{"uvu shared", &uvu_only, WeightSharing::kShared},
                                 Variant{"uvu per-sample", &uvu_only, WeightSharing::kPerSample},
                                 Variant{"mixed shared", &mixed, WeightSharing::kShared},
                                 Variant{"mixed per-sample", &mixed, WeightSharing::kPerSample}}) {
    SCOPED_TRACE(variant.name);
    TensorProductOptions options;
    options.weight_sharing = variant.sharing;
    absl::StatusOr<TensorProductPlan> plan =
        TensorProductPlan::FromInstructions(in1, in2, out, *variant.instructions, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    const int64_t batch = 4;
    Runner runner(*plan, GetParam(), batch);
    const int64_t weight_count = variant.sharing == WeightSharing::kPerSample ? batch * plan->weight_numel()
                                                                               : plan->weight_numel();
    const std::vector<double> w = Random(weight_count), x1 = Random(batch * plan->dim_in1()),
                              x2 = Random(batch * plan->dim_in2()), g = Random(batch * plan->dim_out());
    EXPECT_TRUE(Close(runner.Forward(w, x1, x2), NaiveForward(*plan, w, x1, x2, batch), tol)) << "out";
    const NaiveGradients want = NaiveBackward(*plan, w, x1, x2, g, batch);
    const Runner::Grads got = runner.Backward(w, x1, x2, g);
    EXPECT_TRUE(Close(got.weight, want.weight, tol)) << "grad_weight";
    EXPECT_TRUE(Close(got.x1, want.x1, tol)) << "grad_x1";
    EXPECT_TRUE(Close(got.x2, want.x2, tol)) << "grad_x2";
    // Each subset of gradients alone.
    for (int mask = 1; mask < 7; ++mask) {
      const Runner::Grads part = runner.Backward(w, x1, x2, g, mask & 1, mask & 2, mask & 4);
      if (mask & 1) EXPECT_TRUE(Close(part.weight, want.weight, tol)) << "grad_weight, mask " << mask;
      if (mask & 2) EXPECT_TRUE(Close(part.x1, want.x1, tol)) << "grad_x1, mask " << mask;
      if (mask & 4) EXPECT_TRUE(Close(part.x2, want.x2, tol)) << "grad_x2, mask " << mask;
    }
    // LossGradient(kSum) with per-sample/uvu weights: grad_out = 1.
    const NaiveGradients ones = NaiveBackward(*plan, w, x1, x2, std::vector<double>(g.size(), 1.0), batch);
    const Runner::Grads loss = runner.LossGradient(Loss::kSum, w, x1, x2);
    EXPECT_TRUE(Close(loss.weight, ones.weight, tol)) << "LossGradient grad_weight";
    EXPECT_TRUE(Close(loss.x1, ones.x1, tol)) << "LossGradient grad_x1";
    // Per-sample accumulate adds per sample.
    if (variant.sharing == WeightSharing::kPerSample) {
      const DType dtype = GetParam();
      const std::vector<double> previous = Random(weight_count);
      Buffer bw(dtype, runner.weight_shape(), w), b1(dtype, runner.x1_shape(), x1), b2(dtype, runner.x2_shape(), x2),
          bg(dtype, runner.out_shape(), g), gw(dtype, runner.weight_shape(), previous);
      GradientOutputs grads;
      grads.grad_weight = gw.view();
      grads.accumulate_grad_weight = true;
      absl::Status status = runner.backend().Backward(runner.prepared(), bw.cview(), b1.cview(), b2.cview(),
                                                      bg.cview(), grads, runner.ctx());
      ASSERT_TRUE(status.ok()) << status;
      std::vector<double> sum = previous;
      for (size_t n = 0; n < sum.size(); ++n) sum[n] += want.weight[n];
      EXPECT_TRUE(Close(gw.Get(), sum, tol)) << "accumulate per-sample";
      EXPECT_TRUE(gw.GuardsIntact());
    }
  }
}

// A per-sample plan whose samples all get the same weights equals the shared plan.
TEST_P(RandomTest, PerSampleWeights_EqualSharedWhenRepeated) {
  SCOPED_TRACE(trace());
  const double tol = Tolerance(GetParam());
  TensorProductOptions per_sample_options;
  per_sample_options.weight_sharing = WeightSharing::kPerSample;
  const TensorProductPlan shared = RandomPlan(rng_, 3);
  const TensorProductPlan per_sample = *TensorProductPlan::FullyConnected(shared.irreps_in1(), shared.irreps_in2(),
                                                                          shared.irreps_out(), per_sample_options);
  const int64_t batch = 4;
  Runner a(shared, GetParam(), batch), b(per_sample, GetParam(), batch);
  const std::vector<double> w = Random(shared.weight_numel()), x1 = Random(batch * shared.dim_in1()),
                            x2 = Random(batch * shared.dim_in2()), g = Random(batch * shared.dim_out());
  std::vector<double> repeated;
  for (int64_t z = 0; z < batch; ++z) repeated.insert(repeated.end(), w.begin(), w.end());
  EXPECT_TRUE(Close(b.Forward(repeated, x1, x2), a.Forward(w, x1, x2), tol));
  const Runner::Grads ga = a.Backward(w, x1, x2, g), gb = b.Backward(repeated, x1, x2, g);
  EXPECT_TRUE(Close(gb.x1, ga.x1, tol));
  EXPECT_TRUE(Close(gb.x2, ga.x2, tol));
  // The shared gradient is the sum over samples of the per-sample ones.
  std::vector<double> summed(shared.weight_numel(), 0.0);
  for (int64_t z = 0; z < batch; ++z)
    for (int64_t n = 0; n < shared.weight_numel(); ++n) summed[n] += gb.weight[z * shared.weight_numel() + n];
  EXPECT_TRUE(Close(summed, ga.weight, tol));
}

// Results do not depend on the thread count, and a large batch (several internal chunks)
// equals the same samples run one at a time.
TEST_P(RandomTest, ResultsIndependentOfThreadsAndBatchSplitting) {
  SCOPED_TRACE(trace());
  const double tol = Tolerance(GetParam());
  const TensorProductPlan plan =
      *TensorProductPlan::FullyConnected("32x0e + 32x1o + 16x2e", "16x0e + 16x1o", "32x0e + 32x1o + 16x1e + 16x2e");
  // 300 samples: several of the backend's internal batch chunks (about 2 MB of T each) in both dtypes.
  const int64_t batch = 300;
  const std::vector<double> w = Random(plan.weight_numel()), x1 = Random(batch * plan.dim_in1()),
                            x2 = Random(batch * plan.dim_in2()), g = Random(batch * plan.dim_out());
  Runner reference(plan, GetParam(), batch, CpuBackendOptions{1});
  const std::vector<double> out = reference.Forward(w, x1, x2);
  const Runner::Grads grads = reference.Backward(w, x1, x2, g);
  for (int threads : {2, 3, 7, 0}) {
    SCOPED_TRACE(absl::StrCat("threads ", threads));
    Runner runner(plan, GetParam(), batch, CpuBackendOptions{threads});
    EXPECT_TRUE(Close(runner.Forward(w, x1, x2), out, tol));
    const Runner::Grads other = runner.Backward(w, x1, x2, g);
    EXPECT_TRUE(Close(other.weight, grads.weight, tol));
    EXPECT_TRUE(Close(other.x1, grads.x1, tol));
    EXPECT_TRUE(Close(other.x2, grads.x2, tol));
  }
  // Sample by sample: out and grad_x rows match; grad_weight sums.
  Runner single(plan, GetParam(), 1);
  for (int64_t z = 0; z < batch; z += 37) {  // samples in different chunks
    auto row = [&](const std::vector<double>& v, int64_t dim) {
      return std::vector<double>(v.begin() + z * dim, v.begin() + (z + 1) * dim);
    };
    const std::vector<double> r1 = row(x1, plan.dim_in1()), r2 = row(x2, plan.dim_in2()), rg = row(g, plan.dim_out());
    EXPECT_TRUE(Close(single.Forward(w, r1, r2), row(out, plan.dim_out()), tol)) << "sample " << z;
    const Runner::Grads one = single.Backward(w, r1, r2, rg);
    EXPECT_TRUE(Close(one.x1, row(grads.x1, plan.dim_in1()), tol)) << "sample " << z;
    EXPECT_TRUE(Close(one.x2, row(grads.x2, plan.dim_in2()), tol)) << "sample " << z;
  }
  // One sample against the naive loops.
  const std::vector<double> r1(x1.begin(), x1.begin() + plan.dim_in1()), r2(x2.begin(), x2.begin() + plan.dim_in2());
  EXPECT_TRUE(Close(single.Forward(w, r1, r2), NaiveForward(plan, w, r1, r2, 1), tol));
}

INSTANTIATE_TEST_SUITE_P(DTypes, RandomTest, ::testing::ValuesIn(kDTypes),
                         [](const ::testing::TestParamInfo<DType>& info) { return DTypeName(info.param); });

// --- Bad inputs -------------------------------------------------------------------------------

// The status is INVALID_ARGUMENT and names `what` and the expected shape.
::testing::AssertionResult IsShapeError(const absl::Status& status, const std::string& what,
                                        const std::vector<int64_t>& expected_shape) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "want INVALID_ARGUMENT, got " << status;
  }
  const std::string message(status.message());
  const std::string shape = ShapeString(expected_shape);
  if (!absl::StrContains(message, what) || !absl::StrContains(message, shape) ||
      !absl::StrContains(message, "expected")) {
    return ::testing::AssertionFailure() << "message does not name " << what << " and expected " << shape << ": "
                                         << message;
  }
  return ::testing::AssertionSuccess();
}

class BadInputTest : public ::testing::TestWithParam<DType> {};

TEST_P(BadInputTest, WrongShapesDTypesAndMissingTensorsAreInvalidArgument) {
  const DType dtype = GetParam();
  const DType other = dtype == DType::kFloat64 ? DType::kFloat32 : DType::kFloat64;
  const TensorProductPlan plan = *TensorProductPlan::FullyConnected("2x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o + 1x1e");
  const int64_t batch = 3, n = plan.weight_numel(), d1 = plan.dim_in1(), d2 = plan.dim_in2(), d3 = plan.dim_out();
  CpuBackend backend;
  auto prepared = backend.Prepare(plan);
  ASSERT_TRUE(prepared.ok());
  const ExecutionContext ctx;
  Buffer w(dtype, {n}), x1(dtype, {batch, d1}), x2(dtype, {batch, d2}), out(dtype, {batch, d3}),
      grad_out(dtype, {batch, d3});
  for (Buffer* b : {&w, &x1, &x2, &grad_out}) b->Fill(0.5);
  // A good call works (so the failures below are about the one thing changed).
  ASSERT_TRUE(backend.Forward(**prepared, w.cview(), x1.cview(), x2.cview(), out.view(), ctx).ok());

  Buffer x1_wide(dtype, {batch, d1 + 1}), x1_flat(dtype, {batch * d1}), x2_batch(dtype, {batch + 1, d2}),
      x2_other(other, {batch, d2}), w_short(dtype, {n - 1}), w_per_sample(dtype, {batch, n}),
      out_wrong(dtype, {batch, d3 - 1}), out_other(other, {batch, d3}), g_wrong(dtype, {batch, d3 + 2}),
      gx1_wrong(dtype, {batch, d1 - 1}), gw_wrong(dtype, {n + 1}), gx2_other(other, {batch, d2}), w_other(other, {n}),
      g_other(other, {batch, d3});
  struct ForwardCase {
    const char* name;
    ConstTensorView weight, x1, x2;
    TensorView out;
    std::string what;
    std::vector<int64_t> expected;
  };
  const std::vector<ForwardCase> forward_cases = {
      {"x1 too wide", w.cview(), x1_wide.cview(), x2.cview(), out.view(), "x1", {batch + 0, d1}},
      {"x1 one-dimensional", w.cview(), x1_flat.cview(), x2.cview(), out.view(), "x1", {d1}},
      {"x2 batch differs", w.cview(), x1.cview(), x2_batch.cview(), out.view(), "x2", {batch, d2}},
      {"x2 dtype differs from x1", w.cview(), x1.cview(), x2_other.cview(), out.view(), "x2", {batch, d2}},
      {"weight too short", w_short.cview(), x1.cview(), x2.cview(), out.view(), "weight", {n}},
      {"per-sample weights for a shared plan", w_per_sample.cview(), x1.cview(), x2.cview(), out.view(), "weight", {n}},
      {"out wrong shape", w.cview(), x1.cview(), x2.cview(), out_wrong.view(), "out", {batch, d3}},
      {"out dtype differs", w.cview(), x1.cview(), x2.cview(), out_other.view(), "out", {batch, d3}},
      {"out missing", w.cview(), x1.cview(), x2.cview(), TensorView{nullptr, dtype, {batch, d3}}, "out", {batch, d3}},
      {"x2 missing", w.cview(), x1.cview(), ConstTensorView{nullptr, dtype, {batch, d2}}, out.view(), "x2", {batch, d2}},
      {"weight missing", ConstTensorView{nullptr, dtype, {n}}, x1.cview(), x2.cview(), out.view(), "weight", {n}},
      {"weight dtype differs from x1", w_other.cview(), x1.cview(), x2.cview(), out.view(), "weight", {n}},
  };
  for (const ForwardCase& c : forward_cases) {
    SCOPED_TRACE(c.name);
    out.Fill(1.25);
    const absl::Status status = backend.Forward(**prepared, c.weight, c.x1, c.x2, c.out, ctx);
    if (std::string(c.name) == "x1 one-dimensional") {
      // No batch can be read from x1: the message names the expected [batch, dim_in1].
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
      EXPECT_TRUE(absl::StrContains(status.message(), "x1") && absl::StrContains(status.message(), absl::StrCat(d1)))
          << status;
    } else {
      EXPECT_TRUE(IsShapeError(status, c.what, c.expected));
    }
    // Nothing was written on error.
    const std::vector<double> after = out.Get();
    EXPECT_TRUE(std::all_of(after.begin(), after.end(), [](double v) { return v == 1.25; }))
        << "out written despite the error";
  }

  // Backward: bad grad_out and bad gradient buffers.
  GradientOutputs good;
  Buffer gw(dtype, {n}), gx1(dtype, {batch, d1}), gx2(dtype, {batch, d2});
  good.grad_weight = gw.view();
  good.grad_x1 = gx1.view();
  good.grad_x2 = gx2.view();
  ASSERT_TRUE(backend.Backward(**prepared, w.cview(), x1.cview(), x2.cview(), grad_out.cview(), good, ctx).ok());
  EXPECT_TRUE(IsShapeError(backend.Backward(**prepared, w.cview(), x1.cview(), x2.cview(), g_wrong.cview(), good, ctx),
                           "grad_out", {batch, d3}));
  EXPECT_TRUE(IsShapeError(backend.Backward(**prepared, w.cview(), x1.cview(), x2.cview(),
                                            ConstTensorView{nullptr, dtype, {batch, d3}}, good, ctx),
                           "grad_out", {batch, d3}));
  EXPECT_TRUE(IsShapeError(backend.Backward(**prepared, w.cview(), x1.cview(), x2.cview(), g_other.cview(), good, ctx),
                           "grad_out", {batch, d3}));
  {
    GradientOutputs bad = good;
    bad.grad_x1 = gx1_wrong.view();
    EXPECT_TRUE(IsShapeError(backend.Backward(**prepared, w.cview(), x1.cview(), x2.cview(), grad_out.cview(), bad, ctx),
                             "grad_x1", {batch, d1}));
  }
  {
    GradientOutputs bad = good;
    bad.grad_weight = gw_wrong.view();
    EXPECT_TRUE(IsShapeError(
        backend.LossGradient(**prepared, Loss::kSumTanh, w.cview(), x1.cview(), x2.cview(), TensorView{}, bad, ctx),
        "grad_weight", {n}));
  }
  {
    GradientOutputs bad = good;
    bad.grad_x2 = gx2_other.view();
    EXPECT_TRUE(IsShapeError(backend.Backward(**prepared, w.cview(), x1.cview(), x2.cview(), grad_out.cview(), bad, ctx),
                             "grad_x2", {batch, d2}));
  }
  EXPECT_TRUE(IsShapeError(backend.LossGradient(**prepared, Loss::kSum, w.cview(), x1.cview(), x2_other.cview(),
                                                TensorView{}, good, ctx),
                           "x2", {batch, d2}));
  EXPECT_TRUE(IsShapeError(backend.LossGradient(**prepared, Loss::kSumTanh, w.cview(), x1.cview(), x2.cview(),
                                                out_wrong.view(), good, ctx),
                           "out", {batch, d3}));

  // A per-sample plan names [batch, weight_numel].
  TensorProductOptions options;
  options.weight_sharing = WeightSharing::kPerSample;
  const TensorProductPlan per_sample_plan =
      *TensorProductPlan::FullyConnected(plan.irreps_in1(), plan.irreps_in2(), plan.irreps_out(), options);
  auto per_sample = backend.Prepare(per_sample_plan);
  ASSERT_TRUE(per_sample.ok());
  EXPECT_TRUE(IsShapeError(backend.Forward(**per_sample, w.cview(), x1.cview(), x2.cview(), out.view(), ctx), "weight",
                           {batch, n}));
  EXPECT_TRUE(backend.Forward(**per_sample, w_per_sample.cview(), x1.cview(), x2.cview(), out.view(), ctx).ok());
}

INSTANTIATE_TEST_SUITE_P(DTypes, BadInputTest, ::testing::ValuesIn(kDTypes),
                         [](const ::testing::TestParamInfo<DType>& info) { return DTypeName(info.param); });

TEST(CpuBackend, DescribesItselfAndCopiesHostMemory) {
  CpuBackend backend;
  EXPECT_EQ(backend.name(), "cpu");
  EXPECT_EQ(backend.memory_space(), MemorySpace::kHost);
  EXPECT_TRUE(backend.SupportsDType(DType::kFloat32));
  EXPECT_TRUE(backend.SupportsDType(DType::kFloat64));
  uint64_t seed = 0;
  std::mt19937_64 rng = FreshRng(&seed);
  const std::vector<double> values = RandomNormal(37, rng);
  auto buffer = backend.Allocate(values.size() * sizeof(double));
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  ASSERT_NE((*buffer)->data(), nullptr);
  EXPECT_EQ((*buffer)->bytes(), values.size() * sizeof(double));
  const ExecutionContext ctx;
  ASSERT_TRUE(backend.CopyFromHost((*buffer)->data(), values.data(), values.size() * sizeof(double), ctx).ok());
  std::vector<double> back(values.size(), kNaN);
  ASSERT_TRUE(backend.CopyToHost(back.data(), (*buffer)->data(), back.size() * sizeof(double), ctx).ok());
  EXPECT_TRUE(backend.Synchronize(ctx).ok());
  EXPECT_EQ(back, values);
  // Host staging is plain host memory here, usable like any other.
  auto host = backend.AllocateHost(values.size() * sizeof(double));
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_EQ((*host)->bytes(), values.size() * sizeof(double));
  ASSERT_TRUE(backend.CopyToHost((*host)->data(), (*buffer)->data(), values.size() * sizeof(double), ctx).ok());
  EXPECT_EQ(std::memcmp((*host)->data(), values.data(), values.size() * sizeof(double)), 0);
}

// A batch of zero samples is valid: nothing to compute, a shared grad_weight of zeros.
TEST(CpuBackend, EmptyBatchIsValid) {
  const TensorProductPlan plan = *TensorProductPlan::FullyConnected("2x0e + 1x1o", "1x1o", "1x0e + 2x1e");
  for (DType dtype : kDTypes) {
    SCOPED_TRACE(DTypeName(dtype));
    Runner runner(plan, dtype, 0);
    EXPECT_TRUE(runner.Forward(std::vector<double>(plan.weight_numel(), 0.5), {}, {}).empty());
    const Runner::Grads g =
        runner.LossGradient(Loss::kSumTanh, std::vector<double>(plan.weight_numel(), 0.5), {}, {});
    ASSERT_EQ(static_cast<int64_t>(g.weight.size()), plan.weight_numel());
    for (double v : g.weight) EXPECT_EQ(v, 0.0);
  }
}

// A plan without paths is valid and gives zeros.
TEST(CpuBackend, PlanWithoutPathsGivesZeroOutput) {
  const TensorProductPlan plan = *TensorProductPlan::FullyConnected("2x0e", "1x0e", "3x1o");
  ASSERT_TRUE(plan.paths().empty());
  Runner runner(plan, DType::kFloat64, 2);
  const std::vector<double> out = runner.Forward({}, {1.0, 2.0, 3.0, 4.0}, {5.0, 6.0});
  ASSERT_EQ(out.size(), 18u);
  for (double v : out) EXPECT_EQ(v, 0.0);
  const Runner::Grads g = runner.Backward({}, {1.0, 2.0, 3.0, 4.0}, {5.0, 6.0}, std::vector<double>(18, 1.0), false);
  for (double v : g.x1) EXPECT_EQ(v, 0.0);
  for (double v : g.x2) EXPECT_EQ(v, 0.0);
}

}  // namespace
}  // namespace tpserve
