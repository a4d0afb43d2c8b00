// CPU baseline of the seed task with Google Benchmark:
//   TP = FullyConnectedTensorProduct(128x0e+128x1e+128x2e, same, same), 15 paths, 31,457,280 weights
//   BM_Forward:     out = TP(w, x1, x2)                      2 * 64 * 51 * 16384 * 128 = 13.7 GFLOP
//   BM_SumTanhGrad: d/dw sum tanh TP(w, x1, x2), forward included                      27.4 GFLOP
// Before timing, the float32 result is checked against the float64 one on the same inputs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/cpu_backend.h"

namespace tpserve {
namespace {

constexpr char kSeedIrreps[] = "128x0e + 128x1e + 128x2e";

struct SeedTask {
  TensorProductPlan plan;
  int64_t batch;
  std::vector<float> weight, x1, x2, out, grad_weight;
};

SeedTask MakeSeedTask(int64_t batch) {
  SeedTask task{*TensorProductPlan::FullyConnected(kSeedIrreps, kSeedIrreps, kSeedIrreps), batch, {}, {}, {}, {}, {}};
  std::mt19937_64 rng(std::random_device{}());
  std::normal_distribution<float> normal;
  auto fill = [&](std::vector<float>& v, int64_t n) {
    v.resize(n);
    for (float& x : v) x = normal(rng);
  };
  fill(task.weight, task.plan.weight_numel());
  fill(task.x1, batch * task.plan.dim_in1());
  fill(task.x2, batch * task.plan.dim_in2());
  task.out.assign(batch * task.plan.dim_out(), NAN);
  task.grad_weight.assign(task.plan.weight_numel(), NAN);
  return task;
}

// float32 vs float64 forward on the same inputs: ||f32 - f64|| / ||f64||.
double CheckForward(CpuBackend& backend, const PreparedPlan& prepared, SeedTask& t) {
  auto to_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  std::vector<double> w = to_double(t.weight), x1 = to_double(t.x1), x2 = to_double(t.x2);
  std::vector<double> ref(t.out.size(), NAN);
  const int64_t b = t.batch;
  const auto& p = t.plan;
  ExecutionContext ctx;
  if (!backend.Forward(prepared, {w.data(), DType::kFloat64, {p.weight_numel()}}, {x1.data(), DType::kFloat64, {b, p.dim_in1()}},
                       {x2.data(), DType::kFloat64, {b, p.dim_in2()}}, {ref.data(), DType::kFloat64, {b, p.dim_out()}}, ctx)
           .ok() ||
      !backend.Forward(prepared, {t.weight.data(), DType::kFloat32, {p.weight_numel()}},
                       {t.x1.data(), DType::kFloat32, {b, p.dim_in1()}}, {t.x2.data(), DType::kFloat32, {b, p.dim_in2()}},
                       {t.out.data(), DType::kFloat32, {b, p.dim_out()}}, ctx)
           .ok()) {
    return INFINITY;
  }
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += (t.out[i] - ref[i]) * (t.out[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff / norm);
}

// Verifies, then times forward (gradient = false) or d/dw sum tanh TP (gradient = true).
void RunSeedTask(benchmark::State& state, bool gradient) {
  CpuBackend backend;
  SeedTask t = MakeSeedTask(state.range(0));
  auto prepared = *backend.Prepare(t.plan);
  const double error = CheckForward(backend, *prepared, t);
  if (!(error < 1e-5)) {
    state.SkipWithError("float32 forward does not match float64");
    return;
  }
  const auto& p = t.plan;
  const ConstTensorView weight{t.weight.data(), DType::kFloat32, {p.weight_numel()}};
  const ConstTensorView x1{t.x1.data(), DType::kFloat32, {t.batch, p.dim_in1()}};
  const ConstTensorView x2{t.x2.data(), DType::kFloat32, {t.batch, p.dim_in2()}};
  const TensorView out{t.out.data(), DType::kFloat32, {t.batch, p.dim_out()}};
  GradientOutputs grads;
  grads.grad_weight = {t.grad_weight.data(), DType::kFloat32, {p.weight_numel()}};
  for (auto _ : state) {
    auto status = gradient ? backend.LossGradient(*prepared, Loss::kSumTanh, weight, x1, x2, {}, grads, {})
                           : backend.Forward(*prepared, weight, x1, x2, out, {});
    if (!status.ok()) state.SkipWithError(std::string(status.message()).c_str());
    benchmark::DoNotOptimize(gradient ? t.grad_weight.data() : t.out.data());
  }
  state.counters["rel_err_vs_fp64"] = error;
  state.counters["FLOP/s"] = benchmark::Counter((gradient ? 2 : 1) * p.ForwardFlops(t.batch),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Forward(benchmark::State& state) { RunSeedTask(state, /*gradient=*/false); }
void BM_SumTanhGrad(benchmark::State& state) { RunSeedTask(state, /*gradient=*/true); }

double Min(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

BENCHMARK(BM_Forward)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0)->ComputeStatistics("min", Min);
BENCHMARK(BM_SumTanhGrad)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0)->ComputeStatistics("min", Min);

}  // namespace
}  // namespace tpserve

BENCHMARK_MAIN();
