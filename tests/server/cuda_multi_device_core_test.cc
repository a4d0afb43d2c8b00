// The inference core on GPUs (issue 23): weight gradients accumulated on two devices (cuda:0 and
// cuda:1; on a one-GPU machine two workers of cuda:0) are summed on one device, against the CPU
// backend's float64 gradients of the same requests; an SGD step applies the sum and every replica
// computes with the new weights. Skips without a GPU.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "server/core/inference_core.h"
#include "tests/support/random.h"

namespace tpserve::server {
namespace {

using ::tpserve::testing::FreshRng;
using ::tpserve::testing::RandomNormal;
using ::tpserve::testing::RelativeError;

class CopyObserver : public CoreObserver {
 public:
  void OnGradientCopy(const std::string& from, const std::string& to, const char* path) override {
    std::lock_guard<std::mutex> lock(mu);
    copies.push_back(from + "->" + to + ":" + path);
  }
  std::mutex mu;
  std::vector<std::string> copies;
};

TEST(CudaMultiDeviceCoreTest, GradientSummedOverDevices_MatchesCpu_StepReachesEveryReplica) {
  const int gpus = CudaBackend::DeviceCount();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device";
  std::vector<std::unique_ptr<Backend>> backends;
  for (int i = 0; i < 2; ++i) {
    auto backend = CudaBackend::Create(gpus >= 2 ? i : 0);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backends.push_back(*std::move(backend));
  }
  constexpr int64_t kBatch = 256;
  CoreConfig config;
  config.max_batch_size = kBatch;  // one request per launch
  CopyObserver observer;
  auto core = InferenceCore::Create(config, std::move(backends), &observer);
  ASSERT_TRUE(core.ok()) << core.status();
  const std::string irreps = "32x0e + 32x1e + 32x2e";
  auto info = (*core)->CreateModel("m", ModelSpec{irreps, irreps, irreps}, std::nullopt, 5);
  ASSERT_TRUE(info.ok()) << info.status();
  auto model = (*core)->FindModel("m");
  ASSERT_TRUE(model.ok());
  const TensorProductPlan& plan = (*model)->plan();
  const std::vector<float> w0 = *(*model)->weights().weights;

  // Requests of random inputs, all submitted at once (spread over the devices).
  uint64_t seed = 0;
  std::mt19937_64 rng = FreshRng(&seed);
  constexpr int kCalls = 16;
  std::vector<std::vector<float>> x1s, x2s;
  std::vector<std::promise<absl::StatusOr<InferenceResult>>> results(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    std::vector<double> a = RandomNormal(kBatch * plan.dim_in1(), rng), b = RandomNormal(kBatch * plan.dim_in2(), rng);
    x1s.emplace_back(a.begin(), a.end());
    x2s.emplace_back(b.begin(), b.end());
  }
  for (int i = 0; i < kCalls; ++i) {
    InferenceRequest r;
    r.model = "m";
    r.op = Op::kBackward;
    r.loss = Loss::kSumTanh;
    r.weight_grad = WeightGradMode::kAccumulate;
    r.x1 = HostTensor({kBatch, plan.dim_in1()}, x1s[i]);
    r.x2 = HostTensor({kBatch, plan.dim_in2()}, x2s[i]);
    (*core)->Submit(std::move(r), [&results, i](absl::StatusOr<InferenceResult> result) {
      results[i].set_value(std::move(result));
    });
  }
  std::map<std::string, int> per_device;
  for (auto& result : results) {
    absl::StatusOr<InferenceResult> r = result.get_future().get();
    ASSERT_TRUE(r.ok()) << r.status();
    ++per_device[r->device];
  }
  for (const auto& [device, n] : per_device) std::cout << device << ": " << n << " accumulations\n";
  if (gpus >= 2) EXPECT_EQ(per_device.size(), 2u) << "both GPUs accumulated a part";

  // The CPU backend's float64 gradient of each request, summed.
  CpuBackend cpu;
  auto prepared = cpu.Prepare(plan);
  ASSERT_TRUE(prepared.ok());
  std::vector<double> w64(w0.begin(), w0.end()), want(w0.size(), 0.0), part(w0.size());
  for (int i = 0; i < kCalls; ++i) {
    std::vector<double> a(x1s[i].begin(), x1s[i].end()), b(x2s[i].begin(), x2s[i].end());
    GradientOutputs grads;
    grads.grad_weight = {part.data(), DType::kFloat64, {plan.weight_numel()}};
    ASSERT_TRUE(cpu.LossGradient(**prepared, Loss::kSumTanh, {w64.data(), DType::kFloat64, {plan.weight_numel()}},
                                 {a.data(), DType::kFloat64, {kBatch, plan.dim_in1()}},
                                 {b.data(), DType::kFloat64, {kBatch, plan.dim_in2()}}, {}, grads, {})
                    .ok());
    for (size_t k = 0; k < want.size(); ++k) want[k] += part[k];
  }
  absl::StatusOr<std::vector<float>> gradient = (*core)->GetGradient("m");
  ASSERT_TRUE(gradient.ok()) << gradient.status();
  EXPECT_LT(RelativeError({gradient->begin(), gradient->end()}, want), 2e-5) << "seed " << seed;
  {
    std::lock_guard<std::mutex> lock(observer.mu);
    for (const std::string& copy : observer.copies) std::cout << "gradient copy " << copy << "\n";
    if (gpus >= 2) {
      int can = 0;
      cudaDeviceCanAccessPeer(&can, 0, 1);
      const std::string expected = std::string("cuda:1->cuda:0:") + (can ? "peer" : "host");
      EXPECT_NE(std::find(observer.copies.begin(), observer.copies.end(), expected), observer.copies.end());
    }
  }

  constexpr double kLr = 1e-3;
  ASSERT_TRUE((*core)->SgdStep("m", kLr, /*zero_gradient=*/true).ok());
  const std::vector<float> w1 = *(*core)->GetWeights("m")->weights;
  std::vector<double> w1_want(w0.size());
  for (size_t k = 0; k < w0.size(); ++k) w1_want[k] = w0[k] - kLr * want[k];
  EXPECT_LT(RelativeError({w1.begin(), w1.end()}, w1_want), 1e-6);
  absl::StatusOr<std::vector<float>> zeroed = (*core)->GetGradient("m");
  ASSERT_TRUE(zeroed.ok());
  for (float g : *zeroed) ASSERT_EQ(g, 0.0f);

  // Forwards until both workers answered: each computes with the new weights.
  std::vector<double> x(x1s[0].begin(), x1s[0].end()), y(x2s[0].begin(), x2s[0].end());
  std::vector<double> w1_64(w1.begin(), w1.end()), out(kBatch * plan.dim_out());
  ASSERT_TRUE(cpu.Forward(**prepared, {w1_64.data(), DType::kFloat64, {plan.weight_numel()}},
                          {x.data(), DType::kFloat64, {kBatch, plan.dim_in1()}},
                          {y.data(), DType::kFloat64, {kBatch, plan.dim_in2()}},
                          {out.data(), DType::kFloat64, {kBatch, plan.dim_out()}}, {})
                  .ok());
  std::set<std::string> answered;
  for (int round = 0; round < 20 && answered.size() < per_device.size(); ++round) {
    std::vector<std::promise<absl::StatusOr<InferenceResult>>> forwards(2);
    for (int i = 0; i < 2; ++i) {
      InferenceRequest r;
      r.model = "m";
      r.x1 = HostTensor({kBatch, plan.dim_in1()}, x1s[0]);
      r.x2 = HostTensor({kBatch, plan.dim_in2()}, x2s[0]);
      (*core)->Submit(std::move(r), [&forwards, i](absl::StatusOr<InferenceResult> result) {
        forwards[i].set_value(std::move(result));
      });
    }
    for (auto& f : forwards) {
      absl::StatusOr<InferenceResult> r = f.get_future().get();
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->model_version, 2u);
      EXPECT_LT(RelativeError({r->out.values(), r->out.values() + r->out.size()}, out), 1e-5) << r->device;
      answered.insert(r->device);
    }
  }
  EXPECT_EQ(answered.size(), per_device.size());
}

}  // namespace
}  // namespace tpserve::server
