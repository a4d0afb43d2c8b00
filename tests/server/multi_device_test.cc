// Several devices in one inference core (issue 23), with CPU backends standing in for GPUs:
// least-loaded dispatch over devices, the gradient accumulated per device and summed on one
// device (directly, or staged through the host), SGD steps reaching every replica, one host copy
// of the weights for N devices, and copies between backends.
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/core/inference_core.h"
#include "tests/support/fault_injecting_backend.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"

namespace tpserve::server {
namespace {

using ::tpserve::testing::FakeDevice;
using ::tpserve::testing::FaultInjectingBackend;
using ::tpserve::testing::RelativeError;

// Launches and gradient copies per device, as the metrics module records them.
class DeviceObserver : public CoreObserver {
 public:
  void OnBatch(const std::string&, const std::string& device, int64_t, int requests, double) override {
    std::lock_guard<std::mutex> lock(mu);
    requests_by_device[device] += requests;
  }
  void OnGradientCopy(const std::string& from, const std::string& to, const char* path) override {
    std::lock_guard<std::mutex> lock(mu);
    copies.push_back(from + "->" + to + ":" + path);
  }
  std::map<std::string, int> Requests() {
    std::lock_guard<std::mutex> lock(mu);
    return requests_by_device;
  }
  std::vector<std::string> Copies() {
    std::lock_guard<std::mutex> lock(mu);
    return copies;
  }
  std::mutex mu;
  std::map<std::string, int> requests_by_device;
  std::vector<std::string> copies;
};

// Devices "gpu:0", "gpu:1", ... (FakeDevice each), `workers_per_device` workers on each, holding
// the reference case's model "m". No two requests merge (max_batch_size = the case's batch), so
// each request is one launch.
struct Devices {
  Devices(int devices, int workers_per_device, int launch_delay_ms, bool direct_copies = false) {
    auto loaded = testing::LoadReferenceCase("ref_mixed_parity.json");
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    c = *loaded;
    std::vector<std::unique_ptr<Backend>> backends;
    for (int d = 0; d < devices; ++d) {
      fakes.push_back(std::make_shared<FakeDevice>());
      fakes.back()->launch_delay_ms = launch_delay_ms;
      fakes.back()->direct_copies = direct_copies;
      for (int w = 0; w < workers_per_device; ++w) {
        backends.push_back(std::make_unique<FaultInjectingBackend>(fakes.back(), "gpu:" + std::to_string(d)));
      }
    }
    CoreConfig config;
    config.max_batch_size = c.batch;
    core = *InferenceCore::Create(config, std::move(backends), &observer);
    EXPECT_TRUE(core->CreateModel("m", {c.irreps_in1, c.irreps_in2, c.irreps_out},
                                  std::vector<float>(c.weight.begin(), c.weight.end()), 0)
                    .ok());
  }
  InferenceRequest Forward() const {
    InferenceRequest r;
    r.model = "m";
    r.x1 = HostTensor({c.batch, static_cast<int64_t>(c.x1.size()) / c.batch}, std::vector<float>(c.x1.begin(), c.x1.end()));
    r.x2 = HostTensor({c.batch, static_cast<int64_t>(c.x2.size()) / c.batch}, std::vector<float>(c.x2.begin(), c.x2.end()));
    return r;
  }
  InferenceRequest AccumulateSumTanh() const {
    InferenceRequest r = Forward();
    r.op = Op::kBackward;
    r.loss = Loss::kSumTanh;
    r.weight_grad = WeightGradMode::kAccumulate;
    return r;
  }
  // Submits `requests` at once from this thread (queued, not run here) and waits for all; the
  // device of each, "" where it failed (with the failure added).
  std::vector<std::string> SubmitAll(std::vector<InferenceRequest> requests) {
    std::vector<std::promise<absl::StatusOr<InferenceResult>>> promises(requests.size());
    for (size_t i = 0; i < requests.size(); ++i) {
      core->Submit(std::move(requests[i]), [&promises, i](absl::StatusOr<InferenceResult> r) {
        promises[i].set_value(std::move(r));
      });
    }
    std::vector<std::string> devices;
    for (auto& p : promises) {
      absl::StatusOr<InferenceResult> r = p.get_future().get();
      if (!r.ok()) ADD_FAILURE() << r.status();
      devices.push_back(r.ok() ? r->device : "");
    }
    return devices;
  }
  void WaitUntilIdle() {
    for (int i = 0; i < 5000; ++i) {
      bool idle = true;
      for (const auto& [device, load] : core->DeviceLoads()) idle = idle && load == 0;
      if (idle) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ADD_FAILURE() << "the devices never became idle";
  }
  // `threads` clients, each running `calls` forwards one after the other (queued dispatch).
  void ClosedLoop(int threads, int calls) {
    std::vector<std::thread> clients;
    for (int t = 0; t < threads; ++t) {
      clients.emplace_back([&] {
        for (int i = 0; i < calls; ++i) {
          absl::StatusOr<InferenceResult> r = core->Run(Forward());
          if (!r.ok()) ADD_FAILURE() << r.status();
        }
      });
    }
    for (auto& client : clients) client.join();
  }
  testing::ReferenceCase c;
  std::vector<std::shared_ptr<FakeDevice>> fakes;
  DeviceObserver observer;
  std::unique_ptr<InferenceCore> core;
};

// Two devices with two workers each (as --workers_per_gpu 2 on two GPUs): two requests in flight
// at once run on the two devices, never on the two workers of one device while the other idles.
TEST(MultiDeviceTest, Dispatch_TwoRequestsInFlight_RunOnBothDevices) {
  Devices d(/*devices=*/2, /*workers_per_device=*/2, /*launch_delay_ms=*/60);
  for (int round = 0; round < 10; ++round) {
    // The last round's workers answer before they count their launch done: wait until both
    // devices are idle when the pair arrives.
    d.WaitUntilIdle();
    std::vector<std::string> devices = d.SubmitAll({d.Forward(), d.Forward()});
    ASSERT_EQ(devices.size(), 2u);
    EXPECT_NE(devices[0], devices[1]) << "round " << round << ": both on " << devices[0] << " while the other idled";
  }
}

// A caller's thread that may run its request itself (a unary call, greedy batching) claims a
// worker of the idle device, not the idle second worker of the busy one.
TEST(MultiDeviceTest, Dispatch_OnTheCallersThread_PicksTheIdleDevice) {
  Devices d(2, 2, 0);
  d.fakes[0]->launch_delay_ms = d.fakes[1]->launch_delay_ms = 300;
  for (int round = 0; round < 3; ++round) {
    d.WaitUntilIdle();
    std::promise<absl::StatusOr<InferenceResult>> busy;
    d.core->Submit(d.Forward(), [&](absl::StatusOr<InferenceResult> r) { busy.set_value(std::move(r)); });
    // Taken by a worker, running.
    for (int i = 0; i < 2000 && d.core->DeviceLoads() == std::map<std::string, int>{{"gpu:0", 0}, {"gpu:1", 0}}; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    absl::StatusOr<InferenceResult> mine = d.core->Run(d.Forward(), InferenceCore::Dispatch::kCallerMayRun);
    absl::StatusOr<InferenceResult> other = busy.get_future().get();
    ASSERT_TRUE(mine.ok() && other.ok()) << mine.status() << " " << other.status();
    EXPECT_NE(mine->device, other->device);
  }
}

// Equal devices under concurrent load share it evenly; with one device slow, the other takes more.
TEST(MultiDeviceTest, Dispatch_EqualDevicesShareTheLoad_ASlowDeviceGetsLess) {
  {
    Devices d(2, 1, 8);
    d.ClosedLoop(/*threads=*/4, /*calls=*/15);
    std::map<std::string, int> requests = d.observer.Requests();
    ASSERT_EQ(requests.size(), 2u);
    const int a = requests["gpu:0"], b = requests["gpu:1"];
    EXPECT_EQ(a + b, 60);
    // Both are always busy and each takes the next request when it is free: close to 30 each.
    EXPECT_GE(std::min(a, b), 20) << a << " vs " << b;
  }
  {
    Devices d(2, 1, 0);
    d.fakes[0]->launch_delay_ms = 40;  // gpu:0 slow, gpu:1 5x faster
    d.fakes[1]->launch_delay_ms = 8;
    d.ClosedLoop(4, 15);
    std::map<std::string, int> requests = d.observer.Requests();
    const int slow = requests["gpu:0"], fast = requests["gpu:1"];
    EXPECT_EQ(slow + fast, 60);
    EXPECT_GT(fast, 2 * slow) << "fast " << fast << ", slow " << slow;
    EXPECT_GT(slow, 0) << "the slow device still takes work when the fast one is busy";
  }
}

// Accumulations spread over three devices: the fetched gradient is the sum (against e3nn's fp64
// gradient times the number of calls), formed on the first device from copies of the others'
// parts, directly or through the host; an SGD step applies the sum once, zeroes every part and
// updates every replica: afterwards each device computes the same output, that of the new weights.
void GradientSumAndStep(bool direct_copies) {
  Devices d(3, 1, 40, direct_copies);
  constexpr int kCalls = 9;
  std::vector<InferenceRequest> calls;
  for (int i = 0; i < kCalls; ++i) calls.push_back(d.AccumulateSumTanh());
  std::vector<std::string> devices = d.SubmitAll(std::move(calls));
  ASSERT_EQ(std::set<std::string>(devices.begin(), devices.end()).size(), 3u) << "not spread over the devices";

  absl::StatusOr<std::vector<float>> gradient = d.core->GetGradient("m");
  ASSERT_TRUE(gradient.ok()) << gradient.status();
  std::vector<double> expected(d.c.grad_weight_sum_tanh.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = kCalls * d.c.grad_weight_sum_tanh[i];
  EXPECT_LT(RelativeError({gradient->begin(), gradient->end()}, expected), 1e-5);
  const char* path = direct_copies ? ":peer" : ":host";
  EXPECT_EQ(d.observer.Copies(),
            (std::vector<std::string>{std::string("gpu:0->gpu:0") + path, std::string("gpu:1->gpu:0") + path,
                                      std::string("gpu:2->gpu:0") + path}));

  constexpr double kLr = 0.05;
  const std::vector<float> w0 = *d.core->GetWeights("m")->weights;
  ASSERT_TRUE(d.core->SgdStep("m", kLr, /*zero_gradient=*/true).ok());
  const std::vector<float> w1 = *d.core->GetWeights("m")->weights;
  std::vector<double> w1_expected(w0.size());
  for (size_t i = 0; i < w0.size(); ++i) w1_expected[i] = w0[i] - kLr * expected[i];
  EXPECT_LT(RelativeError({w1.begin(), w1.end()}, w1_expected), 1e-6);
  absl::StatusOr<std::vector<float>> zeroed = d.core->GetGradient("m");
  ASSERT_TRUE(zeroed.ok()) << zeroed.status();
  for (float g : *zeroed) ASSERT_EQ(g, 0.0f);

  // The new weights' output, computed here with the CPU backend, single-threaded like the devices.
  CpuBackend cpu(CpuBackendOptions{1});
  auto model = d.core->FindModel("m");
  ASSERT_TRUE(model.ok());
  auto prepared = cpu.Prepare((*model)->plan());
  ASSERT_TRUE(prepared.ok());
  InferenceRequest probe = d.Forward();
  std::vector<float> want(static_cast<size_t>(d.c.batch * (*model)->plan().dim_out()));
  ASSERT_TRUE(cpu.Forward(**prepared, {w1.data(), DType::kFloat32, {static_cast<int64_t>(w1.size())}},
                          {probe.x1.values(), DType::kFloat32, probe.x1.shape},
                          {probe.x2.values(), DType::kFloat32, probe.x2.shape},
                          {want.data(), DType::kFloat32, {d.c.batch, (*model)->plan().dim_out()}}, {})
                  .ok());
  std::vector<InferenceRequest> probes;
  for (int i = 0; i < 3; ++i) probes.push_back(d.Forward());
  std::vector<std::promise<absl::StatusOr<InferenceResult>>> results(probes.size());
  for (size_t i = 0; i < probes.size(); ++i) {
    d.core->Submit(std::move(probes[i]),
                   [&results, i](absl::StatusOr<InferenceResult> r) { results[i].set_value(std::move(r)); });
  }
  std::set<std::string> answered_by;
  for (auto& result : results) {
    absl::StatusOr<InferenceResult> r = result.get_future().get();
    ASSERT_TRUE(r.ok()) << r.status();
    answered_by.insert(r->device);
    EXPECT_EQ(r->model_version, 2u);
    EXPECT_EQ(std::vector<float>(r->out.values(), r->out.values() + r->out.size()), want) << r->device;
  }
  EXPECT_EQ(answered_by.size(), 3u);
}

TEST(MultiDeviceTest, Gradient_SummedOnOneDevice_DirectCopies_StepUpdatesEveryReplica) { GradientSumAndStep(true); }

TEST(MultiDeviceTest, Gradient_SummedOnOneDevice_CopiesThroughTheHost_StepUpdatesEveryReplica) {
  GradientSumAndStep(false);
}

// Creating a model on three devices reads its weights from one host buffer (the model's snapshot):
// each device copies from that same buffer once; no copy per device is made on the host.
TEST(MultiDeviceTest, CreateModel_OnThreeDevices_UploadsFromOneHostCopy) {
  Devices d(3, 1, 0);
  auto weights = d.core->GetWeights("m");
  ASSERT_TRUE(weights.ok());
  const void* host = weights->weights->data();
  const size_t bytes = weights->weights->size() * sizeof(float);
  std::set<const void*> sources;
  for (const auto& fake : d.fakes) {
    std::lock_guard<std::mutex> lock(fake->copies_mu);
    int uploads = 0;
    for (const auto& [src, n] : fake->host_copies) {
      if (n != bytes) continue;
      ++uploads;
      sources.insert(src);
    }
    EXPECT_EQ(uploads, 1) << "one upload of the weights per device";
  }
  EXPECT_EQ(sources, std::set<const void*>{host}) << "every device reads the model's own host buffer";
}

// CopyAcrossBackends: direct between host-memory backends, staged through the host otherwise;
// the bytes arrive either way.
TEST(MultiDeviceTest, CopyAcrossBackends_DirectOrStagedThroughTheHost) {
  CpuBackend a(CpuBackendOptions{1, "cpu:0"}), b(CpuBackendOptions{1, "cpu:1"});
  auto staged_device = std::make_shared<FakeDevice>();
  FaultInjectingBackend staged(staged_device, "gpu:0");
  std::vector<float> src(1000), dst(1000, 0.0f);
  for (size_t i = 0; i < src.size(); ++i) src[i] = 0.5f * static_cast<float>(i) - 7.0f;
  std::vector<char> staging;
  absl::StatusOr<CopyPath> direct = CopyAcrossBackends(a, dst.data(), {}, b, src.data(), {}, 4000, staging);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(*direct, CopyPath::kPeer);
  EXPECT_EQ(dst, src);
  EXPECT_TRUE(staging.empty());
  std::fill(dst.begin(), dst.end(), 0.0f);
  absl::StatusOr<CopyPath> via_host = CopyAcrossBackends(staged, dst.data(), {}, a, src.data(), {}, 4000, staging);
  ASSERT_TRUE(via_host.ok()) << via_host.status();
  EXPECT_EQ(*via_host, CopyPath::kHost);
  EXPECT_EQ(dst, src);
  EXPECT_GE(staging.size(), 4000u);
  // AddScaled and FillZero on the CPU backend.
  ASSERT_TRUE(a.AddScaled(dst.data(), src.data(), 1000, -2.0f, {}).ok());
  for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(dst[i], -src[i]);
  ASSERT_TRUE(a.FillZero(dst.data(), 4000, {}).ok());
  for (float v : dst) ASSERT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace tpserve::server
