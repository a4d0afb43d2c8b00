// CUDA backend vs the CPU backend's float64 reference, on fresh random inputs: every e3nn
// reference case's irreps, the seed shape and randomly drawn irreps, in every precision, for the
// forward pass, the backward pass (each gradient) and the built-in losses. Outputs are poisoned
// with NaN before each run, so an unwritten element fails. Every test skips without a GPU.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/core/backend.h"
#include "kernels/core/plan.h"
#include "kernels/core/status_macros.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_backend_options.h"
#include "kernels/cuda/tp_kernels.h"
#include "tests/support/qm9_edge_plan.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"

namespace tpserve {
namespace {

using testing::FreshRng;
using testing::Qm9EdgePlan;
using testing::RandomNormal;
using testing::RelativeError;

double Tolerance(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return 1e-5;
    case Precision::kTf32: return 2e-3;
    case Precision::kBf16: return 2e-2;
  }
  return 0;
}

constexpr Precision kAllPrecisions[] = {Precision::kFp32, Precision::kTf32, Precision::kBf16};

std::vector<double> RoundToFloat(std::vector<double> values) {
  for (double& v : values) v = static_cast<float>(v);
  return values;
}

// A device copy of host doubles as float32 (or an uninitialized, NaN-poisoned buffer).
class DeviceTensor {
 public:
  DeviceTensor(Backend* backend, std::vector<int64_t> shape) : backend_(backend), shape_(std::move(shape)) {
    int64_t n = 1;
    for (int64_t s : shape_) n *= s;
    numel_ = n;
    auto buffer = backend_->Allocate(sizeof(float) * std::max<int64_t>(n, 1));
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    buffer_ = std::move(buffer).value();
  }
  void Upload(const std::vector<double>& values) {
    std::vector<float> f(values.begin(), values.end());
    ASSERT_TRUE(backend_->CopyFromHost(buffer_->data(), f.data(), f.size() * sizeof(float), {}).ok());
  }
  void Poison() {
    std::vector<float> nan(numel_, std::nanf(""));
    ASSERT_TRUE(backend_->CopyFromHost(buffer_->data(), nan.data(), nan.size() * sizeof(float), {}).ok());
  }
  std::vector<double> Download() {
    std::vector<float> f(numel_);
    EXPECT_TRUE(backend_->CopyToHost(f.data(), buffer_->data(), f.size() * sizeof(float), {}).ok());
    EXPECT_TRUE(backend_->Synchronize({}).ok());
    return std::vector<double>(f.begin(), f.end());
  }
  TensorView view() const { return {buffer_->data(), DType::kFloat32, shape_}; }
  ConstTensorView cview() const { return AsConst(view()); }

 private:
  Backend* backend_;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::unique_ptr<BackendBuffer> buffer_;
};

TensorView HostView(std::vector<double>& v, std::vector<int64_t> shape) { return {v.data(), DType::kFloat64, shape}; }
ConstTensorView HostCView(const std::vector<double>& v, std::vector<int64_t> shape) {
  return {v.data(), DType::kFloat64, shape};
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaBackend::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    auto cuda = CudaBackend::Create(0);
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    cuda_ = std::move(cuda).value();
  }

  // Checks forward, backward (all gradients, then each alone) and both losses of `plan` at `batch`
  // against the float64 CPU reference on the same float32-rounded random inputs; on `backend` (one
  // made with other options), else the default backend.
  void CheckPlan(const TensorProductPlan& plan, int64_t batch, Precision precision, Backend* backend = nullptr) {
    Backend* const cuda = backend != nullptr ? backend : cuda_.get();
    uint64_t seed = 0;
    std::mt19937_64 rng = FreshRng(&seed);
    const double tol = Tolerance(precision);
    SCOPED_TRACE(absl::StrFormat("plan %s x %s -> %s, batch %d, precision %s, seed %d",
                                 plan.irreps_in1().ToString(), plan.irreps_in2().ToString(),
                                 plan.irreps_out().ToString(), batch, PrecisionName(precision), seed));
    const std::vector<int64_t> w_shape = WeightShape(plan, batch);
    const std::vector<int64_t> x1_shape = {batch, plan.dim_in1()}, x2_shape = {batch, plan.dim_in2()},
                               out_shape = {batch, plan.dim_out()};
    int64_t w_numel = 1;
    for (int64_t d : w_shape) w_numel *= d;  // [weight_numel] or [batch, weight_numel]
    std::vector<double> w = RoundToFloat(RandomNormal(w_numel, rng));
    std::vector<double> x1 = RoundToFloat(RandomNormal(batch * plan.dim_in1(), rng));
    std::vector<double> x2 = RoundToFloat(RandomNormal(batch * plan.dim_in2(), rng));
    std::vector<double> gout = RoundToFloat(RandomNormal(batch * plan.dim_out(), rng));

    // Reference.
    CpuBackend cpu;
    auto cpu_plan = cpu.Prepare(plan);
    ASSERT_TRUE(cpu_plan.ok()) << cpu_plan.status();
    std::vector<double> ref_out(batch * plan.dim_out()), ref_dw(w.size()), ref_dx1(x1.size()), ref_dx2(x2.size());
    ASSERT_TRUE(cpu.Forward(**cpu_plan, HostCView(w, w_shape), HostCView(x1, x1_shape), HostCView(x2, x2_shape),
                            HostView(ref_out, out_shape), {})
                    .ok());
    GradientOutputs ref_grads{HostView(ref_dw, w_shape), HostView(ref_dx1, x1_shape), HostView(ref_dx2, x2_shape)};
    ASSERT_TRUE(cpu.Backward(**cpu_plan, HostCView(w, w_shape), HostCView(x1, x1_shape), HostCView(x2, x2_shape),
                             HostCView(gout, out_shape), ref_grads, {})
                    .ok());

    auto prepared = cuda->Prepare(plan);
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    DeviceTensor d_w(cuda, w_shape), d_x1(cuda, x1_shape), d_x2(cuda, x2_shape),
        d_gout(cuda, out_shape), d_out(cuda, out_shape), d_dw(cuda, w_shape),
        d_dx1(cuda, x1_shape), d_dx2(cuda, x2_shape);
    d_w.Upload(w);
    d_x1.Upload(x1);
    d_x2.Upload(x2);
    d_gout.Upload(gout);
    ExecutionContext ctx;
    ctx.precision = precision;

    // Forward.
    d_out.Poison();
    ASSERT_TRUE(cuda->Forward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_out.view(), ctx).ok());
    EXPECT_LE(RelativeError(d_out.Download(), ref_out), tol) << "forward";

    // Backward, all gradients together.
    d_dw.Poison();
    d_dx1.Poison();
    d_dx2.Poison();
    GradientOutputs grads{d_dw.view(), d_dx1.view(), d_dx2.view()};
    ASSERT_TRUE(
        cuda->Backward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_gout.cview(), grads, ctx).ok());
    EXPECT_LE(RelativeError(d_dw.Download(), ref_dw), tol) << "backward grad_weight";
    EXPECT_LE(RelativeError(d_dx1.Download(), ref_dx1), tol) << "backward grad_x1";
    EXPECT_LE(RelativeError(d_dx2.Download(), ref_dx2), tol) << "backward grad_x2";

    // Each gradient alone, and grad_weight accumulated onto existing values.
    d_dx2.Poison();
    ASSERT_TRUE(cuda->Backward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_gout.cview(),
                                GradientOutputs{{}, {}, d_dx2.view()}, ctx)
                    .ok());
    EXPECT_LE(RelativeError(d_dx2.Download(), ref_dx2), tol) << "backward grad_x2 alone";
    d_dx1.Poison();
    ASSERT_TRUE(cuda_->Backward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_gout.cview(),
                                GradientOutputs{{}, d_dx1.view(), {}}, ctx)
                    .ok());
    EXPECT_LE(RelativeError(d_dx1.Download(), ref_dx1), tol) << "backward grad_x1 alone";
    d_dw.Poison();
    ASSERT_TRUE(cuda_->Backward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_gout.cview(),
                                GradientOutputs{d_dw.view(), {}, {}}, ctx)
                    .ok());
    EXPECT_LE(RelativeError(d_dw.Download(), ref_dw), tol) << "backward grad_weight alone";
    // Existing values of dW's size, so that rounding of the sum stays at float precision of dW.
    double rms = 0;
    for (double v : ref_dw) rms += v * v;
    rms = std::sqrt(rms / std::max<size_t>(ref_dw.size(), 1));
    std::vector<double> base = RandomNormal(w.size(), rng);
    for (double& v : base) v = static_cast<float>(v * rms);
    d_dw.Upload(base);
    GradientOutputs acc_grads{d_dw.view(), {}, {}};
    acc_grads.accumulate_grad_weight = true;
    ASSERT_TRUE(
        cuda->Backward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_gout.cview(), acc_grads, ctx).ok());
    std::vector<double> want_acc = base;
    for (size_t i = 0; i < want_acc.size(); ++i) want_acc[i] += ref_dw[i];
    std::vector<double> got_acc = d_dw.Download();
    for (size_t i = 0; i < got_acc.size(); ++i) got_acc[i] -= base[i];
    EXPECT_LE(RelativeError(got_acc, ref_dw), tol)
        << "backward grad_weight accumulated";

    // Losses: sum tanh (the seed task) and sum, with out and every gradient.
    for (Loss loss : {Loss::kSumTanh, Loss::kSum}) {
      SCOPED_TRACE(LossName(loss));
      std::vector<double> g(ref_out.size());
      for (size_t i = 0; i < g.size(); ++i) {
        const double y = std::tanh(ref_out[i]);
        g[i] = loss == Loss::kSumTanh ? 1 - y * y : 1.0;
      }
      // The forward's rounding reaches the gradients a second time through g(out) (1 - tanh^2 has
      // slope up to 0.77): tf32 and bf16 get 2.5x their tolerance here (a tf32 case with a single
      // output channel, batch 109, gave 2.9e-3 on the H100).
      const double loss_tol = precision == Precision::kFp32 ? tol : 2.5 * tol;
      std::vector<double> want_dw(w.size()), want_dx1(x1.size()), want_dx2(x2.size());
      ASSERT_TRUE(cpu.Backward(**cpu_plan, HostCView(w, w_shape), HostCView(x1, x1_shape), HostCView(x2, x2_shape),
                               HostCView(g, out_shape),
                               {HostView(want_dw, w_shape), HostView(want_dx1, x1_shape), HostView(want_dx2, x2_shape)},
                               {})
                      .ok());
      d_out.Poison();
      d_dw.Poison();
      d_dx1.Poison();
      d_dx2.Poison();
      ASSERT_TRUE(cuda->LossGradient(**prepared, loss, d_w.cview(), d_x1.cview(), d_x2.cview(), d_out.view(),
                                      GradientOutputs{d_dw.view(), d_dx1.view(), d_dx2.view()}, ctx)
                      .ok());
      EXPECT_LE(RelativeError(d_out.Download(), ref_out), tol) << "loss out";
      EXPECT_LE(RelativeError(d_dw.Download(), want_dw), loss_tol) << "loss grad_weight";
      EXPECT_LE(RelativeError(d_dx1.Download(), want_dx1), loss_tol) << "loss grad_x1";
      EXPECT_LE(RelativeError(d_dx2.Download(), want_dx2), loss_tol) << "loss grad_x2";
      // Only grad_weight, no out: the seed task's call.
      d_dw.Poison();
      ASSERT_TRUE(cuda->LossGradient(**prepared, loss, d_w.cview(), d_x1.cview(), d_x2.cview(), {},
                                      GradientOutputs{d_dw.view(), {}, {}}, ctx)
                      .ok());
      EXPECT_LE(RelativeError(d_dw.Download(), want_dw), loss_tol) << "loss grad_weight only";
      // Only the input gradients.
      d_dx1.Poison();
      d_dx2.Poison();
      ASSERT_TRUE(cuda->LossGradient(**prepared, loss, d_w.cview(), d_x1.cview(), d_x2.cview(), {},
                                      GradientOutputs{{}, d_dx1.view(), d_dx2.view()}, ctx)
                      .ok());
      EXPECT_LE(RelativeError(d_dx1.Download(), want_dx1), loss_tol) << "loss grad_x1 only";
      EXPECT_LE(RelativeError(d_dx2.Download(), want_dx2), loss_tol) << "loss grad_x2 only";
    }
  }

  std::unique_ptr<Backend> cuda_;
};

TEST_F(CudaBackendTest, Forward_MatchesE3nnReferenceOutputs) {
  const std::vector<std::string> files = testing::ReferenceCaseFiles();
  ASSERT_FALSE(files.empty()) << "no reference cases in " << testing::ReferenceDir();
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    auto ref = testing::LoadReferenceCase(file);
    ASSERT_TRUE(ref.ok()) << ref.status();
    auto plan = TensorProductPlan::FullyConnected(ref->irreps_in1, ref->irreps_in2, ref->irreps_out);
    ASSERT_TRUE(plan.ok()) << plan.status();
    auto prepared = cuda_->Prepare(*plan);
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    const int64_t batch = ref->batch;
    DeviceTensor w(cuda_.get(), WeightShape(*plan, batch)), x1(cuda_.get(), {batch, plan->dim_in1()}),
        x2(cuda_.get(), {batch, plan->dim_in2()}), out(cuda_.get(), {batch, plan->dim_out()}),
        dw(cuda_.get(), WeightShape(*plan, batch));
    w.Upload(ref->weight);
    x1.Upload(ref->x1);
    x2.Upload(ref->x2);
    out.Poison();
    dw.Poison();
    ASSERT_TRUE(cuda_->LossGradient(**prepared, Loss::kSumTanh, w.cview(), x1.cview(), x2.cview(), out.view(),
                                    GradientOutputs{dw.view(), {}, {}}, {})
                    .ok());
    // The reference was computed from float64 inputs; float32 rounding of the inputs alone is ~1e-7.
    EXPECT_LE(RelativeError(out.Download(), ref->out), 1e-5);
    EXPECT_LE(RelativeError(dw.Download(), ref->grad_weight_sum_tanh), 1e-5);
  }
}

TEST_F(CudaBackendTest, AllPasses_MatchCpuReference_OnReferenceCaseIrreps) {
  for (const std::string& file : testing::ReferenceCaseFiles()) {
    auto ref = testing::LoadReferenceCase(file);
    ASSERT_TRUE(ref.ok()) << ref.status();
    auto plan = TensorProductPlan::FullyConnected(ref->irreps_in1, ref->irreps_in2, ref->irreps_out);
    ASSERT_TRUE(plan.ok()) << plan.status();
    for (Precision precision : kAllPrecisions) {
      CheckPlan(*plan, ref->batch, precision);
      CheckPlan(*plan, 203, precision);
    }
  }
}

TEST_F(CudaBackendTest, AllPasses_MatchCpuReference_OnSeedShape) {
  auto plan = TensorProductPlan::FullyConnected("128x0e+128x1e+128x2e", "128x0e+128x1e+128x2e",
                                                "128x0e+128x1e+128x2e");
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (Precision precision : kAllPrecisions) CheckPlan(*plan, 64, precision);
}

TEST_F(CudaBackendTest, AllPasses_MatchCpuReference_OnOddMultiplicitiesHighLAndTileEdges) {
  // Odd and zero multiplicities, mixed parity, l up to 11, batch not a multiple of any tile.
  const char* cases[][3] = {
      {"3x0e + 5x1o + 1x2e", "1x0e + 3x1o + 2x2o", "5x0e + 3x1o + 1x1e + 7x2e + 2x3o"},
      {"0x0e + 4x1o", "2x1o + 0x2e", "3x0e + 0x1e + 2x2e"},
      {"2x11o + 1x5e", "1x6e + 1x0e", "3x11o + 2x5e + 1x17e"},
      {"33x1e + 65x0o", "31x1o + 1x0e", "40x0o + 33x1o + 3x2o"},
      // Multiplicities that are multiples of 32 take the fast generators; 32 uses the narrow tiles and
      // changes p at every K tile, 96 changes it inside a block's K slice.
      {"32x0e + 32x1e + 32x2e", "32x0e + 32x1e + 32x2e", "32x0e + 32x1e + 32x2e"},
      {"96x0e + 64x1o", "32x1o + 96x0e", "64x1o + 32x0e + 96x1e"},
      // The factored forward (T <= 5, R <= 5) next to paths it leaves to the GEMM (l = 3) in one launch.
      {"32x0e + 32x1o + 32x3e", "32x0e + 32x3e", "32x0e + 32x1o + 32x3e + 64x2e"},
  };
  for (const auto& irreps : cases) {
    auto plan = TensorProductPlan::FullyConnected(irreps[0], irreps[1], irreps[2]);
    ASSERT_TRUE(plan.ok()) << plan.status();
    for (Precision precision : kAllPrecisions) CheckPlan(*plan, 77, precision);
  }
}

TEST_F(CudaBackendTest, AllPasses_MatchCpuReference_OnRandomlyDrawnIrreps) {
  uint64_t seed = 0;
  std::mt19937_64 rng = FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("irreps seed ", seed));
  auto draw = [&](int max_l) {
    std::string text;
    const int terms = 1 + rng() % 3;
    for (int t = 0; t < terms; ++t) {
      const int muls[] = {1, 2, 3, 5, 8, 16, 24, 40};
      absl::StrAppend(&text, t ? " + " : "", muls[rng() % 8], "x", rng() % (max_l + 1), rng() % 2 ? "e" : "o");
    }
    return text;
  };
  int checked = 0;
  for (int attempt = 0; attempt < 50 && checked < 4; ++attempt) {
    const int max_l = attempt % 2 ? 3 : 6;
    auto plan = TensorProductPlan::FullyConnected(draw(max_l), draw(max_l), draw(max_l));
    if (!plan.ok() || plan->paths().empty()) continue;
    ++checked;
    const int64_t batch = 1 + rng() % 150;
    for (Precision precision : kAllPrecisions) CheckPlan(*plan, batch, precision);
  }
  EXPECT_EQ(checked, 4);
}

// Small enough for compute-sanitizer's racecheck/memcheck: the fast generators with p changing at
// every K tile (multiplicity 32) and the narrow tiles.
TEST_F(CudaBackendTest, SmallFastPath_MatchesCpuReference) {
  auto plan = TensorProductPlan::FullyConnected("32x0e + 32x1e", "32x1e", "32x0e + 32x1e");
  ASSERT_TRUE(plan.ok()) << plan.status();
  CheckPlan(*plan, 9, Precision::kFp32);
}

TEST_F(CudaBackendTest, LargeBatch_SplitsAndAtomicsStayCorrect) {
  auto plan = TensorProductPlan::FullyConnected("4x0e + 3x1o", "2x1o + 1x0e", "5x1o + 2x0e");
  ASSERT_TRUE(plan.ok());
  CheckPlan(*plan, 5000, Precision::kFp32);
}

// Per path: relative error, and the first element (u, v, w) off by more than tol x the path's rms:
// what a wrong weight-gradient kernel needs (printed with a failing check).
std::string DwErrorsByPath(const TensorProductPlan& plan, const std::vector<double>& got,
                           const std::vector<double>& want, double tol) {
  std::string report;
  for (size_t i = 0; i < plan.paths().size(); ++i) {
    const PathPlan& pp = plan.paths()[i];
    const int64_t off = pp.weight_offset, n = pp.weight_numel;
    std::vector<double> g(got.begin() + off, got.begin() + off + n), w(want.begin() + off, want.begin() + off + n);
    double rms = 0;
    for (double v : w) rms += v * v;
    rms = std::sqrt(rms / std::max<int64_t>(n, 1));
    std::string first = "none";
    for (int64_t k = 0; k < n; ++k) {
      if (!(std::fabs(g[k] - w[k]) <= tol * rms)) {
        first = absl::StrFormat("(u %d, v %d, w %d) got %.6g want %.6g", k / (pp.mul_in2 * pp.mul_out),
                                (k / pp.mul_out) % pp.mul_in2, k % pp.mul_out, g[k], w[k]);
        break;
      }
    }
    absl::StrAppendFormat(&report, "\n  path %d (l %d x %d -> %d, %dx%dx%d): rel %.2e, first bad %s", i, pp.l1, pp.l2,
                          pp.l3, pp.mul_in1, pp.mul_in2, pp.mul_out, RelativeError(g, w), first);
  }
  return report;
}

// The weight gradient on wgmma (CudaBackendOptions::weight_grad_kernel = kWgmma; on a device
// without it, the option falls back to mma.sync and this checks that) against the float64 CPU
// reference: Backward (grad_weight alone, assigned and accumulated) and the seed task's call
// (LossGradient sum tanh, grad_weight only) at batch sizes across the kernel's chunk edges (8, 16
// and 32 samples), on the seed shape and on shapes that exercise its edges: multiplicities that are
// not multiples of 128 (row and column tiles past the path), x2 offsets that are not 16-byte aligned
// (4-byte copies), few tiles (the batch split over blocks, atomics), and an l = 3 path (the whole
// plan stays on mma.sync).
class WgmmaWeightGradTest : public CudaBackendTest {
 protected:
  void SetUp() override {
    CudaBackendTest::SetUp();
    if (IsSkipped()) return;
    CudaBackendOptions options;
    options.weight_grad_kernel = CudaBackendOptions::WeightGradKernel::kWgmma;
    auto backend = CudaBackend::Create(0, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    wgmma_ = std::move(backend).value();
    int device = 0;
    cudaGetDevice(&device);
    std::printf("wgmma weight gradient %s on this device\n",
                cuda::FactoredWgmmaUsable(device) ? "usable" : "NOT usable (mma.sync fallback checked)");
  }

  void CheckWeightGrad(const TensorProductPlan& plan, int64_t batch) {
    uint64_t seed = 0;
    std::mt19937_64 rng = FreshRng(&seed);
    SCOPED_TRACE(absl::StrFormat("plan %s x %s -> %s, batch %d, seed %d", plan.irreps_in1().ToString(),
                                 plan.irreps_in2().ToString(), plan.irreps_out().ToString(), batch, seed));
    const std::vector<int64_t> w_shape = WeightShape(plan, batch);
    const std::vector<int64_t> x1_shape = {batch, plan.dim_in1()}, x2_shape = {batch, plan.dim_in2()},
                               out_shape = {batch, plan.dim_out()};
    std::vector<double> w = RoundToFloat(RandomNormal(plan.weight_numel(), rng));
    std::vector<double> x1 = RoundToFloat(RandomNormal(batch * plan.dim_in1(), rng));
    std::vector<double> x2 = RoundToFloat(RandomNormal(batch * plan.dim_in2(), rng));
    std::vector<double> gout = RoundToFloat(RandomNormal(batch * plan.dim_out(), rng));
    CpuBackend cpu;
    auto cpu_plan = cpu.Prepare(plan);
    ASSERT_TRUE(cpu_plan.ok()) << cpu_plan.status();
    std::vector<double> ref_dw(w.size()), ref_out(batch * plan.dim_out()), ref_tanh_dw(w.size());
    ASSERT_TRUE(cpu.Backward(**cpu_plan, HostCView(w, w_shape), HostCView(x1, x1_shape), HostCView(x2, x2_shape),
                             HostCView(gout, out_shape), GradientOutputs{HostView(ref_dw, w_shape), {}, {}}, {})
                    .ok());
    ASSERT_TRUE(cpu.LossGradient(**cpu_plan, Loss::kSumTanh, HostCView(w, w_shape), HostCView(x1, x1_shape),
                                 HostCView(x2, x2_shape), HostView(ref_out, out_shape),
                                 GradientOutputs{HostView(ref_tanh_dw, w_shape), {}, {}}, {})
                    .ok());
    auto prepared = wgmma_->Prepare(plan);
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    Backend* b = wgmma_.get();
    DeviceTensor d_w(b, w_shape), d_x1(b, x1_shape), d_x2(b, x2_shape), d_gout(b, out_shape), d_dw(b, w_shape);
    d_w.Upload(w);
    d_x1.Upload(x1);
    d_x2.Upload(x2);
    d_gout.Upload(gout);
    for (Precision precision : kAllPrecisions) {
      SCOPED_TRACE(PrecisionName(precision));
      const double tol = Tolerance(precision);
      ExecutionContext ctx;
      ctx.precision = precision;
      d_dw.Poison();
      ASSERT_TRUE(b->Backward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_gout.cview(),
                              GradientOutputs{d_dw.view(), {}, {}}, ctx)
                      .ok());
      std::vector<double> got = d_dw.Download();
      const double err = RelativeError(got, ref_dw);
      EXPECT_LE(err, tol) << "backward grad_weight" << DwErrorsByPath(plan, got, ref_dw, 10 * tol);
      std::printf("  batch %lld %s: backward dW rel %.2e", static_cast<long long>(batch), PrecisionName(precision),
                  err);
      // Accumulated onto existing values of dW's size (as in CheckPlan).
      double rms = 0;
      for (double v : ref_dw) rms += v * v;
      rms = std::sqrt(rms / std::max<size_t>(ref_dw.size(), 1));
      std::vector<double> base = RandomNormal(w.size(), rng);
      for (double& v : base) v = static_cast<float>(v * rms);
      d_dw.Upload(base);
      GradientOutputs acc{d_dw.view(), {}, {}};
      acc.accumulate_grad_weight = true;
      ASSERT_TRUE(b->Backward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_gout.cview(), acc, ctx).ok());
      got = d_dw.Download();
      for (size_t i = 0; i < got.size(); ++i) got[i] -= base[i];
      EXPECT_LE(RelativeError(got, ref_dw), tol) << "accumulated" << DwErrorsByPath(plan, got, ref_dw, 10 * tol);
      // The seed task's call.
      d_dw.Poison();
      ASSERT_TRUE(b->LossGradient(**prepared, Loss::kSumTanh, d_w.cview(), d_x1.cview(), d_x2.cview(), {},
                                  GradientOutputs{d_dw.view(), {}, {}}, ctx)
                      .ok());
      got = d_dw.Download();
      const double loss_tol = precision == Precision::kFp32 ? tol : 2.5 * tol;  // see CheckPlan
      const double tanh_err = RelativeError(got, ref_tanh_dw);
      EXPECT_LE(tanh_err, loss_tol) << "sum tanh grad_weight" << DwErrorsByPath(plan, got, ref_tanh_dw, 10 * loss_tol);
      std::printf(", sum tanh dW rel %.2e\n", tanh_err);
    }
  }

  std::unique_ptr<Backend> wgmma_;
};

TEST_F(WgmmaWeightGradTest, SeedShape_MatchesCpuReference_AcrossBatches) {
  auto plan = TensorProductPlan::FullyConnected("128x0e+128x1e+128x2e", "128x0e+128x1e+128x2e",
                                                "128x0e+128x1e+128x2e");
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (int64_t batch : {1, 7, 64, 1000}) CheckWeightGrad(*plan, batch);
}

TEST_F(WgmmaWeightGradTest, TileEdgesSplitsAndUnalignedRows_MatchCpuReference) {
  const char* cases[][3] = {
      // Multiplicities past one 128 tile and not multiples of 8 (q and n tiles cut by the path).
      {"136x0e + 3x1o", "130x0e + 5x1o", "140x0e + 9x1o"},
      // x2 at offsets that are not multiples of 4 floats (4-byte copies), odd multiplicities, l = 2.
      {"5x1e + 7x2e", "3x0e + 13x1e + 6x2e", "11x0e + 5x1e + 4x2e"},
      // Few tiles: the batch is split over blocks (atomics on a zeroed dW).
      {"8x0e + 4x1o", "6x1o + 2x0e", "5x1o + 3x0e"},
      // An l = 3 path: the plan stays on mma.sync.
      {"32x0e + 32x1o + 32x3e", "32x0e + 32x3e", "32x0e + 32x1o + 32x3e + 64x2e"},
  };
  for (const auto& irreps : cases) {
    auto plan = TensorProductPlan::FullyConnected(irreps[0], irreps[1], irreps[2]);
    ASSERT_TRUE(plan.ok()) << plan.status();
    for (int64_t batch : {1, 7, 64, 1000}) CheckWeightGrad(*plan, batch);
  }
}

// Every pass of the seed shape (forward, backward, losses) with the wgmma weight gradient.
TEST_F(WgmmaWeightGradTest, AllPasses_MatchCpuReference_OnSeedShape) {
  auto plan = TensorProductPlan::FullyConnected("128x0e+128x1e+128x2e", "128x0e+128x1e+128x2e",
                                                "128x0e+128x1e+128x2e");
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (Precision precision : kAllPrecisions) CheckPlan(*plan, 64, precision, wgmma_.get());
}

// Small enough for compute-sanitizer (memcheck, racecheck): every (T, R) of l <= 2, one and several
// chunks per block, a split batch; then every precision of both wgmma kernels on a factored plan.
TEST_F(WgmmaWeightGradTest, SmallPlan_MatchesCpuReference) {
  auto plan = TensorProductPlan::FullyConnected("16x0e + 8x1e + 8x2e", "8x0e + 16x1e + 8x2e", "8x0e + 8x1e + 8x2e");
  ASSERT_TRUE(plan.ok()) << plan.status();
  CheckPlan(*plan, 37, Precision::kFp32, wgmma_.get());
  CheckWeightGrad(*plan, 70);
  // Multiplicities of 32: the forward's factored paths too (on wgmma on an sm_90 device), every precision.
  auto factored = TensorProductPlan::FullyConnected("32x0e + 32x1e + 32x2e", "32x0e + 32x1e + 32x2e",
                                                    "32x0e + 32x1e + 32x2e");
  ASSERT_TRUE(factored.ok()) << factored.status();
  for (Precision precision : kAllPrecisions) CheckPlan(*factored, 37, precision, wgmma_.get());
}

// The factored forward (tp_forward_factored.cu) against the GEMM forward (tp_gemm.cu) on the seed
// shape: batch sizes across its tile edges up to the server's largest batch, then two host threads
// on their own streams sharing one prepared plan with changing batch sizes (as the server's workers
// do), every result checked.
TEST_F(CudaBackendTest, FactoredForward_MatchesGemmForward_AcrossBatchesAndConcurrentStreams) {
  auto plan = TensorProductPlan::FullyConnected("128x0e+128x1e+128x2e", "128x0e+128x1e+128x2e",
                                                "128x0e+128x1e+128x2e");
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto factored = cuda_->Prepare(*plan);
  ASSERT_TRUE(factored.ok()) << factored.status();
  std::vector<std::unique_ptr<Backend>> option_backends;  // outlive the plans prepared on them
  // Each kernel choice is a backend option: one backend per choice, all on device 0 (they share
  // the device's memory, so every plan reads the same tensors).
  using ForwardKernel = CudaBackendOptions::ForwardKernel;
  auto prepare_with = [&](ForwardKernel kernel, int warp_cols) -> absl::StatusOr<std::unique_ptr<PreparedPlan>> {
    CudaBackendOptions options;
    options.forward_kernel = kernel;
    options.factored_warp_cols = warp_cols;
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CudaBackend::Create(0, options));
    ASSIGN_OR_RETURN(std::unique_ptr<PreparedPlan> prepared, backend->Prepare(*plan));
    option_backends.push_back(std::move(backend));
    return prepared;
  };
  auto gemm = prepare_with(ForwardKernel::kGemm, 32);
  auto three_tf32 = prepare_with(ForwardKernel::kFactored3xTf32, 32);
  // The mma.sync kernel (the default is the wgmma kernel on an sm_90 device), both warp layouts.
  auto mma = prepare_with(ForwardKernel::kFactoredMma, 32);
  auto narrow = prepare_with(ForwardKernel::kFactoredMma, 16);  // the 16-column warp layout
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  ASSERT_TRUE(three_tf32.ok()) << three_tf32.status();
  ASSERT_TRUE(mma.ok()) << mma.status();
  ASSERT_TRUE(narrow.ok()) << narrow.status();

  constexpr int64_t kMaxBatch = 4096;
  uint64_t seed = 0;
  std::mt19937_64 rng = FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  const std::vector<int64_t> w_shape = {plan->weight_numel()};
  DeviceTensor w(cuda_.get(), w_shape), x1(cuda_.get(), {kMaxBatch, plan->dim_in1()}),
      x2(cuda_.get(), {kMaxBatch, plan->dim_in2()});
  w.Upload(RandomNormal(plan->weight_numel(), rng));
  x1.Upload(RandomNormal(kMaxBatch * plan->dim_in1(), rng));
  x2.Upload(RandomNormal(kMaxBatch * plan->dim_in2(), rng));
  auto run = [&](const PreparedPlan& prepared, int64_t batch, Precision precision, void* stream,
                 DeviceTensor& out) -> absl::Status {
    ExecutionContext ctx;
    ctx.precision = precision;
    ctx.stream = stream;
    const float* x1p = static_cast<const float*>(x1.cview().data);
    const float* x2p = static_cast<const float*>(x2.cview().data);
    ConstTensorView x1v{x1p, DType::kFloat32, {batch, plan->dim_in1()}};
    ConstTensorView x2v{x2p, DType::kFloat32, {batch, plan->dim_in2()}};
    TensorView outv{out.view().data, DType::kFloat32, {batch, plan->dim_out()}};
    return cuda_->Forward(prepared, w.cview(), x1v, x2v, outv, ctx);
  };
  auto prefix = [&](std::vector<double> v, int64_t batch) {
    v.resize(batch * plan->dim_out());
    return v;
  };

  DeviceTensor out_f(cuda_.get(), {kMaxBatch, plan->dim_out()}), out_g(cuda_.get(), {kMaxBatch, plan->dim_out()});
  // bf16 runs the factored kernel only on wgmma (the mma.sync variants run it in the GEMM kernel).
  for (Precision precision : {Precision::kFp32, Precision::kTf32, Precision::kBf16}) {
    const double bound = precision == Precision::kFp32 ? 2e-5 : precision == Precision::kTf32 ? 2e-3 : 2e-2;
    for (int64_t batch : std::vector<int64_t>{1, 31, 33, 64, 100, 640, 1000, kMaxBatch}) {
      SCOPED_TRACE(absl::StrCat(PrecisionName(precision), " batch ", batch));
      out_f.Poison();
      out_g.Poison();
      ASSERT_TRUE(run(**factored, batch, precision, nullptr, out_f).ok());
      ASSERT_TRUE(run(**gemm, batch, Precision::kFp32, nullptr, out_g).ok());
      const double error = RelativeError(prefix(out_f.Download(), batch), prefix(out_g.Download(), batch));
      EXPECT_LE(error, bound);
      // bf16 keeps 8 mantissa bits against tf32's 11: about 3x tf32's error (4-5e-4), a check
      // that the bf16 operands are really in use.
      if (precision == Precision::kBf16 && batch >= 64) EXPECT_GT(error, 8e-4);
      for (const auto* other : {&mma, &narrow}) {  // the mma.sync kernel, 32- and 16-column warps
        out_f.Poison();
        ASSERT_TRUE(run(***other, batch, precision, nullptr, out_f).ok());
        EXPECT_LE(RelativeError(prefix(out_f.Download(), batch), prefix(out_g.Download(), batch)), bound)
            << (other == &mma ? "mma.sync, 32-column warps" : "mma.sync, 16-column warps");
      }
      if (precision == Precision::kFp32) {  // the three-TF32 variant of the factored kernel too
        out_f.Poison();
        ASSERT_TRUE(run(**three_tf32, batch, precision, nullptr, out_f).ok());
        EXPECT_LE(RelativeError(prefix(out_f.Download(), batch), prefix(out_g.Download(), batch)), 2e-5);
      }
    }
  }

  // Concurrent streams, one prepared plan, batch sizes drawn per call: fresh work lists, reused ones,
  // and more sizes than the plan's cache keeps (256 lists), so it drops lists while the other thread
  // may be launching with them.
  constexpr int kThreads = 2, kCalls = 200;
  std::vector<std::unique_ptr<DeviceTensor>> outs;
  std::vector<cudaStream_t> streams(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_EQ(cudaStreamCreateWithFlags(&streams[i], cudaStreamNonBlocking), cudaSuccess);
    outs.push_back(std::make_unique<DeviceTensor>(cuda_.get(), std::vector<int64_t>{kMaxBatch, plan->dim_out()}));
  }
  std::vector<int64_t> last_batch(kThreads);
  std::vector<absl::Status> status(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i, thread_seed = rng()] {
      std::mt19937_64 local(thread_seed);
      for (int c = 0; c < kCalls && status[i].ok(); ++c) {
        const int64_t batch = 1 + static_cast<int64_t>(local() % 1024);
        status[i] = run(**factored, batch, c % 2 ? Precision::kTf32 : Precision::kFp32, streams[i], *outs[i]);
        last_batch[i] = batch;
      }
      if (status[i].ok() && cudaStreamSynchronize(streams[i]) != cudaSuccess) {
        status[i] = absl::InternalError("stream failed");
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_TRUE(status[i].ok()) << "thread " << i << ": " << status[i];
    // The last call was tf32 (kCalls even): check it against the fp32 GEMM forward.
    out_g.Poison();
    ASSERT_TRUE(run(**gemm, last_batch[i], Precision::kFp32, nullptr, out_g).ok());
    EXPECT_LE(RelativeError(prefix(outs[i]->Download(), last_batch[i]), prefix(out_g.Download(), last_batch[i])),
              2e-3)
        << "thread " << i << ", batch " << last_batch[i];
    cudaStreamDestroy(streams[i]);
  }
}

// Pinned host buffers: the worker's staging. A round trip through the device with asynchronous
// copies on the context's stream returns every value (the destination starts poisoned).
TEST_F(CudaBackendTest, AllocateHost_PinnedRoundTripThroughTheDevice) {
  uint64_t seed = 0;
  std::mt19937_64 rng = FreshRng(&seed);
  const std::vector<double> values = RandomNormal(300001, rng);
  const size_t bytes = values.size() * sizeof(float);
  auto source = cuda_->AllocateHost(bytes);
  auto back = cuda_->AllocateHost(bytes);
  auto device = cuda_->Allocate(bytes);
  ASSERT_TRUE(source.ok() && back.ok() && device.ok()) << source.status() << back.status() << device.status();
  EXPECT_EQ((*source)->bytes(), bytes);
  float* src = static_cast<float*>((*source)->data());
  float* dst = static_cast<float*>((*back)->data());
  for (size_t i = 0; i < values.size(); ++i) {
    src[i] = static_cast<float>(values[i]);
    dst[i] = std::numeric_limits<float>::quiet_NaN();
  }
  const ExecutionContext ctx;
  ASSERT_TRUE(cuda_->CopyFromHost((*device)->data(), src, bytes, ctx).ok());
  ASSERT_TRUE(cuda_->CopyToHost(dst, (*device)->data(), bytes, ctx).ok());
  ASSERT_TRUE(cuda_->Synchronize(ctx).ok());
  EXPECT_EQ(std::memcmp(src, dst, bytes), 0) << "seed " << seed;
}

TEST_F(CudaBackendTest, Float64_IsUnimplemented) {
  EXPECT_FALSE(cuda_->SupportsDType(DType::kFloat64));
  auto plan = TensorProductPlan::FullyConnected("2x0e", "2x0e", "2x0e");
  ASSERT_TRUE(plan.ok());
  auto prepared = cuda_->Prepare(*plan);
  ASSERT_TRUE(prepared.ok());
  DeviceTensor buf(cuda_.get(), {64});
  ConstTensorView w{buf.view().data, DType::kFloat64, {8}}, x{buf.view().data, DType::kFloat64, {1, 2}};
  TensorView out{buf.view().data, DType::kFloat64, {1, 2}};
  const absl::Status status = cuda_->Forward(**prepared, w, x, x, out, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
}

TEST_F(CudaBackendTest, PerSampleUvu_MatchCpuReference_OnQm9EdgeShapes_Mul8) {
  // Below 1024 samples the kernels split each sample's segments over several blocks; 1100 does not.
  for (int lmax : {1, 2}) {
    const TensorProductPlan plan = Qm9EdgePlan(lmax, 8);
    for (int64_t edges : {1, 7, 950, 1100}) CheckPlan(plan, edges, Precision::kFp32);
  }
}

TEST_F(CudaBackendTest, PerSampleUvu_MatchCpuReference_OnQm9EdgeShapes_Mul128) {
  for (int lmax : {1, 2}) {
    const TensorProductPlan plan = Qm9EdgePlan(lmax, 128);
    for (int64_t edges : {1, 7, 950}) CheckPlan(plan, edges, Precision::kFp32);
  }
}

// The per-sample kernels are fp32 for every precision: tf32 and bf16 requests give the fp32 result
// bit for bit (and so pass at the fp32 bound).
TEST_F(CudaBackendTest, PerSampleUvu_Tf32AndBf16RunTheFp32Kernels) {
  const TensorProductPlan plan = Qm9EdgePlan(2, 8);
  for (Precision precision : {Precision::kTf32, Precision::kBf16}) CheckPlan(plan, 33, precision);
  uint64_t seed = 0;
  std::mt19937_64 rng = FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  const int64_t batch = 65;
  auto prepared = cuda_->Prepare(plan);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  DeviceTensor w(cuda_.get(), WeightShape(plan, batch)), x1(cuda_.get(), {batch, plan.dim_in1()}),
      x2(cuda_.get(), {batch, plan.dim_in2()}), out(cuda_.get(), {batch, plan.dim_out()});
  w.Upload(RandomNormal(batch * plan.weight_numel(), rng));
  x1.Upload(RandomNormal(batch * plan.dim_in1(), rng));
  x2.Upload(RandomNormal(batch * plan.dim_in2(), rng));
  std::vector<double> results[3];
  for (Precision precision : kAllPrecisions) {
    ExecutionContext ctx;
    ctx.precision = precision;
    out.Poison();
    ASSERT_TRUE(cuda_->Forward(**prepared, w.cview(), x1.cview(), x2.cview(), out.view(), ctx).ok());
    results[static_cast<int>(precision)] = out.Download();
  }
  EXPECT_EQ(results[1], results[0]);
  EXPECT_EQ(results[2], results[0]);
}

// 'uvu' and 'uvw' paths in one plan, several paths writing one output irrep, with shared and with
// per-sample weights (the shared-weight 'uvu' plan sums dW over the batch with atomics).
TEST_F(CudaBackendTest, UvuAndUvwMixed_SharedAndPerSample_MatchCpuReference) {
  const Irreps in1 = *Irreps::Parse("3x0e + 2x1o + 2x2e"), in2 = *Irreps::Parse("2x0e + 1x1o + 2x2e"),
               out = *Irreps::Parse("3x0e + 2x1o + 2x2e + 2x1e + 3x0o");
  const std::vector<InstructionSpec> uvu_only = {
      {0, 0, 0, ConnectionMode::kUvu}, {1, 0, 1, ConnectionMode::kUvu}, {2, 1, 1, ConnectionMode::kUvu},
      {1, 1, 3, ConnectionMode::kUvu}, {2, 2, 2, ConnectionMode::kUvu}, {1, 2, 1, ConnectionMode::kUvu},
      {2, 0, 2, ConnectionMode::kUvu}, {1, 1, 2, ConnectionMode::kUvu}, {2, 2, 3, ConnectionMode::kUvu}};
  std::vector<InstructionSpec> mixed = uvu_only;
  mixed.push_back({0, 0, 0, ConnectionMode::kUvw});
  mixed.push_back({1, 1, 0, ConnectionMode::kUvw});
  mixed.push_back({2, 2, 3, ConnectionMode::kUvw});
  const std::vector<InstructionSpec>* const variants[] = {&uvu_only, &mixed};
  for (const std::vector<InstructionSpec>* instructions : variants) {
    for (WeightSharing sharing : {WeightSharing::kShared, WeightSharing::kPerSample}) {
      TensorProductOptions options;
      options.weight_sharing = sharing;
      auto plan = TensorProductPlan::FromInstructions(in1, in2, out, *instructions, options);
      ASSERT_TRUE(plan.ok()) << plan.status();
      for (int64_t batch : {1, 7, 77}) CheckPlan(*plan, batch, Precision::kFp32);
    }
  }
}

// uvw paths with per-sample weights (every instruction of a fully connected product).
TEST_F(CudaBackendTest, PerSampleUvw_MatchCpuReference) {
  TensorProductOptions options;
  options.weight_sharing = WeightSharing::kPerSample;
  auto plan = TensorProductPlan::FullyConnected("5x0e + 3x1o + 2x2e", "2x0e + 1x1o + 1x2e", "4x0e + 3x1o + 2x2e + 1x1e",
                                                options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (int64_t batch : {1, 7, 130}) CheckPlan(*plan, batch, Precision::kFp32);
}

// Edge convolutions (EdgeForward / EdgeBackward): the fused gather / scatter kernels against the CPU
// backend's float64 host default, on random graphs (repeated sources and destinations).
class CudaEdgeTest : public CudaBackendTest {
 protected:
  std::unique_ptr<BackendBuffer> UploadIndices(const std::vector<int32_t>& v) {
    auto buffer = cuda_->Allocate(sizeof(int32_t) * std::max<size_t>(v.size(), 1));
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    EXPECT_TRUE(cuda_->CopyFromHost((*buffer)->data(), v.data(), v.size() * sizeof(int32_t), {}).ok());
    return std::move(buffer).value();
  }

  void CheckEdges(const TensorProductPlan& plan, int64_t nodes, int64_t edges) {
    uint64_t seed = 0;
    std::mt19937_64 rng = FreshRng(&seed);
    SCOPED_TRACE(absl::StrFormat("plan %s, %d nodes, %d edges, seed %d", plan.irreps_in1().ToString(), nodes, edges,
                                 seed));
    std::vector<int32_t> src(edges), dst(edges);
    for (int64_t e = 0; e < edges; ++e) {
      src[e] = static_cast<int32_t>(rng() % nodes);
      dst[e] = static_cast<int32_t>(rng() % nodes);
    }
    const std::vector<int64_t> w_shape = WeightShape(plan, edges), x1_shape = {nodes, plan.dim_in1()},
                               x2_shape = {edges, plan.dim_in2()}, out_shape = {nodes, plan.dim_out()};
    const std::vector<double> w = RoundToFloat(RandomNormal(edges * plan.weight_numel(), rng)),
                              x1 = RoundToFloat(RandomNormal(nodes * plan.dim_in1(), rng)),
                              x2 = RoundToFloat(RandomNormal(edges * plan.dim_in2(), rng)),
                              g = RoundToFloat(RandomNormal(nodes * plan.dim_out(), rng));
    CpuBackend cpu;
    auto cpu_plan = cpu.Prepare(plan);
    ASSERT_TRUE(cpu_plan.ok());
    const EdgeIndex host_edges{src.data(), dst.data(), edges};
    std::vector<double> ref_out(nodes * plan.dim_out()), ref_dw(w.size()), ref_dx1(x1.size()), ref_dx2(x2.size());
    ASSERT_TRUE(cpu.EdgeForward(**cpu_plan, HostCView(w, w_shape), HostCView(x1, x1_shape), HostCView(x2, x2_shape),
                                host_edges, HostView(ref_out, out_shape), {})
                    .ok());
    ASSERT_TRUE(cpu.EdgeBackward(**cpu_plan, HostCView(w, w_shape), HostCView(x1, x1_shape), HostCView(x2, x2_shape),
                                 host_edges, HostCView(g, out_shape),
                                 {HostView(ref_dw, w_shape), HostView(ref_dx1, x1_shape), HostView(ref_dx2, x2_shape)},
                                 {})
                    .ok());

    auto prepared = cuda_->Prepare(plan);
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    auto d_src = UploadIndices(src), d_dst = UploadIndices(dst);
    const EdgeIndex d_edges{static_cast<const int32_t*>(d_src->data()), static_cast<const int32_t*>(d_dst->data()),
                            edges};
    DeviceTensor d_w(cuda_.get(), w_shape), d_x1(cuda_.get(), x1_shape), d_x2(cuda_.get(), x2_shape),
        d_g(cuda_.get(), out_shape), d_out(cuda_.get(), out_shape), d_dw(cuda_.get(), w_shape),
        d_dx1(cuda_.get(), x1_shape), d_dx2(cuda_.get(), x2_shape);
    d_w.Upload(w);
    d_x1.Upload(x1);
    d_x2.Upload(x2);
    d_g.Upload(g);
    d_out.Poison();
    ASSERT_TRUE(cuda_->EdgeForward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_edges, d_out.view(), {}).ok());
    EXPECT_LE(RelativeError(d_out.Download(), ref_out), 1e-5) << "edge forward";
    d_dw.Poison();
    d_dx1.Poison();
    d_dx2.Poison();
    ASSERT_TRUE(cuda_->EdgeBackward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_edges, d_g.cview(),
                                    GradientOutputs{d_dw.view(), d_dx1.view(), d_dx2.view()}, {})
                    .ok());
    EXPECT_LE(RelativeError(d_dw.Download(), ref_dw), 1e-5) << "edge grad_weight";
    EXPECT_LE(RelativeError(d_dx1.Download(), ref_dx1), 1e-5) << "edge grad_x1";
    EXPECT_LE(RelativeError(d_dx2.Download(), ref_dx2), 1e-5) << "edge grad_x2";
    // grad_x1 alone, then grad_weight accumulated onto itself (doubles it).
    d_dx1.Poison();
    ASSERT_TRUE(cuda_->EdgeBackward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_edges, d_g.cview(),
                                    GradientOutputs{{}, d_dx1.view(), {}}, {})
                    .ok());
    EXPECT_LE(RelativeError(d_dx1.Download(), ref_dx1), 1e-5) << "edge grad_x1 alone";
    GradientOutputs acc{d_dw.view(), {}, {}};
    acc.accumulate_grad_weight = true;
    ASSERT_TRUE(
        cuda_->EdgeBackward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), d_edges, d_g.cview(), acc, {}).ok());
    std::vector<double> twice = ref_dw;
    for (double& v : twice) v *= 2;
    EXPECT_LE(RelativeError(d_dw.Download(), twice), 1e-5) << "edge grad_weight accumulated";
  }
};

TEST_F(CudaEdgeTest, EdgeGather_FusedMatchesCpuEdgeReference) {
  for (int lmax : {1, 2}) {
    for (int mul : {8, 128}) {
      const TensorProductPlan plan = Qm9EdgePlan(lmax, mul);
      CheckEdges(plan, 486, 950);
      CheckEdges(plan, 3, 7);
      CheckEdges(plan, 2, 1);
    }
  }
}

TEST_F(CudaEdgeTest, EdgeGather_SharedWeightUvwPlanIsUnimplemented) {
  auto plan = TensorProductPlan::FullyConnected("2x0e", "2x0e", "2x0e");
  ASSERT_TRUE(plan.ok());
  auto prepared = cuda_->Prepare(*plan);
  ASSERT_TRUE(prepared.ok());
  DeviceTensor w(cuda_.get(), {8}), x(cuda_.get(), {3, 2}), out(cuda_.get(), {3, 2});
  auto index = UploadIndices({0, 1, 2});
  const EdgeIndex edges{static_cast<const int32_t*>(index->data()), static_cast<const int32_t*>(index->data()), 3};
  const absl::Status status = cuda_->EdgeForward(**prepared, w.cview(), x.cview(), x.cview(), edges, out.view(), {});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
}

TEST_F(CudaBackendTest, WrongShape_IsInvalidArgument) {
  auto plan = TensorProductPlan::FullyConnected("2x0e", "2x0e", "2x0e");
  ASSERT_TRUE(plan.ok());
  auto prepared = cuda_->Prepare(*plan);
  ASSERT_TRUE(prepared.ok());
  DeviceTensor w(cuda_.get(), {8}), x(cuda_.get(), {3, 2}), out(cuda_.get(), {3, 3});
  const absl::Status status = cuda_->Forward(**prepared, w.cview(), x.cview(), x.cview(), out.view(), {});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

}  // namespace
}  // namespace tpserve
