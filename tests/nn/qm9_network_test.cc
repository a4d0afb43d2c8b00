// The QM9 network on the CPU backend: structure, gradients by finite differences, invariance,
// fp32 against fp64, validation and SGD.
#include "nn/qm9_network.h"

#include <cmath>
#include <functional>
#include <thread>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nn/sgd.h"
#include "nn/random_batch.h"
#include "tests/support/random.h"
#include "tests/support/wigner_d.h"

namespace tpserve::nn {
namespace {

Qm9NetworkConfig TinyConfig(int lmax, int mul, int layers) {
  Qm9NetworkConfig config;
  config.lmax = lmax;
  config.mul = mul;
  config.layers = layers;
  config.radial_hidden = 8;
  return config;
}

class Qm9NetworkTest : public ::testing::Test {
 protected:
  CpuBackend backend_{CpuBackendOptions{1}};
};

TEST_F(Qm9NetworkTest, LayerIrreps_FollowE3nnGateConventions) {
  auto network = Qm9Network::Create(TinyConfig(1, 4, 4), &backend_);
  ASSERT_TRUE(network.ok()) << network.status();
  // Layer 0 sees only 5x0e: 0o and 1e are unreachable and dropped (gate_points_2101's filter).
  EXPECT_EQ(network->LayerIrreps(),
            (std::vector<std::string>{"4x0e+4x1o", "4x0e+4x1e+4x1o", "4x0e+4x0o+4x1e+4x1o"}));
  auto lmax2 = Qm9Network::Create(TinyConfig(2, 3, 4), &backend_);
  ASSERT_TRUE(lmax2.ok()) << lmax2.status();
  EXPECT_EQ(lmax2->LayerIrreps().back(), "3x0e+3x0o+3x1e+3x1o+3x2e+3x2o");
}

TEST_F(Qm9NetworkTest, ParameterLayout_TilesTheFlatVector) {
  auto network = Qm9Network::Create(TinyConfig(2, 4, 3), &backend_);
  ASSERT_TRUE(network.ok()) << network.status();
  int64_t offset = 0;
  for (const ParameterBlock& block : network->parameter_layout()) {
    EXPECT_EQ(block.offset, offset) << block.name;
    int64_t numel = 1;
    for (int64_t s : block.shape) numel *= s;
    EXPECT_EQ(block.numel, numel) << block.name;
    EXPECT_GT(block.numel, 0) << block.name;
    offset += block.numel;
  }
  EXPECT_EQ(offset, network->num_parameters());
  EXPECT_EQ(network->parameter_layout()[2].name, "layer0.radial.w0");
  EXPECT_EQ(network->parameter_layout()[2].shape, (std::vector<int64_t>{10, 8}));
  const std::vector<double> a = network->InitialParameters(7), b = network->InitialParameters(7);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, network->InitialParameters(8));
  double mean = 0, second = 0;
  for (double v : a) mean += v / a.size(), second += v * v / a.size();
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(second, 1.0, 0.1);
}

// Central differences of the L1 loss, with targets far from the predictions so that the loss is
// linear in them (no kink within the step).
void CheckGradientByFiniteDifferences(const Qm9Network& network, std::mt19937_64& rng) {
  const GraphBatch batch = RandomChainBatch(rng, 2, 5);
  const std::vector<double> params = network.InitialParameters(rng());
  auto predictions = network.Predict(params, batch);
  ASSERT_TRUE(predictions.ok()) << predictions.status();
  std::vector<double> targets = *predictions;
  for (size_t i = 0; i < targets.size(); ++i) targets[i] += (i % 2 ? 100.0 : -100.0);
  auto result = network.LossGradient(params, batch, targets);
  ASSERT_TRUE(result.ok()) << result.status();
  const double h = 1e-5;
  for (const ParameterBlock& block : network.parameter_layout()) {
    double max_error = 0, max_gradient = 0;
    // every entry of small blocks, a spread of 40 entries of larger ones
    const int64_t stride = std::max<int64_t>(1, block.numel / 40);
    for (int64_t i = block.offset; i < block.offset + block.numel; i += stride) {
      std::vector<double> plus = params, minus = params;
      plus[i] += h;
      minus[i] -= h;
      const double numeric = (network.LossGradient(plus, batch, targets)->loss -
                              network.LossGradient(minus, batch, targets)->loss) / (2 * h);
      max_error = std::max(max_error, std::abs(numeric - result->gradient[i]));
      max_gradient = std::max(max_gradient, std::abs(result->gradient[i]));
    }
    EXPECT_GT(max_gradient, 0) << block.name << ": a gradient of zeros checks nothing";
    EXPECT_LT(max_error, 1e-7 + 1e-6 * max_gradient) << block.name << " (max |gradient| " << max_gradient << ")";
  }
}

TEST_F(Qm9NetworkTest, LossGradient_MatchesFiniteDifferences_Lmax1) {
  uint64_t seed;
  std::mt19937_64 rng = tpserve::testing::FreshRng(&seed);
  SCOPED_TRACE(seed);
  auto network = Qm9Network::Create(TinyConfig(1, 4, 3), &backend_);
  ASSERT_TRUE(network.ok()) << network.status();
  CheckGradientByFiniteDifferences(*network, rng);
}

TEST_F(Qm9NetworkTest, LossGradient_MatchesFiniteDifferences_Lmax2) {
  uint64_t seed;
  std::mt19937_64 rng = tpserve::testing::FreshRng(&seed);
  SCOPED_TRACE(seed);
  auto network = Qm9Network::Create(TinyConfig(2, 4, 3), &backend_);
  ASSERT_TRUE(network.ok()) << network.status();
  CheckGradientByFiniteDifferences(*network, rng);
}

std::vector<double> RotatePositions(const std::vector<double>& positions, const std::vector<double>& r) {
  std::vector<double> out(positions.size());
  for (size_t n = 0; n < positions.size() / 3; ++n) {
    for (int i = 0; i < 3; ++i) {
      out[3 * n + i] = r[3 * i] * positions[3 * n] + r[3 * i + 1] * positions[3 * n + 1] +
                       r[3 * i + 2] * positions[3 * n + 2];
    }
  }
  return out;
}

TEST_F(Qm9NetworkTest, Predict_IsInvariantUnderRotationsReflectionsAndTranslations) {
  uint64_t seed;
  std::mt19937_64 rng = tpserve::testing::FreshRng(&seed);
  SCOPED_TRACE(seed);
  for (int lmax : {1, 2}) {
    auto network = Qm9Network::Create(TinyConfig(lmax, 4, 4), &backend_);
    ASSERT_TRUE(network.ok()) << network.status();
    const GraphBatch batch = RandomChainBatch(rng, 3, 7);
    const std::vector<double> params = network->InitialParameters(rng());
    auto reference = network->Predict(params, batch);
    ASSERT_TRUE(reference.ok()) << reference.status();
    std::uniform_real_distribution<double> angle(-M_PI, M_PI);
    using tpserve::testing::Axis;
    using tpserve::testing::CartesianRotation;
    using tpserve::testing::MatMul;
    std::vector<double> r = MatMul(CartesianRotation(Axis::kZ, angle(rng)),
                                   MatMul(CartesianRotation(Axis::kY, angle(rng)),
                                          CartesianRotation(Axis::kX, angle(rng)), 3), 3);
    GraphBatch moved = batch;
    moved.positions = RotatePositions(batch.positions, r);
    for (size_t k = 0; k < moved.positions.size(); ++k) moved.positions[k] = -moved.positions[k] + 0.3 * (k % 3 + 1);
    auto rotated = network->Predict(params, moved);
    ASSERT_TRUE(rotated.ok()) << rotated.status();
    double scale = 0;
    for (double v : *reference) scale = std::max(scale, std::abs(v));
    ASSERT_GT(scale, 1e-3);
    for (size_t i = 0; i < reference->size(); ++i) {
      EXPECT_NEAR((*rotated)[i], (*reference)[i], 1e-10 * scale) << "lmax " << lmax << " output " << i;
    }
  }
}

TEST_F(Qm9NetworkTest, Float32_AgreesWithFloat64) {
  uint64_t seed;
  std::mt19937_64 rng = tpserve::testing::FreshRng(&seed);
  SCOPED_TRACE(seed);
  auto network = Qm9Network::Create(TinyConfig(2, 8, 3), &backend_);
  ASSERT_TRUE(network.ok()) << network.status();
  const GraphBatch batch = RandomChainBatch(rng, 3, 8);
  const std::vector<double> params = network->InitialParameters(rng());
  const std::vector<double> targets = tpserve::testing::RandomNormal(3 * 4, rng);
  auto f64 = network->LossGradient(params, batch, targets);
  ASSERT_TRUE(f64.ok()) << f64.status();
  auto f32 = network->LossGradient(std::vector<float>(params.begin(), params.end()), batch,
                                   std::vector<float>(targets.begin(), targets.end()));
  ASSERT_TRUE(f32.ok()) << f32.status();
  const std::vector<double> pred32(f32->predictions.begin(), f32->predictions.end());
  const std::vector<double> grad32(f32->gradient.begin(), f32->gradient.end());
  EXPECT_LT(tpserve::testing::RelativeError(pred32, f64->predictions), 1e-4);
  EXPECT_LT(tpserve::testing::RelativeError(grad32, f64->gradient), 1e-3);
  EXPECT_NEAR(f32->loss, f64->loss, 1e-4 * std::abs(f64->loss));
}

TEST_F(Qm9NetworkTest, BadBatches_AreInvalidArgumentNamingTheProblem) {
  auto network = Qm9Network::Create(TinyConfig(1, 2, 2), &backend_);
  ASSERT_TRUE(network.ok()) << network.status();
  std::mt19937_64 rng(1);
  const GraphBatch good = RandomChainBatch(rng, 2, 4);
  const std::vector<double> params = network->InitialParameters(1);
  ASSERT_TRUE(network->Predict(params, good).ok());
  struct Case {
    const char* what;
    std::function<void(GraphBatch&)> breaks;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"edge out of range", [](GraphBatch& b) { b.edge_dst[1] = 99; }, "edge_dst[1] = 99 is out of range"},
      {"negative edge", [](GraphBatch& b) { b.edge_src[0] = -1; }, "edge_src[0] = -1"},
      {"NaN position", [](GraphBatch& b) { b.positions[4] = NAN; }, "position of node 1 is not finite"},
      {"infinite position", [](GraphBatch& b) { b.positions[0] = INFINITY; }, "node 0"},
      {"unknown species", [](GraphBatch& b) { b.species[2] = 7; }, "unknown species 7 at node 2"},
      {"positions size", [](GraphBatch& b) { b.positions.pop_back(); }, "3 numbers per node"},
      {"edge lists", [](GraphBatch& b) { b.edge_dst.pop_back(); }, "equal lengths"},
      {"graph_index size", [](GraphBatch& b) { b.graph_index.pop_back(); }, "one entry per node"},
      {"graph_index range", [](GraphBatch& b) { b.graph_index[0] = 2; }, "graph_index 2 of node 0"},
      {"num_graphs", [](GraphBatch& b) { b.num_graphs = -1; }, "num_graphs must be in [0, 1048576], got -1"},
      {"too many graphs", [](GraphBatch& b) { b.num_graphs = kMaxGraphs + 1; }, "num_graphs must be in"},
  };
  for (const Case& c : cases) {
    GraphBatch bad = good;
    c.breaks(bad);
    absl::Status status = ValidateGraphBatch(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(status.message().find(c.message), std::string::npos) << c.what << ": " << status.message();
    EXPECT_EQ(network->Predict(params, bad).status().code(), absl::StatusCode::kInvalidArgument) << c.what;
  }
  std::vector<double> short_params(params.begin(), params.end() - 1);
  EXPECT_EQ(network->Predict(short_params, good).status().code(), absl::StatusCode::kInvalidArgument);
  auto wrong_targets = network->LossGradient(params, good, std::vector<double>(3));
  EXPECT_EQ(wrong_targets.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_targets.status().message().find("num_graphs * num_targets"), std::string::npos);
}

TEST_F(Qm9NetworkTest, BadConfigs_AreInvalidArgumentNamingTheField) {
  Qm9NetworkConfig config;
  config.lmax = 3;
  auto status = Qm9Network::Create(config, &backend_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("lmax"), std::string::npos) << status.message();
  config = {};
  config.mul = 0;
  EXPECT_NE(config.Validate().message().find("mul"), std::string::npos);
  config = {};
  config.max_radius = NAN;
  EXPECT_NE(config.Validate().message().find("max_radius"), std::string::npos);
  EXPECT_EQ(Qm9Network::Create(Qm9NetworkConfig{}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(Qm9NetworkTest, EmptyGraphsAndEdgelessNodes_GiveFiniteOutputs) {
  auto network = Qm9Network::Create(TinyConfig(1, 2, 2), &backend_);
  ASSERT_TRUE(network.ok()) << network.status();
  GraphBatch batch;
  batch.num_graphs = 2;  // graph 1 has no nodes; node 0 has no edges
  batch.species = {1};
  batch.positions = {0, 0, 0};
  batch.graph_index = {0};
  const std::vector<double> params = network->InitialParameters(3);
  auto result = network->LossGradient(params, batch, std::vector<double>(8, 1.0));
  ASSERT_TRUE(result.ok()) << result.status();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(result->predictions[4 + t], 0.0);
  for (double g : result->gradient) EXPECT_TRUE(std::isfinite(g));
}

TEST_F(Qm9NetworkTest, ConcurrentCallsOnOneNetwork_GiveTheSequentialResults) {
  CpuBackend backend(CpuBackendOptions{2});
  auto network = Qm9Network::Create(TinyConfig(2, 4, 3), &backend);
  ASSERT_TRUE(network.ok()) << network.status();
  std::mt19937_64 rng(9);
  std::vector<GraphBatch> batches;
  std::vector<std::vector<double>> params, targets;
  std::vector<LossAndGradient<double>> sequential;
  for (int i = 0; i < 4; ++i) {
    batches.push_back(RandomChainBatch(rng, 2, 6));
    params.push_back(network->InitialParameters(100 + i));
    targets.push_back(tpserve::testing::RandomNormal(8, rng));
    auto result = network->LossGradient(params[i], batches[i], targets[i]);
    ASSERT_TRUE(result.ok()) << result.status();
    sequential.push_back(*std::move(result));
  }
  std::vector<absl::StatusOr<LossAndGradient<double>>> concurrent(4, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  const Qm9Network copy = *network;  // copies share the structure
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      concurrent[i] = (i % 2 ? copy : *network).LossGradient(params[i], batches[i], targets[i]);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(concurrent[i].ok()) << concurrent[i].status();
    // equal up to rounding: the CPU backend's threads take paths in varying order
    EXPECT_NEAR(concurrent[i]->loss, sequential[i].loss, 1e-13 * std::abs(sequential[i].loss)) << i;
    EXPECT_LT(tpserve::testing::RelativeError(concurrent[i]->gradient, sequential[i].gradient), 1e-14) << i;
  }
}

TEST(SgdMomentumTest, Step_FollowsTorchSemantics) {
  std::vector<double> params = {1.0, -2.0}, velocity;
  const SgdMomentumOptions options{0.1, 0.9};
  SgdMomentumStep(params, velocity, {0.5, 1.0}, options);  // v = g
  EXPECT_DOUBLE_EQ(velocity[0], 0.5);
  EXPECT_DOUBLE_EQ(params[0], 1.0 - 0.1 * 0.5);
  SgdMomentumStep(params, velocity, {0.5, 1.0}, options);  // v = 0.9 v + g
  EXPECT_DOUBLE_EQ(velocity[1], 0.9 * 1.0 + 1.0);
  EXPECT_DOUBLE_EQ(params[1], -2.0 - 0.1 * 1.0 - 0.1 * 1.9);
}

TEST_F(Qm9NetworkTest, TrainingSteps_LowerTheLoss) {
  auto network = Qm9Network::Create(TinyConfig(1, 4, 3), &backend_);
  ASSERT_TRUE(network.ok()) << network.status();
  std::mt19937_64 rng(5);
  const GraphBatch batch = RandomChainBatch(rng, 4, 6);
  std::vector<double> params = network->InitialParameters(11), velocity;
  const std::vector<double> targets = tpserve::testing::RandomNormal(16, rng);
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    auto result = network->LossGradient(params, batch, targets);
    ASSERT_TRUE(result.ok()) << result.status();
    (step == 0 ? first : last) = result->loss;
    SgdMomentumStep(params, velocity, result->gradient, SgdMomentumOptions{});
  }
  EXPECT_LT(last, 0.7 * first);
}

TEST(TrainingStepFlopsTest, GrowsWithTheBatchAndTheWidth) {
  Qm9NetworkConfig config;
  const double base = TrainingStepFlops(config, 486, 950);
  EXPECT_GT(base, 1e9);
  EXPECT_GT(TrainingStepFlops(config, 972, 1900), 1.9 * base);
  const double predict = PredictFlops(config, 486, 950);
  EXPECT_GT(base, 2.5 * predict);  // backward costs about twice the forward pass
  EXPECT_LT(base, 3.5 * predict);
  const double bytes = TrainingStepBytes(config, 486, 950, 4);
  auto network = Qm9Network::Create(config, nullptr);
  EXPECT_FALSE(network.ok());  // (Create needs a backend; the floors do not)
  config.mul = 256;
  EXPECT_GT(TrainingStepFlops(config, 486, 950), 3 * base);
  EXPECT_GT(TrainingStepBytes(config, 486, 950, 4), 3 * bytes);
  config.lmax = 7;
  EXPECT_EQ(TrainingStepFlops(config, 486, 950), 0);
}

}  // namespace
}  // namespace tpserve::nn
