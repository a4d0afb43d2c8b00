// The QM9 network against e3nn (PyTorch): the cases tools/qm9_reference/qm9_reference.py wrote
// (tests/data/qm9/*.json): layout, irreps, normalization constants, per-layer features,
// predictions, loss and the gradient of every parameter block.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "nn/activation.h"
#include "nn/qm9_network.h"
#include "nn/qm9_structure.h"
#include "tests/support/random.h"

namespace tpserve::nn {
namespace {

using nlohmann::json;
using tpserve::testing::RelativeError;

std::vector<std::filesystem::path> CaseFiles() {
  std::vector<std::filesystem::path> files;
  const std::filesystem::path dir = TPSERVE_QM9_DATA_DIR;
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

Qm9NetworkConfig ConfigFrom(const json& j) {
  Qm9NetworkConfig config;
  config.lmax = j.at("lmax");
  config.mul = j.at("mul");
  config.layers = j.at("layers");
  config.num_elements = j.at("num_elements");
  config.num_targets = j.at("num_targets");
  config.num_basis = j.at("num_basis");
  config.max_radius = j.at("max_radius");
  config.radial_hidden = j.at("radial_hidden");
  config.radial_layers = j.at("radial_layers");
  config.num_neighbors = j.at("num_neighbors");
  return config;
}

GraphBatch BatchFrom(const json& j) {
  GraphBatch batch;
  batch.species = j.at("species").get<std::vector<int32_t>>();
  batch.positions = j.at("positions").get<std::vector<double>>();
  batch.edge_src = j.at("edge_src").get<std::vector<int32_t>>();
  batch.edge_dst = j.at("edge_dst").get<std::vector<int32_t>>();
  batch.graph_index = j.at("graph_index").get<std::vector<int32_t>>();
  batch.num_graphs = j.at("num_graphs");
  return batch;
}

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
  for (const ParameterBlock& block : network.parameter_layout()) {
    const std::vector<double> a(got.begin() + block.offset, got.begin() + block.offset + block.numel);
    const std::vector<double> b(want.begin() + block.offset, want.begin() + block.offset + block.numel);
    const double error = RelativeError(a, b);
    EXPECT_LT(error, tolerance) << block.name;
    worst = std::max(worst, error);
  }
  return worst;
}

void CheckFloat64(const Qm9Network& network, const json& c, const GraphBatch& batch) {
  const std::vector<double> params = c.at("params").get<std::vector<double>>();
  const std::vector<double> targets = c.at("targets").get<std::vector<double>>();
  auto features = network.LayerFeatures(params, batch);
  ASSERT_TRUE(features.ok()) << features.status();
  ASSERT_EQ(features->size(), c.at("layer_features").size());
  for (size_t l = 0; l < features->size(); ++l) {
    EXPECT_LT(RelativeError((*features)[l], c.at("layer_features")[l].get<std::vector<double>>()), 1e-12)
        << "features after Conv+Gate " << l;
  }
  auto result = network.LossGradient(params, batch, targets);
  ASSERT_TRUE(result.ok()) << result.status();
  const double prediction_error = RelativeError(result->predictions, c.at("predictions").get<std::vector<double>>());
  EXPECT_LT(prediction_error, 1e-12);
  EXPECT_NEAR(result->loss, c.at("loss").get<double>(), 1e-12 * std::abs(c.at("loss").get<double>()));
  const double gradient_error =
      ExpectGradientMatches(network, result->gradient, c.at("gradient").get<std::vector<double>>(), 1e-12);
  std::printf("  %s: predictions %.1e, worst gradient block %.1e (relative)\n",
              c.at("name").get<std::string>().c_str(), prediction_error, gradient_error);
}

void CheckFloat32(const Qm9Network& network, const json& c, const GraphBatch& batch) {
  const std::vector<double> params = c.at("params").get<std::vector<double>>();
  const std::vector<double> targets = c.at("targets").get<std::vector<double>>();
  auto result = network.LossGradient(std::vector<float>(params.begin(), params.end()), batch,
                                     std::vector<float>(targets.begin(), targets.end()));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<double> predictions(result->predictions.begin(), result->predictions.end());
  const double prediction_error = RelativeError(predictions, c.at("predictions").get<std::vector<double>>());
  EXPECT_LT(prediction_error, 1e-4);
  EXPECT_NEAR(result->loss, c.at("loss").get<double>(), 1e-4 * std::abs(c.at("loss").get<double>()));
  const double gradient_error =
      ExpectGradientMatches(network, result->gradient, c.at("gradient").get<std::vector<double>>(), 1e-4);
  std::printf("  %s (ours fp32 CPU vs e3nn fp32 %s): predictions %.1e, worst gradient block %.1e\n",
              c.at("name").get<std::string>().c_str(), c.at("device").get<std::string>().c_str(), prediction_error,
              gradient_error);
}

TEST(Qm9ReferenceTest, MatchesE3nnCases) {
  const std::vector<std::filesystem::path> files = CaseFiles();
  if (files.empty()) GTEST_SKIP() << "no reference cases under " << TPSERVE_QM9_DATA_DIR;
  CpuBackend backend(CpuBackendOptions{2});
  for (const std::filesystem::path& file : files) {
    SCOPED_TRACE(file.filename().string());
    std::ifstream in(file);
    const json c = json::parse(in);
    ASSERT_EQ(c.at("format").get<std::string>(), "tpserve-qm9-reference-1");
    auto network = Qm9Network::Create(ConfigFrom(c.at("config")), &backend);
    ASSERT_TRUE(network.ok()) << network.status();
    ExpectStructureMatches(*network, c);
    const GraphBatch batch = BatchFrom(c.at("graphs"));
    if (c.at("dtype") == "float64") {
      CheckFloat64(*network, c, batch);
    } else {
      CheckFloat32(*network, c, batch);
    }
  }
}

}  // namespace
}  // namespace tpserve::nn
