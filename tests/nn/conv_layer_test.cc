// ConvLayer: the per-species FCTPs (species_fctp.h) give what the dense products with the one-hot
// attributes give, forward and backward.
#include "nn/conv_layer.h"

#include <cmath>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nn/radial.h"
#include "nn/random_batch.h"
#include "nn/spherical_harmonics.h"
#include "tests/support/random.h"

namespace tpserve::nn {
namespace {

using tpserve::testing::RandomNormal;
using tpserve::testing::RelativeError;

TEST(ConvLayerTest, PerSpeciesProducts_MatchTheDenseOnes) {
  uint64_t seed;
  std::mt19937_64 rng = tpserve::testing::FreshRng(&seed);
  SCOPED_TRACE(seed);
  CpuBackend backend(CpuBackendOptions{1});
  ConvLayerOptions options;
  options.irreps_in = *Irreps::Parse("3x0e+2x1o+2x1e+1x2e");
  options.irreps_out = *Irreps::Parse("2x0o+5x0e+3x1o+2x1e");
  options.irreps_attr = *Irreps::Parse("5x0e");
  options.irreps_sh = *Irreps::Parse("1x0e+1x1o+1x2e");
  options.radial_hidden = {6};
  options.attr_value = std::sqrt(5.0);
  auto layer = ConvLayer::Create(options, &backend);
  ASSERT_TRUE(layer.ok()) << layer.status();

  const GraphBatch batch = RandomChainBatch(rng, 2, 8);
  const int64_t n = batch.num_nodes(), e = batch.num_edges();
  ASSERT_GT(e, 0);
  std::vector<double> attr(n * 5, 0.0), vectors(e * 3), lengths(e), sh(e * 9), basis(e * 10);
  NodesBySpecies groups(5);
  for (int64_t node = 0; node < n; ++node) {
    attr[node * 5 + batch.species[node]] = std::sqrt(5.0);
    groups[batch.species[node]].push_back(static_cast<int32_t>(node));
  }
  for (int64_t k = 0; k < e; ++k) {
    for (int a = 0; a < 3; ++a) {
      vectors[3 * k + a] = batch.positions[3 * batch.edge_dst[k] + a] - batch.positions[3 * batch.edge_src[k] + a];
    }
    lengths[k] = std::hypot(vectors[3 * k], vectors[3 * k + 1], vectors[3 * k + 2]);
  }
  SphericalHarmonics(2, vectors.data(), e, sh.data());
  SmoothFiniteBasis(lengths.data(), e, 10, 1.9, RadialBasisScale(), basis.data());
  const std::vector<double> x = RandomNormal(n * options.irreps_in.dim(), rng);
  const std::vector<double> params = RandomNormal(layer->num_parameters(), rng);
  const std::vector<double> grad_out = RandomNormal(n * options.irreps_out.dim(), rng);

  ConvInputs<double> in{n, e, x.data(), attr.data(), batch.edge_src.data(), batch.edge_dst.data(), sh.data(),
                        basis.data(), nullptr};
  std::vector<double> out[2], grad_params[2], grad_x[2];
  for (int mode = 0; mode < 2; ++mode) {
    in.nodes_by_species = mode == 0 ? nullptr : &groups;
    ConvCache<double> cache;
    out[mode].resize(n * options.irreps_out.dim());
    grad_params[mode].assign(params.size(), 0.0);
    grad_x[mode].resize(x.size());
    ASSERT_TRUE(layer->Forward(params.data(), in, &cache, out[mode].data()).ok());
    ASSERT_TRUE(
        layer->Backward(params.data(), in, cache, grad_out.data(), grad_params[mode].data(), grad_x[mode].data()).ok());
  }
  EXPECT_LT(RelativeError(out[1], out[0]), 1e-14);
  EXPECT_LT(RelativeError(grad_params[1], grad_params[0]), 1e-14);
  EXPECT_LT(RelativeError(grad_x[1], grad_x[0]), 1e-14);
  double scale = 0;
  for (double v : out[0]) scale = std::max(scale, std::abs(v));
  EXPECT_GT(scale, 1e-3);
}

}  // namespace
}  // namespace tpserve::nn
