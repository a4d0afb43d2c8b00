// Where network models compute (--network_device, server/network_device.h): the real tpserve on
// loopback with its network models on the CPU or on cuda:0, checked against the CPU network of
// nn/ (fp64) on the same parameters: Predict, TrainStep losses, parameters and momentum velocity
// after steps (read from the repository after kill -9), and a restart that resumes from what the
// last step stored. The cuda0 instance skips without a CUDA device; the cpu instance runs the same
// checks everywhere. Also: the start-up line, ModelInfo.device, and bad values refused at start;
// --network_save_every (steps kept in memory between saves: lost to kill -9, saved by SIGTERM).
// $TPSERVE_BIN, when set, names the tpserve to start (tools/gpu/network_device.sh, a bundle).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "kernels/backend_factory.h"
#include "kernels/cpu/cpu_backend.h"
#include "nn/data/molecule_generator.h"
#include "nn/qm9_network.h"
#include "nn/sgd.h"
#include "server/core/model_repository.h"
#include "server/network_device.h"
#include "tests/server/server_test_util.h"
#include "tests/support/tpserve_process.h"
#include "tp/v1/tensor_product.grpc.pb.h"
#include "wire/graph_wire.h"

namespace tpserve::testing {
namespace {

constexpr int kLmax = 1, kMul = 8, kLayers = 3;
constexpr double kLr = 1e-2, kMomentum = 0.9;
// Relative (norm) error of fp32 on the device against fp64 on the host, a dozen steps in; the CPU
// instance agrees to fp64 rounding. The L1 loss's gradient is the sign of each residual: fp32 must
// not flip one, and on this batch the smallest |prediction - target| over the 12 steps is 1.4e-3
// (fp64), far above fp32's error of the predictions.
constexpr double kTolerance = 1e-4;
// The velocity sums gradients, whose fp32 blocks agree to ~1e-4 (qm9_cuda_network_test); a velocity
// that was not carried over is off by tens of percent.
constexpr double kVelocityTolerance = 1e-3;

struct Stubs {
  explicit Stubs(const std::string& target)
      : channel(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())),
        models(tp::v1::ModelService::NewStub(channel)),
        network(tp::v1::NetworkService::NewStub(channel)) {}
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tp::v1::ModelService::Stub> models;
  std::unique_ptr<tp::v1::NetworkService::Stub> network;
};

grpc::Status CreateQm9(Stubs& stubs, const std::string& name, uint64_t seed, tp::v1::ModelInfo* info) {
  return CreateQm9Model(*stubs.models, name, kLmax, kMul, kLayers, seed, info);
}

grpc::Status GetModel(Stubs& stubs, const std::string& name, tp::v1::ModelInfo* info) {
  grpc::ClientContext context;
  tp::v1::GetModelRequest request;
  request.set_name(name);
  return stubs.models->GetModel(&context, request, info);
}

grpc::Status Predict(Stubs& stubs, const std::string& model, const nn::GraphBatch& graphs, std::vector<double>* out,
                     uint64_t* version) {
  tp::v1::PredictRequest request;
  request.set_model(model);
  wire::EncodeGraphBatch(graphs, request.mutable_graphs());
  tp::v1::PredictResponse response;
  grpc::ClientContext context;
  grpc::Status status = stubs.network->Predict(&context, request, &response);
  *out = wire::TensorToDoubles(response.outputs());
  *version = response.model_version();
  return status;
}

grpc::Status Train(Stubs& stubs, const std::string& model, const nn::data::LabeledBatch& batch,
                   tp::v1::TrainStepResponse* response) {
  const tp::v1::TrainStepRequest request = wire::MakeTrainStepRequest(model, batch, kLr, kMomentum);
  grpc::ClientContext context;
  return stubs.network->TrainStep(&context, request, response);
}

// |a - b| / |b| (Euclidean norms).
double RelativeError(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-300);
}

// The tpserve to start: $TPSERVE_BIN (a bundle's copy on the GPU machine) or the build's own.
std::string TpservePath() {
  const char* bin = std::getenv("TPSERVE_BIN");
  return bin != nullptr && *bin != '\0' ? bin : TPSERVE_PATH;
}

// The network models' device as a test parameter: "cpu" or "cuda:0".
class NetworkDeviceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != "cpu" && CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
  TpserveProcess::Options Server(const std::string& model_dir, const std::string& log,
                                 std::vector<std::string> extra) const {
    std::vector<std::string> args = {"--listen=127.0.0.1:0", "--metrics_address=", "--model_dir=" + model_dir};
    args.insert(args.end(), extra.begin(), extra.end());
    return {TpservePath(), args, log};
  }
  // The fp64 CPU network of the models these tests create (kLmax, kMul, kLayers): the replica of
  // every step the server runs.
  absl::StatusOr<nn::Qm9Network> CpuNetwork() {
    nn::Qm9NetworkConfig config;
    config.lmax = kLmax;
    config.mul = kMul;
    config.layers = kLayers;
    return nn::Qm9Network::Create(config, &cpu_backend_);
  }

 private:
  CpuBackend cpu_backend_{CpuBackendOptions{1}};
};

TEST_P(NetworkDeviceTest, PredictAndTrainMatchTheCpuNetwork_AndARestartResumesFromTheLastStep) {
  const std::string device = GetParam();
  TempDir dir;
  const std::string models = dir.path() + "/models";
  const nn::data::LabeledBatch batch =
      *nn::data::MakeBatch(nn::data::GenerateMolecules(27, /*seed=*/11), 0, 27);
  absl::StatusOr<nn::Qm9Network> cpu = CpuNetwork();
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  // The CPU network's replica of every step the server runs.
  std::vector<double> parameters = cpu->InitialParameters(5), velocity(parameters.size(), 0.0);
  std::vector<double> losses;
  auto cpu_step = [&]() {
    nn::LossAndGradient<double> step = *cpu->LossGradient(parameters, batch.graphs, batch.targets);
    nn::SgdMomentumStep(parameters, velocity, step.gradient, {kLr, kMomentum});
    return step;
  };

  tp::v1::ModelInfo info_before;
  {
    // The first server: cuda:0 chosen by --network_device=auto on a CUDA backend, or cpu given.
    std::vector<std::string> flags = device == "cpu" ? std::vector<std::string>{"--backend=cpu",
                                                                                "--network_device=cpu"}
                                                     : std::vector<std::string>{"--backend=auto"};
    TpserveProcess server(Server(models, dir.path() + "/log.0", flags));
    ASSERT_GT(server.port(), 0) << ReadFile(dir.path() + "/log.0");
    EXPECT_NE(ReadFile(dir.path() + "/log.0").find("network models compute on " + device), std::string::npos)
        << ReadFile(dir.path() + "/log.0");
    Stubs stubs(server.target());
    tp::v1::ModelInfo info;
    ASSERT_TRUE(CreateQm9(stubs, "m", 5, &info).ok());
    EXPECT_EQ(info.device(), device);
    EXPECT_EQ(info.weight_numel(), cpu->num_parameters());

    std::vector<double> predicted;
    uint64_t version = 0;
    ASSERT_TRUE(Predict(stubs, "m", batch.graphs, &predicted, &version).ok());
    EXPECT_EQ(version, 1u);
    const std::vector<double> want = *cpu->Predict(parameters, batch.graphs);
    EXPECT_LT(RelativeError(predicted, want), kTolerance);
    EXPECT_GT(RelativeError(predicted, std::vector<double>(want.size(), 0.0)), 0.5) << "outputs are not all zero";

    // Three steps, a Predict between: each step is the CPU network's step from the same state.
    std::printf("%s: Predict relative error %.2e against the fp64 CPU network\n", device.c_str(),
                RelativeError(predicted, want));
    for (int step = 0; step < 3; ++step) {
      tp::v1::TrainStepResponse trained;
      grpc::Status status = Train(stubs, "m", batch, &trained);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(trained.model_version(), 2u + step);
      nn::LossAndGradient<double> want_step = cpu_step();
      EXPECT_NEAR(trained.loss(), want_step.loss, kTolerance * want_step.loss) << "step " << step;
      EXPECT_LT(RelativeError(wire::TensorToDoubles(trained.predictions()), want_step.predictions), kTolerance);
      losses.push_back(trained.loss());
      if (step == 0) {
        ASSERT_TRUE(Predict(stubs, "m", batch.graphs, &predicted, &version).ok());
        EXPECT_EQ(version, 2u);
        EXPECT_LT(RelativeError(predicted, *cpu->Predict(parameters, batch.graphs)), kTolerance);
      }
    }
    ASSERT_TRUE(GetModel(stubs, "m", &info_before).ok());
    EXPECT_EQ(info_before.version(), 4u);
    server.Kill9();  // each step was durable when it answered
  }
  // What the three steps stored: the CPU's parameters and velocity (momentum carried over).
  server::ModelRepository repository(models);
  absl::StatusOr<server::RepositoryContents> stored = repository.Scan();
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->networks.size(), 1u);
  EXPECT_EQ(stored->networks[0].version, 4u);
  EXPECT_LT(RelativeError(stored->networks[0].parameters, parameters), kTolerance);
  EXPECT_LT(RelativeError(stored->networks[0].velocity, velocity), kVelocityTolerance);
  std::printf("%s: after 3 steps, relative error of the stored parameters %.2e, velocity %.2e\n", device.c_str(),
              RelativeError(stored->networks[0].parameters, parameters),
              RelativeError(stored->networks[0].velocity, velocity));
  // From here the replica continues from the stored state itself.
  parameters = stored->networks[0].parameters;
  velocity = stored->networks[0].velocity;

  // The second server (the device named explicitly) serves the stored version and steps on from it.
  TpserveProcess server(
      Server(models, dir.path() + "/log.1", {"--backend=" + std::string(device == "cpu" ? "cpu" : "auto"),
                                             "--network_device=" + device}));
  ASSERT_GT(server.port(), 0) << ReadFile(dir.path() + "/log.1");
  Stubs stubs(server.target());
  tp::v1::ModelInfo info;
  ASSERT_TRUE(GetModel(stubs, "m", &info).ok());
  EXPECT_EQ(info.version(), info_before.version());
  EXPECT_EQ(info.weights_fnv1a64(), info_before.weights_fnv1a64());
  EXPECT_EQ(info.device(), device);
  std::vector<double> predicted;
  uint64_t version = 0;
  ASSERT_TRUE(Predict(stubs, "m", batch.graphs, &predicted, &version).ok());
  EXPECT_EQ(version, 4u);
  EXPECT_LT(RelativeError(predicted, *cpu->Predict(parameters, batch.graphs)), kTolerance);
  std::vector<double> step_ms;
  for (int step = 3; step < 12; ++step) {
    tp::v1::TrainStepResponse trained;
    const auto start = std::chrono::steady_clock::now();
    grpc::Status status = Train(stubs, "m", batch, &trained);
    step_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(trained.model_version(), 2u + step);
    nn::LossAndGradient<double> want_step = cpu_step();
    EXPECT_NEAR(trained.loss(), want_step.loss, kTolerance * want_step.loss) << "step " << step;
    losses.push_back(trained.loss());
  }
  EXPECT_LT(losses.back(), 0.8 * losses.front()) << "first " << losses.front() << ", last " << losses.back();
  ASSERT_TRUE(GetModel(stubs, "m", &info).ok());
  server.Kill9();
  stored = repository.Scan();
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->networks.size(), 1u);
  EXPECT_EQ(stored->networks[0].version, 13u);
  EXPECT_EQ(stored->networks[0].version, info.version());
  EXPECT_LT(RelativeError(stored->networks[0].parameters, parameters), kTolerance);
  EXPECT_LT(RelativeError(stored->networks[0].velocity, velocity), kVelocityTolerance);
  std::sort(step_ms.begin(), step_ms.end());
  std::printf("%s: after 12 steps, relative error of the stored parameters %.2e, velocity %.2e; loss %.4f -> %.4f; "
              "TrainStep through gRPC (27 molecules, lmax %d mul %d layers %d, saved to disk), median %.2f ms\n",
              device.c_str(), RelativeError(stored->networks[0].parameters, parameters),
              RelativeError(stored->networks[0].velocity, velocity), losses.front(), losses.back(), kLmax, kMul,
              kLayers, step_ms[step_ms.size() / 2]);
}

// Predicts of whichever version is current while steps run: on a device the runner then switches
// between versions (uploading the one a call computes on); every Predict must still match its
// version, and the steps the state after the CPU's same steps (momentum not lost in a switch).
TEST_P(NetworkDeviceTest, PredictsDuringTraining_MatchTheirVersionAndLeaveTheStepsIntact) {
  const std::string device = GetParam();
  TempDir dir;
  const std::string models = dir.path() + "/models";
  const nn::data::LabeledBatch batch = *nn::data::MakeBatch(nn::data::GenerateMolecules(9, /*seed=*/3), 0, 9);
  const nn::data::LabeledBatch other = *nn::data::MakeBatch(nn::data::GenerateMolecules(5, /*seed=*/4), 0, 5);
  absl::StatusOr<nn::Qm9Network> cpu = CpuNetwork();
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  std::vector<double> parameters = cpu->InitialParameters(9), velocity(parameters.size(), 0.0);
  constexpr int kSteps = 5;
  // The CPU's parameters at each version (1: initial), computed before the server runs.
  std::vector<std::vector<double>> at_version = {{}, parameters};
  for (int step = 0; step < kSteps; ++step) {
    nn::LossAndGradient<double> g = *cpu->LossGradient(parameters, batch.graphs, batch.targets);
    nn::SgdMomentumStep(parameters, velocity, g.gradient, {kLr, kMomentum});
    at_version.push_back(parameters);
  }
  std::vector<std::vector<double>> want_other;  // the other batch's predictions per version
  for (const std::vector<double>& p : at_version) {
    want_other.push_back(p.empty() ? std::vector<double>{} : *cpu->Predict(p, other.graphs));
  }

  TpserveProcess server(Server(models, dir.path() + "/log",
                               {"--backend=" + std::string(device == "cpu" ? "cpu" : "auto"),
                                "--network_device=" + device}));
  ASSERT_GT(server.port(), 0) << ReadFile(dir.path() + "/log");
  Stubs stubs(server.target());
  tp::v1::ModelInfo info;
  ASSERT_TRUE(CreateQm9(stubs, "m", 9, &info).ok());
  std::atomic<bool> done{false};
  std::atomic<int> predicts{0}, mismatches{0}, failures{0};
  std::thread reader([&] {
    Stubs own(server.target());
    while (!done.load()) {
      std::vector<double> out;
      uint64_t version = 0;
      if (!Predict(own, "m", other.graphs, &out, &version).ok() || version < 1 || version > kSteps + 1u) {
        ++failures;
        continue;
      }
      ++predicts;
      if (RelativeError(out, want_other[version]) > kTolerance) ++mismatches;
    }
  });
  for (int step = 0; step < kSteps; ++step) {
    tp::v1::TrainStepResponse trained;
    grpc::Status status = Train(stubs, "m", batch, &trained);
    EXPECT_TRUE(status.ok()) << status.error_message();
    // A Predict of the previous version has a chance to run between steps.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  done = true;
  reader.join();
  EXPECT_GT(predicts.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(failures.load(), 0);
  server.Kill9();
  server::ModelRepository repository(models);
  absl::StatusOr<server::RepositoryContents> stored = repository.Scan();
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->networks.size(), 1u);
  EXPECT_EQ(stored->networks[0].version, kSteps + 1u);
  EXPECT_LT(RelativeError(stored->networks[0].parameters, parameters), kTolerance);
  EXPECT_LT(RelativeError(stored->networks[0].velocity, velocity), kVelocityTolerance);
  std::printf("%s: %d Predicts during %d steps, stored velocity relative error %.2e\n", device.c_str(),
              predicts.load(), kSteps, RelativeError(stored->networks[0].velocity, velocity));
}

// --network_save_every 5: steps are served at once and saved when they make 5 since the version
// on disk (versions 6 and 11 of 12 steps). kill -9 then loses the last two, and the restart
// serves version 11 equal to the CPU network's 10 steps; SIGTERM saves the steps a server holds
// in memory; deleting a model with unsaved steps just deletes it.
TEST_P(NetworkDeviceTest, SaveEvery5_KillLosesOnlyUnsavedSteps_SigtermSavesThem) {
  const std::string device = GetParam();
  TempDir dir;
  const std::string models = dir.path() + "/models";
  const nn::data::LabeledBatch batch = *nn::data::MakeBatch(nn::data::GenerateMolecules(9, /*seed=*/7), 0, 9);
  absl::StatusOr<nn::Qm9Network> cpu = CpuNetwork();
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  // The CPU network's parameters, velocity and loss at each version (1: created; step k makes k + 1).
  constexpr int kSteps = 12;
  std::vector<std::vector<double>> parameters = {{}, cpu->InitialParameters(5)};
  std::vector<std::vector<double>> velocity = {{}, std::vector<double>(parameters[1].size(), 0.0)};
  std::vector<double> loss = {0, 0};  // loss[v]: the step that made version v
  for (int v = 2; v <= kSteps + 1; ++v) {
    std::vector<double> p = parameters[v - 1], m = velocity[v - 1];
    nn::LossAndGradient<double> step = *cpu->LossGradient(p, batch.graphs, batch.targets);
    nn::SgdMomentumStep(p, m, step.gradient, {kLr, kMomentum});
    parameters.push_back(std::move(p));
    velocity.push_back(std::move(m));
    loss.push_back(step.loss);
  }
  const std::vector<std::string> flags = {"--backend=" + std::string(device == "cpu" ? "cpu" : "auto"),
                                          "--network_device=" + device, "--network_save_every=5"};
  auto stored_version = [&]() -> uint64_t {
    absl::StatusOr<server::RepositoryContents> stored = server::ModelRepository(models).Scan();
    EXPECT_TRUE(stored.ok()) << stored.status();
    EXPECT_TRUE(stored.ok() && stored->damaged.empty());
    return stored.ok() && stored->networks.size() == 1 ? stored->networks[0].version : 0;
  };
  auto expect_stored = [&](uint64_t version) {
    absl::StatusOr<server::RepositoryContents> stored = server::ModelRepository(models).Scan();
    ASSERT_TRUE(stored.ok()) << stored.status();
    ASSERT_EQ(stored->networks.size(), 1u);
    EXPECT_EQ(stored->networks[0].version, version);
    EXPECT_LT(RelativeError(stored->networks[0].parameters, parameters[version]), kTolerance);
    EXPECT_LT(RelativeError(stored->networks[0].velocity, velocity[version]), kVelocityTolerance);
  };
  auto step_to = [&](Stubs& stubs, uint64_t version) {
    tp::v1::TrainStepResponse trained;
    grpc::Status status = Train(stubs, "m", batch, &trained);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(trained.model_version(), version);
    EXPECT_NEAR(trained.loss(), loss[version], kTolerance * loss[version]) << "version " << version;
  };
  auto expect_serves = [&](Stubs& stubs, uint64_t version, uint64_t saved) {
    tp::v1::ModelInfo info;
    ASSERT_TRUE(GetModel(stubs, "m", &info).ok());
    EXPECT_EQ(info.version(), version);
    EXPECT_EQ(info.saved_version(), saved);
    std::vector<double> predicted;
    uint64_t served = 0;
    ASSERT_TRUE(Predict(stubs, "m", batch.graphs, &predicted, &served).ok());
    EXPECT_EQ(served, version);
    EXPECT_LT(RelativeError(predicted, *cpu->Predict(parameters[version], batch.graphs)), kTolerance);
  };

  {
    TpserveProcess server(Server(models, dir.path() + "/log.0", flags));
    ASSERT_GT(server.port(), 0) << ReadFile(dir.path() + "/log.0");
    EXPECT_NE(ReadFile(dir.path() + "/log.0").find("network_save_every=5"), std::string::npos)
        << ReadFile(dir.path() + "/log.0");
    Stubs stubs(server.target());
    tp::v1::ModelInfo info;
    ASSERT_TRUE(CreateQm9(stubs, "m", 5, &info).ok());
    EXPECT_EQ(info.saved_version(), 1u);
    for (uint64_t version = 2; version <= kSteps + 1; ++version) {
      step_to(stubs, version);
      // On disk: the last version that made 5 steps since the one before (1, 6, 11).
      const uint64_t saved = version < 6 ? 1 : version < 11 ? 6 : 11;
      ASSERT_TRUE(GetModel(stubs, "m", &info).ok());
      EXPECT_EQ(info.version(), version);
      EXPECT_EQ(info.saved_version(), saved);
      EXPECT_EQ(stored_version(), saved) << "after the step to version " << version;
    }
    expect_serves(stubs, kSteps + 1, 11);
    server.Kill9();
  }
  // Steps 11 and 12 (versions 12, 13) were in memory only: the repository holds version 11.
  expect_stored(11);

  {
    TpserveProcess server(Server(models, dir.path() + "/log.1", flags));
    ASSERT_GT(server.port(), 0) << ReadFile(dir.path() + "/log.1");
    Stubs stubs(server.target());
    expect_serves(stubs, 11, 11);
    step_to(stubs, 12);
    step_to(stubs, 13);
    expect_serves(stubs, 13, 11);
    server.Signal(SIGTERM);
    ASSERT_TRUE(server.ExitsWithin(std::chrono::seconds(60))) << ReadFile(dir.path() + "/log.1");
    EXPECT_EQ(server.exit_code(), 0);
    EXPECT_NE(ReadFile(dir.path() + "/log.1").find("network model 'm': saved version 13 (2 steps since the last save)"),
              std::string::npos)
        << ReadFile(dir.path() + "/log.1");
  }
  expect_stored(13);

  TpserveProcess server(Server(models, dir.path() + "/log.2", flags));
  ASSERT_GT(server.port(), 0) << ReadFile(dir.path() + "/log.2");
  Stubs stubs(server.target());
  expect_serves(stubs, 13, 13);
  // A step kept in memory, then the model deleted: gone from memory and disk, and the shutdown
  // has nothing to save.
  tp::v1::TrainStepResponse trained;
  ASSERT_TRUE(Train(stubs, "m", batch, &trained).ok());
  grpc::ClientContext context;
  tp::v1::DeleteModelRequest request;
  request.set_name("m");
  tp::v1::DeleteModelResponse deleted;
  ASSERT_TRUE(stubs.models->DeleteModel(&context, request, &deleted).ok());
  tp::v1::ModelInfo info;
  EXPECT_EQ(GetModel(stubs, "m", &info).error_code(), grpc::StatusCode::NOT_FOUND);
  server.Signal(SIGTERM);
  ASSERT_TRUE(server.ExitsWithin(std::chrono::seconds(60))) << ReadFile(dir.path() + "/log.2");
  EXPECT_EQ(server.exit_code(), 0);
  EXPECT_EQ(ReadFile(dir.path() + "/log.2").find("saved version"), std::string::npos) << ReadFile(dir.path() + "/log.2");
  absl::StatusOr<server::RepositoryContents> stored = server::ModelRepository(models).Scan();
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(stored->networks.empty());
}

INSTANTIATE_TEST_SUITE_P(Devices, NetworkDeviceTest, ::testing::Values("cpu", "cuda:0"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param == "cpu" ? std::string("cpu") : std::string("cuda0");
                         });

// Starts tpserve (CPU backend, loopback) with `flag`, which it must refuse: no port, and an exit
// within 10 s. Returns its exit code (-1 when it did not exit); its output is in `log`.
int RefusedStartExitCode(const std::string& flag, const std::string& log) {
  TpserveProcess::Options options{
      TpservePath(), {"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu", flag}, log};
  options.start_timeout = std::chrono::seconds(20);
  TpserveProcess server(options);
  EXPECT_EQ(server.port(), 0) << flag;
  EXPECT_TRUE(server.ExitsWithin(std::chrono::seconds(10))) << flag;
  return server.exit_code();
}

// Values the server cannot start with: exit 2 with one line naming the flag.
TEST(NetworkDeviceFlagTest, BadValues_AreAStartupErrorNamingTheFlag) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"tpu", "--network_device 'tpu': expected auto, cpu, cuda or cuda:N"},
      {"cuda:x", "--network_device 'cuda:x': expected auto, cpu, cuda or cuda:N"},
      // no device 64 anywhere; without CUDA support or a GPU the reason differs, the flag is named
      {"cuda:64", "--network_device 'cuda:64': "},
  };
  int i = 0;
  for (const auto& [value, words] : cases) {
    const std::string log = dir.path() + "/log." + std::to_string(i++);
    RefusedStartExitCode("--network_device=" + value, log);
    EXPECT_NE(ReadFile(log).find(words), std::string::npos) << ReadFile(log);
  }
}

// --network_save_every: a whole number >= 1, else exit 2 with one line naming the flag.
TEST(NetworkSaveEveryFlagTest, BadValues_AreAStartupErrorNamingTheFlag) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"0", "network_save_every: expected >= 1, got 0"},
      {"-3", "network_save_every: expected >= 1, got -3"},
      {"often", "--network_save_every 'often': expected a whole number >= 1"},
      {"2.5", "--network_save_every '2.5': expected a whole number >= 1"},
  };
  int i = 0;
  for (const auto& [value, words] : cases) {
    const std::string log = dir.path() + "/log." + std::to_string(i++);
    EXPECT_EQ(RefusedStartExitCode("--network_save_every=" + value, log), 2) << value;
    EXPECT_NE(ReadFile(log).find(words), std::string::npos) << ReadFile(log);
  }
  // The config file's key: the same check.
  const std::string file = dir.path() + "/config.json";
  std::ofstream(file) << R"({"network_save_every": 0})";
  EXPECT_EQ(RefusedStartExitCode("--config=" + file, dir.path() + "/log.file"), 2);
  EXPECT_NE(ReadFile(dir.path() + "/log.file").find("network_save_every: expected >= 1, got 0"), std::string::npos)
      << ReadFile(dir.path() + "/log.file");
}

// How --network_device resolves against the server's backends (MakeNetworkRunners).
TEST(NetworkDeviceFlagTest, Resolution_AutoTakesTheFirstCudaBackendElseTheCpu) {
  auto device = [](const std::string& spec, const std::vector<std::string>& backends) -> std::string {
    absl::StatusOr<std::unique_ptr<server::NetworkRunnerFactory>> runners = server::MakeNetworkRunners(spec, backends);
    return runners.ok() ? (*runners)->device() : std::string(absl::StatusCodeToString(runners.status().code()));
  };
  EXPECT_EQ(device("cpu", {"cuda:0"}), "cpu");
  EXPECT_EQ(device("auto", {"cpu"}), "cpu");
  EXPECT_EQ(device("auto", {"cpu:0", "cpu:1"}), "cpu");
  EXPECT_EQ(device("gpu", {"cpu"}), "INVALID_ARGUMENT");
  EXPECT_EQ(device("cuda:-1", {"cpu"}), "INVALID_ARGUMENT");
  EXPECT_EQ(device("auto", {"cuda:64"}), "UNAVAILABLE");  // no such device here
  if (CudaDeviceCount() > 0) {
    EXPECT_EQ(device("auto", {"cpu", "cuda:0", "cuda:0"}), "cuda:0");
    EXPECT_EQ(device("cuda", {"cpu"}), "cuda:0");
  }
}

// auto on a CPU backend: the CPU, printed at start and in ModelInfo.
TEST(NetworkDeviceFlagTest, AutoOnACpuBackend_IsTheCpu) {
  TempDir dir;
  TpserveProcess server({TpservePath(), {"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu"},
                         dir.path() + "/log"});
  ASSERT_GT(server.port(), 0);
  EXPECT_NE(ReadFile(dir.path() + "/log").find("network models compute on cpu"), std::string::npos);
  Stubs stubs(server.target());
  tp::v1::ModelInfo info;
  ASSERT_TRUE(CreateQm9(stubs, "m", 1, &info).ok());
  EXPECT_EQ(info.device(), "cpu");
}

}  // namespace
}  // namespace tpserve::testing
