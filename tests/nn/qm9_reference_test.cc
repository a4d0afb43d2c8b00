// The QM9 network against e3nn (PyTorch): the cases tools/qm9_reference/qm9_reference.py wrote
// (tests/data/qm9/*.json): layout, irreps, normalization constants, per-layer features,
// predictions, loss and the gradient of every parameter block.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "nn/activation.h"
#include "nn/qm9_network.h"
#include "nn/qm9_structure.h"
#include "tests/support/qm9_reference_case.h"
#include "tests/support/random.h"

namespace tpserve::nn {
namespace {

using nlohmann::json;
using tpserve::testing::Qm9ReferenceCase;
using tpserve::testing::RelativeError;

void ExpectStructureMatches(const Qm9Network& network, const json& c) {
  const std::vector<ParameterBlock> layout = network.parameter_layout();
  ASSERT_EQ(layout.size(), c.at("layout").size());
  for (size_t i = 0; i < layout.size(); ++i) {
    const json& want = c.at("layout")[i];
    EXPECT_EQ(layout[i].name, want.at("name").get<std::string>());
    EXPECT_EQ(layout[i].offset, want.at("offset").get<int64_t>()) << layout[i].name;
    EXPECT_EQ(layout[i].shape, want.at("shape").get<std::vector<int64_t>>()) << layout[i].name;
  }
  EXPECT_EQ(network.num_parameters(), c.at("num_parameters").get<int64_t>());
  const auto& convs = network.structure().convs;
  ASSERT_EQ(convs.size(), c.at("layer_irreps").size());
  for (size_t l = 0; l < convs.size(); ++l) {
    const json& want = c.at("layer_irreps")[l];
    EXPECT_EQ(convs[l].irreps_in().ToString(), want.at("input").get<std::string>()) << "layer " << l;
    EXPECT_EQ(convs[l].irreps_out().ToString(), want.at("conv_out").get<std::string>()) << "layer " << l;
    EXPECT_EQ(convs[l].irreps_mid().ToString(), want.at("mid").get<std::string>()) << "layer " << l;
  }
  const json& constants = c.at("constants").at("normalize2mom_exact");
  EXPECT_NEAR(SecondMomentConstant(Activation::kGelu), constants.at("gelu").get<double>(), 1e-14);
  EXPECT_NEAR(SecondMomentConstant(Activation::kTanh), constants.at("tanh").get<double>(), 1e-14);
  EXPECT_NEAR(SecondMomentConstant(Activation::kSigmoid), constants.at("sigmoid").get<double>(), 1e-14);
}

// Gradient block by block: relative error of each block (Euclidean norms) below tolerance.
// Returns the largest block error (printed per case).
template <class T>
double ExpectGradientMatches(const Qm9Network& network, const std::vector<T>& got, const std::vector<double>& want,
                             double tolerance) {
  double worst = 0;
  for (const auto& block : tpserve::testing::GradientBlockErrors(network.parameter_layout(),
                                                                 std::vector<double>(got.begin(), got.end()), want)) {
    EXPECT_LT(block.relative_error, tolerance) << block.name;
    worst = std::max(worst, block.relative_error);
  }
  return worst;
}

void CheckFloat64(const Qm9Network& network, const Qm9ReferenceCase& c) {
  auto features = network.LayerFeatures(c.params, c.batch);
  ASSERT_TRUE(features.ok()) << features.status();
  ASSERT_EQ(features->size(), c.json.at("layer_features").size());
  for (size_t l = 0; l < features->size(); ++l) {
    EXPECT_LT(RelativeError((*features)[l], c.json.at("layer_features")[l].get<std::vector<double>>()), 1e-12)
        << "features after Conv+Gate " << l;
  }
  auto result = network.LossGradient(c.params, c.batch, c.targets);
  ASSERT_TRUE(result.ok()) << result.status();
  const double prediction_error = RelativeError(result->predictions, c.predictions);
  EXPECT_LT(prediction_error, 1e-12);
  EXPECT_NEAR(result->loss, c.loss, 1e-12 * std::abs(c.loss));
  const double gradient_error = ExpectGradientMatches(network, result->gradient, c.gradient, 1e-12);
  std::printf("  %s: predictions %.1e, worst gradient block %.1e (relative)\n", c.name.c_str(), prediction_error,
              gradient_error);
}

void CheckFloat32(const Qm9Network& network, const Qm9ReferenceCase& c) {
  auto result = network.LossGradient(std::vector<float>(c.params.begin(), c.params.end()), c.batch,
                                     std::vector<float>(c.targets.begin(), c.targets.end()));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<double> predictions(result->predictions.begin(), result->predictions.end());
  const double prediction_error = RelativeError(predictions, c.predictions);
  EXPECT_LT(prediction_error, 1e-4);
  EXPECT_NEAR(result->loss, c.loss, 1e-4 * std::abs(c.loss));
  const double gradient_error = ExpectGradientMatches(network, result->gradient, c.gradient, 1e-4);
  std::printf("  %s (ours fp32 CPU vs e3nn fp32 %s): predictions %.1e, worst gradient block %.1e\n", c.name.c_str(),
              c.device.c_str(), prediction_error, gradient_error);
}

TEST(Qm9ReferenceTest, MatchesE3nnCases) {
  const std::vector<std::filesystem::path> files = tpserve::testing::Qm9ReferenceCaseFiles();
  if (files.empty()) GTEST_SKIP() << "no reference cases under " << tpserve::testing::Qm9ReferenceDir();
  CpuBackend backend(CpuBackendOptions{2});
  for (const std::filesystem::path& file : files) {
    SCOPED_TRACE(file.filename().string());
    auto c = tpserve::testing::LoadQm9ReferenceCase(file);
    ASSERT_TRUE(c.ok()) << c.status();
    auto network = Qm9Network::Create(c->config, &backend);
    ASSERT_TRUE(network.ok()) << network.status();
    ExpectStructureMatches(*network, c->json);
    if (c->dtype == "float64") {
      CheckFloat64(*network, *c);
    } else {
      CheckFloat32(*network, *c);
    }
  }
}

}  // namespace
}  // namespace tpserve::nn
