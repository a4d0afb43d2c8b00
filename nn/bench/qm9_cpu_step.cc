// Times one training step (forward, backward, SGD with momentum) of the QM9 network on the CPU
// backend, after checking that the step is finite, and prints the parameter count and the FLOP
// floor (TrainingStepFlops). For the CPU baseline of issue 19; the H100 figures come from the
// CUDA benchmark.
//   qm9_cpu_step [lmax] [mul] [layers] [graphs] [steps] [fp32|fp64] [threads]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/cpu/cpu_backend.h"
#include "nn/qm9_network.h"
#include "nn/random_batch.h"
#include "nn/sgd.h"

namespace {

template <class T>
int Run(const tpserve::nn::Qm9Network& network, const tpserve::nn::GraphBatch& batch, int steps) {
  const std::vector<double> init = network.InitialParameters(1);
  std::vector<T> params(init.begin(), init.end()), velocity;
  std::vector<T> targets(static_cast<size_t>(batch.num_graphs) * network.config().num_targets, T(0));
  double best_ms = 1e300;
  for (int step = 0; step < steps; ++step) {
    const auto start = std::chrono::steady_clock::now();
    auto result = network.LossGradient(params, batch, targets);
    if (!result.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(result.status().message()).c_str());
      return 1;
    }
    tpserve::nn::SgdMomentumStep(params, velocity, result->gradient, tpserve::nn::SgdMomentumOptions{});
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    best_ms = std::min(best_ms, ms);
    std::printf("step %d: loss %.6g, %.1f ms\n", step, static_cast<double>(result->loss), ms);
    if (!std::isfinite(static_cast<double>(result->loss))) return 1;
  }
  const double flops = tpserve::nn::TrainingStepFlops(network.config(), batch.num_nodes(), batch.num_edges());
  std::printf("best %.1f ms; floor %.3g FLOP per step -> %.2f GFLOP/s\n", best_ms, flops, flops / best_ms * 1e-6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto arg = [&](int i, int fallback) { return argc > i ? std::atoi(argv[i]) : fallback; };
  tpserve::nn::Qm9NetworkConfig config;
  config.lmax = arg(1, 1);
  config.mul = arg(2, 128);
  config.layers = arg(3, 6);
  const int graphs = arg(4, 27), steps = arg(5, 3);
  const bool fp32 = argc > 6 && std::string(argv[6]) == "fp32";
  tpserve::CpuBackend backend(tpserve::CpuBackendOptions{arg(7, 0)});
  auto network = tpserve::nn::Qm9Network::Create(config, &backend);
  if (!network.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(network.status().message()).c_str());
    return 1;
  }
  std::mt19937_64 rng(27);
  const tpserve::nn::GraphBatch batch = tpserve::nn::RandomChainBatch(rng, graphs, 34);
  std::printf("lmax %d, mul %d, layers %d: %lld parameters; %d graphs, %lld nodes, %lld edges; %s\n", config.lmax,
              config.mul, config.layers, static_cast<long long>(network->num_parameters()), graphs,
              static_cast<long long>(batch.num_nodes()), static_cast<long long>(batch.num_edges()),
              fp32 ? "fp32" : "fp64");
  return fp32 ? Run<float>(*network, batch, steps) : Run<double>(*network, batch, steps);
}
