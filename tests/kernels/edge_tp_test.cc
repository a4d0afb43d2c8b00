// Backend::EdgeForward / EdgeBackward on the CPU backend (the host default: gather, TP, scatter-sum)
// against one single-edge Forward / Backward per edge summed by hand, on a random graph with
// repeated sources and destinations and a node with no edges; bad indices and shapes.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/core/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/support/qm9_edge_plan.h"
#include "tests/support/random.h"

namespace tpserve {
namespace {

using testing::FreshRng;
using testing::Qm9EdgePlan;
using testing::RandomNormal;
using testing::RelativeError;

ConstTensorView In(const std::vector<double>& v, std::vector<int64_t> shape) {
  return {v.data(), DType::kFloat64, std::move(shape)};
}
TensorView Out(std::vector<double>& v, std::vector<int64_t> shape) { return {v.data(), DType::kFloat64, std::move(shape)}; }

// A random graph: num_edges edges among num_nodes nodes, node num_nodes - 1 on none of them.
struct Graph {
  std::vector<int32_t> src, dst;
  EdgeIndex index() const { return {src.data(), dst.data(), static_cast<int64_t>(src.size())}; }
};
Graph RandomGraph(int num_nodes, int num_edges, std::mt19937_64& rng) {
  Graph g;
  for (int e = 0; e < num_edges; ++e) {
    g.src.push_back(static_cast<int32_t>(rng() % (num_nodes - 1)));
    g.dst.push_back(static_cast<int32_t>(rng() % (num_nodes - 1)));
  }
  return g;
}

class EdgeTpTest : public ::testing::Test {
 protected:
  CpuBackend cpu_;
};

TEST_F(EdgeTpTest, ForwardAndBackward_MatchPerEdgeCallsSummedByHand) {
  uint64_t seed = 0;
  std::mt19937_64 rng = FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  const TensorProductPlan plan = Qm9EdgePlan(2, 3);
  auto prepared = cpu_.Prepare(plan);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const int nodes = 11, edges = 37;
  const Graph graph = RandomGraph(nodes, edges, rng);
  const int64_t d1 = plan.dim_in1(), d2 = plan.dim_in2(), dout = plan.dim_out(), wn = plan.weight_numel();
  const std::vector<double> w = RandomNormal(edges * wn, rng), x1 = RandomNormal(nodes * d1, rng),
                            x2 = RandomNormal(edges * d2, rng), g = RandomNormal(nodes * dout, rng);

  // By hand: one single-edge call per edge.
  std::vector<double> want_out(nodes * dout, 0.0), want_dw(edges * wn), want_dx1(nodes * d1, 0.0),
      want_dx2(edges * d2);
  for (int e = 0; e < edges; ++e) {
    const int64_t s = graph.src[e], t = graph.dst[e];
    std::vector<double> row(dout), dx1_row(d1);
    const ConstTensorView we{&w[e * wn], DType::kFloat64, {1, wn}}, x1e{&x1[s * d1], DType::kFloat64, {1, d1}},
        x2e{&x2[e * d2], DType::kFloat64, {1, d2}}, ge{&g[t * dout], DType::kFloat64, {1, dout}};
    ASSERT_TRUE(cpu_.Forward(**prepared, we, x1e, x2e, Out(row, {1, dout}), {}).ok());
    for (int64_t c = 0; c < dout; ++c) want_out[t * dout + c] += row[c];
    GradientOutputs grads{{&want_dw[e * wn], DType::kFloat64, {1, wn}}, Out(dx1_row, {1, d1}),
                          {&want_dx2[e * d2], DType::kFloat64, {1, d2}}};
    ASSERT_TRUE(cpu_.Backward(**prepared, we, x1e, x2e, ge, grads, {}).ok());
    for (int64_t c = 0; c < d1; ++c) want_dx1[s * d1 + c] += dx1_row[c];
  }

  std::vector<double> out(nodes * dout, NAN), dw(edges * wn, NAN), dx1(nodes * d1, NAN), dx2(edges * d2, NAN);
  ASSERT_TRUE(cpu_.EdgeForward(**prepared, In(w, {edges, wn}), In(x1, {nodes, d1}), In(x2, {edges, d2}),
                               graph.index(), Out(out, {nodes, dout}), {})
                  .ok());
  EXPECT_LE(RelativeError(out, want_out), 1e-12);
  for (int64_t c = 0; c < dout; ++c) EXPECT_EQ(out[(nodes - 1) * dout + c], 0.0) << "node without edges";
  ASSERT_TRUE(cpu_.EdgeBackward(**prepared, In(w, {edges, wn}), In(x1, {nodes, d1}), In(x2, {edges, d2}),
                                graph.index(), In(g, {nodes, dout}),
                                GradientOutputs{Out(dw, {edges, wn}), Out(dx1, {nodes, d1}), Out(dx2, {edges, d2})},
                                {})
                  .ok());
  EXPECT_LE(RelativeError(dw, want_dw), 1e-12);
  EXPECT_LE(RelativeError(dx1, want_dx1), 1e-12);
  EXPECT_LE(RelativeError(dx2, want_dx2), 1e-12);

  // grad_weight accumulated onto existing values.
  const std::vector<double> base = RandomNormal(edges * wn, rng);
  std::vector<double> acc = base;
  GradientOutputs acc_grads{Out(acc, {edges, wn}), {}, {}};
  acc_grads.accumulate_grad_weight = true;
  ASSERT_TRUE(cpu_.EdgeBackward(**prepared, In(w, {edges, wn}), In(x1, {nodes, d1}), In(x2, {edges, d2}),
                                graph.index(), In(g, {nodes, dout}), acc_grads, {})
                  .ok());
  for (size_t i = 0; i < acc.size(); ++i) acc[i] -= base[i];
  EXPECT_LE(RelativeError(acc, want_dw), 1e-12);
}

TEST_F(EdgeTpTest, NoEdges_ZeroesTheOutputs) {
  const TensorProductPlan plan = Qm9EdgePlan(1, 2);
  auto prepared = cpu_.Prepare(plan);
  ASSERT_TRUE(prepared.ok());
  std::mt19937_64 rng = FreshRng();
  const int64_t nodes = 4;
  // Per-edge tensors with no rows (one element each so that their data pointers are set).
  std::vector<double> w(1), x2(1), x1 = RandomNormal(nodes * plan.dim_in1(), rng);
  std::vector<double> out(nodes * plan.dim_out(), NAN), dx1(x1.size(), NAN), g(out.size(), 1.0);
  const EdgeIndex none{nullptr, nullptr, 0};
  ASSERT_TRUE(cpu_.EdgeForward(**prepared, In(w, {0, plan.weight_numel()}), In(x1, {nodes, plan.dim_in1()}),
                               In(x2, {0, plan.dim_in2()}), none, Out(out, {nodes, plan.dim_out()}), {})
                  .ok());
  for (double v : out) EXPECT_EQ(v, 0.0);
  ASSERT_TRUE(cpu_.EdgeBackward(**prepared, In(w, {0, plan.weight_numel()}), In(x1, {nodes, plan.dim_in1()}),
                                In(x2, {0, plan.dim_in2()}), none, In(g, {nodes, plan.dim_out()}),
                                GradientOutputs{{}, Out(dx1, {nodes, plan.dim_in1()}), {}}, {})
                  .ok());
  for (double v : dx1) EXPECT_EQ(v, 0.0);
}

TEST_F(EdgeTpTest, BadIndicesAndShapes_AreInvalidArgument) {
  const TensorProductPlan plan = Qm9EdgePlan(1, 2);
  auto prepared = cpu_.Prepare(plan);
  ASSERT_TRUE(prepared.ok());
  std::mt19937_64 rng(3);
  const int64_t nodes = 5, edges = 3;
  const std::vector<double> w = RandomNormal(edges * plan.weight_numel(), rng),
                            x1 = RandomNormal(nodes * plan.dim_in1(), rng), x2 = RandomNormal(edges * plan.dim_in2(), rng);
  std::vector<double> out(nodes * plan.dim_out());
  auto forward = [&](std::vector<int32_t> src, std::vector<int32_t> dst, int64_t x2_rows) {
    return cpu_.EdgeForward(**prepared, In(w, {edges, plan.weight_numel()}), In(x1, {nodes, plan.dim_in1()}),
                            In(x2, {x2_rows, plan.dim_in2()}), EdgeIndex{src.data(), dst.data(), edges},
                            Out(out, {nodes, plan.dim_out()}), {});
  };
  EXPECT_TRUE(forward({0, 1, 4}, {4, 0, 2}, edges).ok());
  absl::Status status = forward({0, 5, 1}, {0, 0, 0}, edges);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("src[1] = 5"), absl::string_view::npos) << status;
  status = forward({0, 1, 1}, {0, -1, 0}, edges);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("dst[1] = -1"), absl::string_view::npos) << status;
  status = forward({0, 1, 1}, {0, 1, 0}, edges - 1);  // x2 with one row too few
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("x2"), absl::string_view::npos) << status;
}

}  // namespace
}  // namespace tpserve
