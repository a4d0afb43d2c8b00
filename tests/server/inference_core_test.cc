// The inference core without any transport: dynamic batching, admission control, deadlines,
// cancellation, shutdown, the non-finite policy and the gradient buffer.
#include "server/core/inference_core.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/support/fault_injecting_backend.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"

namespace tpserve::server {
namespace {

using ::tpserve::testing::RelativeError;

// Counts launches and samples, as the metrics module would.
class CountingObserver : public CoreObserver {
 public:
  void OnBatch(const std::string&, const std::string&, int64_t batch, int requests, double) override {
    launches += 1;
    samples += batch;
    max_requests = std::max(max_requests.load(), requests);
  }
  void OnDeviceLost(const std::string& device, const std::string&) override {
    devices_lost += 1;
    lost_device = device;
  }
  std::atomic<int> launches{0}, max_requests{0}, devices_lost{0};
  std::string lost_device;
  std::atomic<int64_t> samples{0};
};

struct Fixture {
  // `backends` empty: `workers` CPU backends.
  explicit Fixture(CoreConfig config, int workers = 1, std::vector<std::unique_ptr<Backend>> backends = {}) {
    if (backends.empty()) {
      for (int i = 0; i < workers; ++i) backends.push_back(std::make_unique<CpuBackend>(CpuBackendOptions{1}));
    }
    core = *InferenceCore::Create(config, std::move(backends), &observer);
    auto loaded = testing::LoadReferenceCase("ref_mixed_parity.json");
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    c = *loaded;
    EXPECT_TRUE(core->CreateModel("m", {c.irreps_in1, c.irreps_in2, c.irreps_out},
                                  std::vector<float>(c.weight.begin(), c.weight.end()), 0)
                    .ok());
  }
  InferenceRequest Forward() const {
    InferenceRequest r;
    r.model = "m";
    int64_t d1 = c.x1.size() / c.batch, d2 = c.x2.size() / c.batch;
    r.x1 = HostTensor({c.batch, d1}, std::vector<float>(c.x1.begin(), c.x1.end()));
    r.x2 = HostTensor({c.batch, d2}, std::vector<float>(c.x2.begin(), c.x2.end()));
    return r;
  }
  // Submits n forward requests at once and returns their statuses once all have answered.
  std::vector<absl::Status> SubmitForwards(int n) {
    std::vector<absl::Status> statuses(static_cast<size_t>(n));
    std::atomic<int> done{0};
    for (int i = 0; i < n; ++i) {
      core->Submit(Forward(), [&, i](absl::StatusOr<InferenceResult> r) {
        statuses[i] = r.status();
        ++done;
      });
    }
    while (done.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return statuses;
  }
  CountingObserver observer;
  std::unique_ptr<InferenceCore> core;
  testing::ReferenceCase c;
};

std::vector<double> D(const HostTensor& t) { return {t.values(), t.values() + t.size()}; }

// One launch for the 16 + 24 + 8 + 16 samples of the merging tests below, once all are there.
CoreConfig MergingConfig() {
  CoreConfig config;
  config.max_queue_delay_us = 10000000;
  config.max_batch_size = 64;
  return config;
}

struct MergedAndAlone {
  std::vector<InferenceResult> merged, alone;
};

// Submits every request at once, each from a thread of its own, to `f` (they must merge into one
// launch), then each alone (out_into cleared) to a fresh greedy core holding the same seeded model
// "big" of `spec`; the results in request order (empty when a call failed, with the failure added).
MergedAndAlone RunMergedAndAlone(Fixture& f, const ModelSpec& spec, const std::vector<InferenceRequest>& requests) {
  MergedAndAlone out;
  std::vector<std::future<absl::StatusOr<InferenceResult>>> pending;
  for (const auto& r : requests) {
    pending.push_back(std::async(std::launch::async, [&f, r] { return f.core->Run(r); }));
  }
  for (auto& p : pending) {
    absl::StatusOr<InferenceResult> r = p.get();
    if (!r.ok()) ADD_FAILURE() << r.status();
    out.merged.push_back(r.ok() ? *std::move(r) : InferenceResult{});
  }
  EXPECT_EQ(f.observer.max_requests.load(), static_cast<int>(requests.size())) << "the requests were not merged";
  Fixture g(CoreConfig{});
  EXPECT_TRUE(g.core->CreateModel("big", spec, std::nullopt, 1).ok());
  for (InferenceRequest plain : requests) {
    plain.out_into = nullptr;
    absl::StatusOr<InferenceResult> r = g.core->Run(plain);
    if (!r.ok()) ADD_FAILURE() << r.status();
    out.alone.push_back(r.ok() ? *std::move(r) : InferenceResult{});
  }
  return out;
}

TEST(InferenceCoreTest, ConcurrentRequestsForOneModel_MergeIntoOneLaunch) {
  CoreConfig config;
  config.max_queue_delay_us = 10000000;  // launches when the batch is full: 6 x 4 samples
  config.max_batch_size = 24;
  Fixture f(config);
  std::vector<std::future<absl::StatusOr<InferenceResult>>> results;
  for (int i = 0; i < 6; ++i) {
    results.push_back(std::async(std::launch::async, [&] { return f.core->Run(f.Forward()); }));
  }
  for (auto& result : results) {
    auto r = result.get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LT(RelativeError(D(r->out), f.c.out), 1e-5) << "merged results must be split back correctly";
  }
  EXPECT_EQ(f.observer.samples.load(), 6 * f.c.batch);
  EXPECT_EQ(f.observer.launches.load(), 1);
  EXPECT_EQ(f.observer.max_requests.load(), 6);
}

// Merged launches gather every request's rows into one staging buffer per direction and split
// the results back; requests may own their inputs or borrow them (as unary RPCs do).
TEST(InferenceCoreTest, MergedRequests_OwnedOrBorrowed_AreGatheredAndSplitCorrectly) {
  const ModelSpec spec{"32x0e + 32x1o", "32x0e + 32x1o", "16x0e + 16x1o"};
  for (Op op : {Op::kForward, Op::kBackward}) {
    SCOPED_TRACE(op == Op::kForward ? "forward" : "backward");
    Fixture f(MergingConfig());
    ASSERT_TRUE(f.core->CreateModel("big", spec, std::nullopt, 1).ok());
    std::mt19937_64 rng = testing::FreshRng();
    const std::vector<int64_t> batches = {16, 24, 8, 16};
    std::vector<std::vector<float>> kept;  // what the borrowing requests point into
    std::vector<InferenceRequest> requests(batches.size());
    for (size_t i = 0; i < batches.size(); ++i) {
      InferenceRequest& r = requests[i];
      const int64_t n = batches[i];
      r.model = "big";
      r.op = op;
      auto values = [&](int64_t count) {
        std::vector<double> d = testing::RandomNormal(count, rng);
        return std::vector<float>(d.begin(), d.end());
      };
      std::vector<float> x1 = values(n * 128), x2 = values(n * 128), g = values(n * 64);
      if (i % 2 == 1) {
        for (auto* v : {&x1, &x2, &g}) kept.push_back(*v);
        const size_t k = kept.size();
        r.x1 = HostTensor::Borrow({n, 128}, kept[k - 3].data(), kept[k - 3].size());
        r.x2 = HostTensor::Borrow({n, 128}, kept[k - 2].data(), kept[k - 2].size());
        if (op == Op::kBackward) r.grad_out = HostTensor::Borrow({n, 64}, kept[k - 1].data(), kept[k - 1].size());
      } else {
        r.x1 = HostTensor({n, 128}, x1);
        r.x2 = HostTensor({n, 128}, x2);
        if (op == Op::kBackward) r.grad_out = HostTensor({n, 64}, g);
      }
      r.want_grad_x1 = r.want_grad_x2 = op == Op::kBackward;
    }
    const MergedAndAlone run = RunMergedAndAlone(f, spec, requests);
    const std::vector<InferenceResult>& results = run.merged;
    for (size_t i = 0; i < requests.size(); ++i) {
      const InferenceResult* alone = &run.alone[i];
      EXPECT_EQ(alone->executed_batch, batches[i]);
      EXPECT_EQ(results[i].executed_batch, 64);
      if (op == Op::kForward) {
        EXPECT_EQ(results[i].out.shape, (std::vector<int64_t>{batches[i], 64}));
        EXPECT_LT(RelativeError(D(results[i].out), D(alone->out)), 1e-6) << i;
      } else {
        EXPECT_EQ(results[i].grad_x1.shape, (std::vector<int64_t>{batches[i], 128}));
        EXPECT_LT(RelativeError(D(results[i].grad_x1), D(alone->grad_x1)), 1e-6) << i;
        EXPECT_LT(RelativeError(D(results[i].grad_x2), D(alone->grad_x2)), 1e-6) << i;
      }
    }
  }
}

// Requests whose tensors lie in page-locked leases (as unary Forward's do) are copied to the device
// request by request and their results copied straight into their out_into leases; a batch with
// one ordinary request among them is gathered as before. Both must split the results right.
TEST(InferenceCoreTest, MergedRequests_InLeases_AreCopiedDirectlyAndSplitCorrectly) {
  const ModelSpec spec{"32x0e + 32x1o", "32x0e + 32x1o", "16x0e + 16x1o"};
  for (bool all_leased : {true, false}) {
    SCOPED_TRACE(all_leased ? "all leased" : "one ordinary request");
    Fixture f(MergingConfig());
    ASSERT_TRUE(f.core->CreateModel("big", spec, std::nullopt, 1).ok());
    std::mt19937_64 rng = testing::FreshRng();
    const std::vector<int64_t> batches = {16, 24, 8, 16};
    std::vector<std::unique_ptr<HostLease>> leases;
    std::vector<InferenceRequest> requests(batches.size());
    for (size_t i = 0; i < batches.size(); ++i) {
      InferenceRequest& r = requests[i];
      const int64_t n = batches[i];
      r.model = "big";
      std::vector<double> x1 = testing::RandomNormal(n * 128, rng), x2 = testing::RandomNormal(n * 128, rng);
      if (!all_leased && i == 2) {
        r.x1 = HostTensor({n, 128}, std::vector<float>(x1.begin(), x1.end()));
        r.x2 = HostTensor({n, 128}, std::vector<float>(x2.begin(), x2.end()));
      } else {
        leases.push_back(f.core->host_pool().Acquire(n * 256 * sizeof(float)));
        ASSERT_TRUE(leases.back()->pinned());
        float* in = static_cast<float*>(leases.back()->data());
        std::copy(x1.begin(), x1.end(), in);
        std::copy(x2.begin(), x2.end(), in + n * 128);
        r.x1 = HostTensor::Borrow({n, 128}, in, n * 128);
        r.x2 = HostTensor::Borrow({n, 128}, in + n * 128, n * 128);
        r.x1.pinned = r.x2.pinned = true;
      }
      leases.push_back(f.core->host_pool().Acquire(n * 64 * sizeof(float)));
      r.out_into = static_cast<float*>(leases.back()->data());
      std::fill(r.out_into, r.out_into + n * 64, NAN);  // poisoned: every value must be written
      r.out_into_size = static_cast<size_t>(n * 64);
      r.out_into_pinned = true;
    }
    const MergedAndAlone run = RunMergedAndAlone(f, spec, requests);
    const std::vector<InferenceResult>& results = run.merged;
    for (size_t i = 0; i < requests.size(); ++i) {
      const InferenceResult* alone = &run.alone[i];
      EXPECT_EQ(results[i].out.values(), requests[i].out_into) << "the result must be in its lease";
      EXPECT_EQ(results[i].out.shape, (std::vector<int64_t>{batches[i], 64}));
      EXPECT_LT(RelativeError(D(results[i].out), D(alone->out)), 1e-6) << i;
    }
  }
}

// A transport that reads its tensors' bytes itself asks the core for the call's buffers: x1 and x2
// in the workers' staging layout (so a lone call's inputs reach the device in one copy, without
// the worker guessing the layout from pointers), `out` written into the lease.
TEST(InferenceCoreTest, LeasedBuffers_ALoneCallsInputsGoOverInOneCopy_AndOutLandsInTheLease) {
  auto device = std::make_shared<testing::FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<testing::FaultInjectingBackend>(device));
  Fixture f(CoreConfig{}, 1, std::move(backends));
  ASSERT_TRUE(f.core->Run(f.Forward()).ok());  // the weights go to the device on the first launch
  const int64_t d1 = f.c.x1.size() / f.c.batch, d2 = f.c.x2.size() / f.c.batch;
  const int64_t dim_out = f.c.out.size() / f.c.batch;
  InferenceRequest request;
  request.model = "m";
  request.x1.shape = {f.c.batch, d1};
  request.x2.shape = {f.c.batch, d2};
  CallBuffers buffers;
  ASSERT_TRUE(
      f.core->LeaseBuffers(request, InferenceCore::kLeaseInputs | InferenceCore::kLeaseOut, &buffers).ok());
  EXPECT_EQ(buffers.model()->name(), "m");
  EXPECT_EQ(request.buffers, &buffers);
  EXPECT_EQ(buffers.x2() - buffers.x1(), AlignStagingRegion(f.c.batch * d1)) << "x2 where the staging puts it";
  EXPECT_EQ(request.x1.values(), buffers.x1());
  EXPECT_EQ(request.x2.values(), buffers.x2());
  ASSERT_EQ(buffers.out_floats(), static_cast<size_t>(f.c.batch * dim_out));
  std::copy(f.c.x1.begin(), f.c.x1.end(), buffers.x1());
  std::copy(f.c.x2.begin(), f.c.x2.end(), buffers.x2());
  std::fill(buffers.out(), buffers.out() + buffers.out_floats(), NAN);  // poisoned: all must be written
  const int copies_before = device->copies_from_host.load();
  auto result = f.core->Run(std::move(request), InferenceCore::Dispatch::kCallerMayRun);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(device->copies_from_host.load() - copies_before, 1) << "x1 and x2 in one copy";
  EXPECT_EQ(result->out.values(), buffers.out());
  EXPECT_LT(RelativeError(D(result->out), f.c.out), 1e-5);
}

// The lease looks the model up and checks the shapes first: nothing is leased for a call that fails.
TEST(InferenceCoreTest, LeaseBuffers_UnknownModelOrBadShapes_FailBeforeLeasing) {
  Fixture f(CoreConfig{});
  const int64_t d1 = f.c.x1.size() / f.c.batch, d2 = f.c.x2.size() / f.c.batch;
  struct Case {
    std::string model;
    std::vector<int64_t> x1, x2;
    absl::StatusCode code;
  };
  for (const Case& bad : {Case{"nope", {2, d1}, {2, d2}, absl::StatusCode::kNotFound},
                          Case{"m", {4096, 0}, {4096, d2}, absl::StatusCode::kInvalidArgument},
                          Case{"m", {2, d1}, {3, d2}, absl::StatusCode::kInvalidArgument},
                          Case{"m", {0, d1}, {0, d2}, absl::StatusCode::kInvalidArgument}}) {
    SCOPED_TRACE(bad.model + " " + std::to_string(bad.x1[0]) + "x" + std::to_string(bad.x1[1]));
    InferenceRequest request;
    request.model = bad.model;
    request.x1.shape = bad.x1;
    request.x2.shape = bad.x2;
    CallBuffers buffers;
    absl::Status status =
        f.core->LeaseBuffers(request, InferenceCore::kLeaseInputs | InferenceCore::kLeaseOut, &buffers);
    EXPECT_EQ(status.code(), bad.code) << status;
    EXPECT_EQ(buffers.inputs(), nullptr);
    EXPECT_EQ(buffers.out(), nullptr);
    EXPECT_EQ(request.buffers, nullptr);
  }
}

// A waiting caller that gives up (a cancelled RPC) gets CANCELLED once the core is done with its
// request; a queued one never launches.
TEST(InferenceCoreTest, Run_CallerGivesUpWhileQueued_IsCancelledAndNeverLaunches) {
  CoreConfig config;
  config.max_queue_delay_us = 300000;  // the request waits in the queue
  Fixture f(config);
  std::atomic<bool> gave_up{false};
  InferenceCore::CallerWatch watch;
  watch.gave_up = [&] { return gave_up.load(); };
  std::thread giving_up([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gave_up = true;
  });
  auto result = f.core->Run(f.Forward(), InferenceCore::Dispatch::kQueue, &watch);
  giving_up.join();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(f.observer.launches.load(), 0);
}

// A caller that offers its thread (a unary RPC) runs the launch itself when the core batches
// greedily and a worker is idle; otherwise the request is queued for a worker thread as usual.
TEST(InferenceCoreTest, CallerMayRun_RunsOnTheCallerOnlyWhenGreedyAndIdle) {
  for (int64_t delay_us : {0, 20000}) {
    SCOPED_TRACE(delay_us);
    CoreConfig config;
    config.max_queue_delay_us = delay_us;
    Fixture f(config);
    std::thread::id ran_on;
    std::promise<absl::StatusOr<InferenceResult>> promise;
    f.core->Submit(
        f.Forward(),
        [&](absl::StatusOr<InferenceResult> r) {
          ran_on = std::this_thread::get_id();
          promise.set_value(std::move(r));
        },
        InferenceCore::InferenceCore::Dispatch::kCallerMayRun);
    auto result = promise.get_future().get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_LT(RelativeError(D(result->out), f.c.out), 1e-5);
    EXPECT_EQ(ran_on == std::this_thread::get_id(), delay_us == 0);
    EXPECT_EQ(f.observer.launches.load(), 1);
  }
}

// out_into: the result is written into the caller's buffer (and borrows it) when it fits exactly;
// otherwise it comes back owned, as usual.
TEST(InferenceCoreTest, OutInto_WritesTheCallersBufferOnlyWhenItFits) {
  Fixture f(CoreConfig{});
  const int64_t dim_out = f.c.out.size() / f.c.batch;
  for (int64_t extra : {0, 1}) {
    SCOPED_TRACE(extra);
    std::vector<float> buffer(static_cast<size_t>(f.c.batch * dim_out + extra),
                              std::numeric_limits<float>::quiet_NaN());
    InferenceRequest request = f.Forward();
    request.out_into = buffer.data();
    request.out_into_size = buffer.size();
    auto result = f.core->Run(std::move(request), InferenceCore::InferenceCore::Dispatch::kCallerMayRun);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->out.shape, (std::vector<int64_t>{f.c.batch, dim_out}));
    EXPECT_EQ(result->out.values() == buffer.data(), extra == 0);
    std::vector<double> out(result->out.values(), result->out.values() + result->out.size());
    EXPECT_LT(RelativeError(out, f.c.out), 1e-5);
    if (extra != 0) EXPECT_TRUE(std::isnan(buffer[0])) << "a buffer that does not fit stays untouched";
  }
}

// While another thread runs a launch on a worker (a claim), that worker's own thread leaves the
// queue to the others; when the claim ends it takes the work.
// A launch error fails only its launch; a device fault (CheckDevice fails after it) makes every later
// launch on that device answer UNAVAILABLE without touching it, once the listeners and the observer
// have heard of it (health and metrics hang off these).
TEST(InferenceCoreTest, DeviceFault_LaterLaunchesAreUnavailable_AndListenersHearOnce) {
  using testing::FakeDevice;
  using testing::FaultInjectingBackend;
  using testing::InjectedFault;
  auto device = std::make_shared<FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(device));
  backends.push_back(std::make_unique<FaultInjectingBackend>(device));  // two workers on one device
  Fixture f(CoreConfig{}, 2, std::move(backends));
  std::vector<std::string> heard;
  std::mutex heard_mu;
  const int listener = f.core->AddDeviceLostListener([&](const std::string& name, const std::string& why) {
    std::lock_guard<std::mutex> lock(heard_mu);
    heard.push_back(name + ": " + why);
  });
  ASSERT_TRUE(f.core->Run(f.Forward()).ok());

  device->fault.store(InjectedFault::kLaunchError);
  absl::StatusOr<InferenceResult> failed = f.core->Run(f.Forward());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  device->fault.store(InjectedFault::kNone);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(f.core->Run(f.Forward()).ok()) << "a launch error must not take the device out";
  EXPECT_TRUE(f.core->LostDevices().empty());
  EXPECT_EQ(f.observer.devices_lost.load(), 0);

  device->fault.store(InjectedFault::kDeviceFault);
  failed = f.core->Run(f.Forward());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  device->fault.store(InjectedFault::kNone);  // the device stays faulted regardless
  // The worker that found the fault answers UNAVAILABLE without launching; the other one fails its
  // next launch (INTERNAL) and finds the device lost too.
  int internal = 0, unavailable = 0;
  for (int i = 0; i < 12; ++i) {
    absl::StatusOr<InferenceResult> after = f.core->Run(f.Forward());
    if (after.status().code() == absl::StatusCode::kInternal) {
      ++internal;
      continue;
    }
    ASSERT_EQ(after.status().code(), absl::StatusCode::kUnavailable) << after.status();
    EXPECT_NE(after.status().message().find("cpu is lost"), std::string::npos) << after.status();
    EXPECT_NE(after.status().message().find("restart"), std::string::npos) << after.status();
    ++unavailable;
  }
  EXPECT_LE(internal, 1);
  EXPECT_GE(unavailable, 11);
  {
    std::lock_guard<std::mutex> lock(heard_mu);
    ASSERT_EQ(heard.size(), 1u) << "one device, heard of once";
    EXPECT_NE(heard[0].find("cpu: injected device fault"), std::string::npos) << heard[0];
  }
  EXPECT_EQ(f.core->LostDevices(), std::vector<std::string>{"cpu"});
  EXPECT_EQ(f.observer.devices_lost.load(), 1);  // once per device, however many workers found it
  EXPECT_EQ(f.observer.lost_device, "cpu");

  // A listener added later hears of the loss at once; a removed one is not called again.
  int late_calls = 0;
  const int late = f.core->AddDeviceLostListener([&](const std::string&, const std::string&) { ++late_calls; });
  EXPECT_EQ(late_calls, 1);
  f.core->RemoveDeviceLostListener(late);
  f.core->RemoveDeviceLostListener(listener);
}

// Two devices, one lost: its workers leave the rotation and the other device serves every request
// (queued or run on the caller's thread); the gradient part the lost device held is DATA_LOSS until
// the gradient is zeroed (an SGD step refuses before touching anything). When the last device is
// lost too, requests answer UNAVAILABLE instead of waiting on a queue nobody takes.
TEST(InferenceCoreTest, DeviceFault_OnOneOfTwoDevices_TheOtherServesAndTheLostGradientIsDataLoss) {
  using testing::FakeDevice;
  using testing::FaultInjectingBackend;
  using testing::InjectedFault;
  auto gpu0 = std::make_shared<FakeDevice>(), gpu1 = std::make_shared<FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(gpu0, "gpu:0"));
  backends.push_back(std::make_unique<FaultInjectingBackend>(gpu0, "gpu:0"));  // two workers on gpu:0
  backends.push_back(std::make_unique<FaultInjectingBackend>(gpu1, "gpu:1"));
  Fixture f(CoreConfig{}, 3, std::move(backends));
  auto backward = [&] {
    InferenceRequest r = f.Forward();
    r.op = Op::kBackward;
    r.loss = Loss::kSumTanh;
    r.weight_grad = WeightGradMode::kAccumulate;
    return r;
  };
  // On the caller's thread the first idle worker runs it: gpu:0's first worker.
  absl::StatusOr<InferenceResult> first = f.core->Run(backward(), InferenceCore::Dispatch::kCallerMayRun);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->device, "gpu:0");
  ASSERT_TRUE(f.core->GetGradient("m").ok());

  gpu0->fault.store(InjectedFault::kDeviceFault);
  absl::StatusOr<InferenceResult> failed = f.core->Run(f.Forward(), InferenceCore::Dispatch::kCallerMayRun);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal) << failed.status();
  gpu0->fault.store(InjectedFault::kNone);
  EXPECT_EQ(f.core->LostDevices(), std::vector<std::string>{"gpu:0"});
  EXPECT_FALSE(f.core->AllDevicesLost());
  EXPECT_EQ(f.observer.devices_lost.load(), 1);

  for (const absl::Status& status : f.SubmitForwards(24)) EXPECT_TRUE(status.ok()) << status;
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<InferenceResult> inline_run = f.core->Run(f.Forward(), InferenceCore::Dispatch::kCallerMayRun);
    ASSERT_TRUE(inline_run.ok()) << inline_run.status();
    EXPECT_EQ(inline_run->device, "gpu:1");
    EXPECT_LT(RelativeError(D(inline_run->out), f.c.out), 1e-5);
  }

  absl::StatusOr<std::vector<float>> lost_gradient = f.core->GetGradient("m");
  EXPECT_EQ(lost_gradient.status().code(), absl::StatusCode::kDataLoss) << lost_gradient.status();
  EXPECT_NE(lost_gradient.status().message().find("gpu:0"), std::string::npos) << lost_gradient.status();
  EXPECT_NE(lost_gradient.status().message().find("zero the gradient"), std::string::npos);
  EXPECT_EQ(f.core->SgdStep("m", 0.1, /*zero_gradient=*/true).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(f.core->GetWeights("m")->version, 1u) << "a refused step changes nothing";
  ASSERT_TRUE(f.core->ZeroGradient("m").ok());
  absl::StatusOr<std::vector<float>> zeroed = f.core->GetGradient("m");
  ASSERT_TRUE(zeroed.ok()) << zeroed.status();
  ASSERT_EQ(zeroed->size(), f.c.weight.size());
  for (float g : *zeroed) ASSERT_EQ(g, 0.0f);
  ASSERT_TRUE(f.core->Run(backward()).ok());
  absl::StatusOr<std::vector<float>> again = f.core->GetGradient("m");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_LT(RelativeError({again->begin(), again->end()}, f.c.grad_weight_sum_tanh), 1e-5);
  ASSERT_TRUE(f.core->SgdStep("m", 0.1, /*zero_gradient=*/true).ok());

  gpu1->fault.store(InjectedFault::kDeviceFault);
  EXPECT_EQ(f.core->Run(f.Forward()).status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(f.core->AllDevicesLost());
  // Nothing is left to serve: answered at once (not queued for ever), naming a lost device.
  auto last = std::async(std::launch::async, [&] { return f.core->Run(f.Forward()); });
  ASSERT_EQ(last.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  absl::StatusOr<InferenceResult> unavailable = last.get();
  EXPECT_EQ(unavailable.status().code(), absl::StatusCode::kUnavailable) << unavailable.status();
  EXPECT_NE(unavailable.status().message().find("gpu:1 is lost"), std::string::npos) << unavailable.status();
  EXPECT_EQ(f.observer.devices_lost.load(), 2);
}

TEST(InferenceCoreTest, MaxBatchSize_BoundsEachLaunch) {
  CoreConfig config;
  config.max_queue_delay_us = 100000;
  config.max_batch_size = 8;  // two requests of 4 per launch at most
  Fixture f(config);
  std::vector<std::future<absl::StatusOr<InferenceResult>>> results;
  for (int i = 0; i < 6; ++i) {
    results.push_back(std::async(std::launch::async, [&] { return f.core->Run(f.Forward()); }));
  }
  for (auto& result : results) {
    auto r = result.get();
    ASSERT_TRUE(r.ok());
    EXPECT_LE(r->executed_batch, 8);
  }
  EXPECT_GE(f.observer.launches.load(), 3);
}

TEST(InferenceCoreTest, FullQueue_IsResourceExhausted) {
  CoreConfig config;
  config.max_queue_delay_us = 300000;
  config.max_queued_requests = 2;
  Fixture f(config);
  std::vector<absl::Status> statuses = f.SubmitForwards(4);
  EXPECT_TRUE(statuses[0].ok());
  EXPECT_TRUE(statuses[1].ok());
  EXPECT_EQ(statuses[2].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(statuses[3].code(), absl::StatusCode::kResourceExhausted);
}

TEST(InferenceCoreTest, QueuedBytesOverTheLimit_IsResourceExhausted) {
  CoreConfig config;
  config.max_queue_delay_us = 300000;
  config.max_queued_bytes = 600;  // one request of the fixture holds (56 + 44) * 4 = 400 bytes
  Fixture f(config);
  std::vector<absl::Status> statuses = f.SubmitForwards(2);
  EXPECT_TRUE(statuses[0].ok());
  EXPECT_EQ(statuses[1].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(statuses[1].message().find("bytes"), std::string::npos) << statuses[1];
}

TEST(InferenceCoreTest, ExpiredOrCancelledWhileQueued_NeverLaunches) {
  CoreConfig config;
  config.max_queue_delay_us = 100000;
  Fixture f(config);
  InferenceRequest late = f.Forward();
  late.deadline = absl::Now() + absl::Milliseconds(10);
  InferenceRequest cancelled = f.Forward();
  cancelled.cancelled = std::make_shared<std::atomic<bool>>(true);
  auto a = std::async(std::launch::async, [&] { return f.core->Run(std::move(late)); });
  auto b = std::async(std::launch::async, [&] { return f.core->Run(std::move(cancelled)); });
  EXPECT_EQ(a.get().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(b.get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(f.observer.launches.load(), 0);
}

TEST(InferenceCoreTest, Shutdown_FinishesAdmittedWorkThenRefusesNewWork) {
  CoreConfig config;
  config.max_queue_delay_us = 1000000;
  Fixture f(config);
  std::promise<absl::StatusOr<InferenceResult>> promise;
  f.core->Submit(f.Forward(), [&](absl::StatusOr<InferenceResult> r) { promise.set_value(std::move(r)); });
  f.core->Shutdown();  // does not wait out the queue delay: drains now
  auto result = promise.get_future().get();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(RelativeError(D(result->out), f.c.out), 1e-5);
  EXPECT_EQ(f.core->Run(f.Forward()).status().code(), absl::StatusCode::kUnavailable);
}

TEST(InferenceCoreTest, NonFinitePolicy_RejectNamesTheElement) {
  Fixture f(CoreConfig{});
  InferenceRequest r = f.Forward();
  r.x2.data[13] = INFINITY;
  auto result = f.core->Run(std::move(r));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("x2: non-finite value inf at [1, 2]"), std::string::npos)
      << result.status();
}

TEST(InferenceCoreTest, SgdStep_SubtractsTheAccumulatedGradientAndBumpsTheVersion) {
  Fixture f(CoreConfig{});
  InferenceRequest r = f.Forward();
  r.op = Op::kBackward;
  r.loss = Loss::kSumTanh;
  r.weight_grad = WeightGradMode::kAccumulate;
  ASSERT_TRUE(f.core->Run(std::move(r)).ok());
  auto gradient = f.core->GetGradient("m");
  ASSERT_TRUE(gradient.ok());
  EXPECT_LT(RelativeError({gradient->begin(), gradient->end()}, f.c.grad_weight_sum_tanh), 1e-5);
  auto info = f.core->SgdStep("m", 0.1, /*zero_gradient=*/true);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, 2u);
  auto weights = f.core->GetWeights("m");
  for (size_t i = 0; i < f.c.weight.size(); ++i) {
    ASSERT_NEAR((*weights->weights)[i], f.c.weight[i] - 0.1 * f.c.grad_weight_sum_tanh[i], 1e-5);
  }
  auto zeroed = f.core->GetGradient("m");
  ASSERT_TRUE(zeroed.ok());
  ASSERT_EQ(zeroed->size(), f.c.weight.size());
  for (float g : *zeroed) ASSERT_EQ(g, 0.0f);
  // The forward pass now uses the new weights (the worker's replica was refreshed).
  auto after = f.core->Run(f.Forward());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->model_version, 2u);
  EXPECT_GT(RelativeError(D(after->out), f.c.out), 1e-4);
}

TEST(InferenceCoreTest, DeletedModel_IsNotFoundAndCanBeRecreated) {
  Fixture f(CoreConfig{});
  ASSERT_TRUE(f.core->Run(f.Forward()).ok());
  ASSERT_TRUE(f.core->DeleteModel("m").ok());
  EXPECT_EQ(f.core->Run(f.Forward()).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(f.core->CreateModel("m", {f.c.irreps_in1, f.c.irreps_in2, f.c.irreps_out}, std::nullopt, 3).ok());
  auto result = f.core->Run(f.Forward());
  ASSERT_TRUE(result.ok());
  EXPECT_GT(RelativeError(D(result->out), f.c.out), 1e-3) << "the new model has new (seeded) weights";
}

TEST(InferenceCoreTest, TwoWorkers_GradientIsTheSumOverWorkersAndStepsReachEveryReplica) {
  // Two devices (stand-ins for two GPUs) with slow launches and one request per launch: while one
  // worker is busy the other takes the next request, so both hold a part of the gradient.
  using testing::FakeDevice;
  using testing::FaultInjectingBackend;
  auto gpu0 = std::make_shared<FakeDevice>(), gpu1 = std::make_shared<FakeDevice>();
  gpu0->launch_delay_ms = gpu1->launch_delay_ms = 30;
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(gpu0, "gpu:0"));
  backends.push_back(std::make_unique<FaultInjectingBackend>(gpu1, "gpu:1"));
  CoreConfig config;
  config.max_batch_size = 4;  // the reference case's batch: no two requests merge
  Fixture f(config, 2, std::move(backends));
  ASSERT_EQ(f.core->devices(), (std::vector<std::string>{"gpu:0", "gpu:1"}));
  constexpr int kCalls = 12;
  std::vector<std::future<absl::StatusOr<InferenceResult>>> results;
  for (int i = 0; i < kCalls; ++i) {
    results.push_back(std::async(std::launch::async, [&] {
      InferenceRequest r = f.Forward();
      r.op = Op::kBackward;
      r.loss = Loss::kSumTanh;
      r.weight_grad = WeightGradMode::kAccumulate;
      return f.core->Run(std::move(r));
    }));
  }
  std::map<std::string, int> calls_per_device;
  for (auto& future : results) {
    absl::StatusOr<InferenceResult> result = future.get();
    ASSERT_TRUE(result.ok()) << result.status();
    ++calls_per_device[result->device];
  }
  ASSERT_EQ(calls_per_device.size(), 2u) << "every accumulation ran on one device: the sum is not tested";
  EXPECT_EQ(calls_per_device["gpu:0"] + calls_per_device["gpu:1"], kCalls);
  gpu0->launch_delay_ms = gpu1->launch_delay_ms = 0;
  auto gradient = f.core->GetGradient("m");
  ASSERT_TRUE(gradient.ok());
  std::vector<double> expected(f.c.grad_weight_sum_tanh.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = kCalls * f.c.grad_weight_sum_tanh[i];
  EXPECT_LT(RelativeError({gradient->begin(), gradient->end()}, expected), 1e-5);

  ASSERT_TRUE(f.core->SgdStep("m", 0.01, /*zero_gradient=*/true).ok());
  auto zeroed = f.core->GetGradient("m");
  ASSERT_TRUE(zeroed.ok());
  ASSERT_EQ(zeroed->size(), expected.size());
  for (float g : *zeroed) ASSERT_EQ(g, 0.0f);
  // Whichever worker answers, it computes with version 2: both replicas were refreshed. Slow launches
  // again, so that one worker cannot answer both of a pair before the other takes one (without them,
  // a loaded CI machine once let one worker answer all 16 pairs).
  gpu0->launch_delay_ms = gpu1->launch_delay_ms = 30;
  std::set<std::string> answered_by;
  for (int i = 0; i < 16 && answered_by.size() < 2; ++i) {
    auto a = std::async(std::launch::async, [&] { return f.core->Run(f.Forward()); });
    auto b = std::async(std::launch::async, [&] { return f.core->Run(f.Forward()); });
    for (auto* r : {&a, &b}) {
      absl::StatusOr<InferenceResult> result = r->get();
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ(result->model_version, 2u);
      answered_by.insert(result->device);
    }
  }
  EXPECT_EQ(answered_by.size(), 2u);
}

// SgdStep takes out of the buffer only the gradient it applied: accumulations racing the steps are
// each counted exactly once, in the weights (a step took them) or in the gradient left over. With
// an explicit grad_out the weight gradient does not depend on the weights, so each accumulation
// adds the reference case's grad_weight whatever the steps did meanwhile.
TEST(InferenceCoreTest, SgdStepsRacingAccumulations_CountEachAccumulationOnce) {
  // On disk, so that each step's save (fsync) leaves accumulations time to land during the step.
  std::string dir = (std::filesystem::temp_directory_path() / "tpserve-core-test-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  } cleanup{dir};
  CoreConfig config;
  config.model_dir = dir;
  Fixture f(config, /*workers=*/2);
  const std::vector<float> w0 = *f.core->GetWeights("m")->weights;
  constexpr int kThreads = 4, kPerThread = 12, kSteps = 12;
  constexpr double kLr = 0.01;
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        InferenceRequest r = f.Forward();
        r.op = Op::kBackward;
        r.grad_out = HostTensor({f.c.batch, static_cast<int64_t>(f.c.out.size()) / f.c.batch},
                                std::vector<float>(f.c.grad_out.begin(), f.c.grad_out.end()));
        r.weight_grad = WeightGradMode::kAccumulate;
        if (!f.core->Run(std::move(r)).ok()) ok = false;
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < kSteps; ++i) {
      if (!f.core->SgdStep("m", kLr, /*zero_gradient=*/true).ok()) ok = false;
    }
  });
  for (auto& t : threads) t.join();
  ASSERT_TRUE(ok.load());
  auto left = f.core->GetGradient("m");
  ASSERT_TRUE(left.ok());
  auto weights = f.core->GetWeights("m");
  ASSERT_TRUE(weights.ok());
  EXPECT_EQ(weights->version, 1u + kSteps);
  ASSERT_EQ(left->size(), w0.size());
  ASSERT_EQ(f.c.grad_weight.size(), w0.size());
  const double n = kThreads * kPerThread;
  // The steps took some accumulations into the weights (w_final = w0 - lr * taken) and left the
  // rest (g_left = n * g - taken): w_final - lr * g_left == w0 - lr * n * g.
  double worst = 0;
  for (size_t i = 0; i < w0.size(); ++i) {
    const double accounted = (*weights->weights)[i] - kLr * (*left)[i];
    const double expected = w0[i] - kLr * n * f.c.grad_weight[i];
    worst = std::max(worst, std::abs(accounted - expected));
  }
  EXPECT_LT(worst, 1e-4) << "an accumulation was lost or applied twice";
  // Both happened: some accumulations went into the weights, and the weights moved.
  EXPECT_NE(*weights->weights, w0);
}

// A request whose deadline passed (or that was cancelled) before its launch changes nothing, also
// when it would run on the caller's thread (no queue where the batcher would drop it).
TEST(InferenceCoreTest, AccumulationExpiredBeforeItsLaunch_OnTheCallersThread_AddsNothing) {
  Fixture f(CoreConfig{});  // greedy: an idle worker runs a kCallerMayRun request inline
  for (bool cancel : {false, true}) {
    InferenceRequest r = f.Forward();
    r.op = Op::kBackward;
    r.loss = Loss::kSumTanh;
    r.weight_grad = WeightGradMode::kAccumulate;
    if (cancel) {
      r.cancelled = std::make_shared<std::atomic<bool>>(true);
    } else {
      r.deadline = absl::Now() - absl::Milliseconds(1);
    }
    auto result = f.core->Run(std::move(r), InferenceCore::Dispatch::kCallerMayRun);
    EXPECT_EQ(result.status().code(), cancel ? absl::StatusCode::kCancelled : absl::StatusCode::kDeadlineExceeded)
        << result.status();
  }
  EXPECT_EQ(f.observer.launches.load(), 0);
  auto gradient = f.core->GetGradient("m");
  ASSERT_TRUE(gradient.ok());
  ASSERT_EQ(gradient->size(), f.c.weight.size());
  for (float g : *gradient) ASSERT_EQ(g, 0.0f);
}

// An upload (or step) that began on a model answers NOT_FOUND once that model is deleted, even
// when a model of the same name exists again: it must not land on the new one.
TEST(InferenceCoreTest, ReplaceWeights_OnAModelDeletedAndRecreated_IsNotFoundAndTheNewOneKeepsItsWeights) {
  Fixture f(CoreConfig{});
  absl::StatusOr<std::shared_ptr<Model>> old = f.core->FindModel("m");
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(f.core->DeleteModel("m").ok());
  auto created = f.core->CreateModel("m", {f.c.irreps_in1, f.c.irreps_in2, f.c.irreps_out}, std::nullopt, 5);
  ASSERT_TRUE(created.ok()) << created.status();
  std::vector<float> upload(f.c.weight.size(), 0.5f);
  auto replaced = f.core->ReplaceWeights(*old, upload, 0);
  EXPECT_EQ(replaced.status().code(), absl::StatusCode::kNotFound) << replaced.status();
  auto now = f.core->GetModel("m");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->version, 1u);
  EXPECT_EQ(now->weights_fnv1a64, created->weights_fnv1a64);
}

}  // namespace
}  // namespace tpserve::server
