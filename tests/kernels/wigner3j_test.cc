// Tests of kernels/core/wigner3j.h: e3nn's values for l <= 3, unit norm, orthogonality, the
// errors, and equivariance under real-basis Wigner D matrices built independently
// (tests/support/wigner_d.h) for every l up to 11 and a sample up to kMaxWigner3jL.
#include "kernels/core/wigner3j.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"
#include "tests/support/wigner_d.h"

namespace tpserve {
namespace {

using testing::Axis;
using testing::Rotation;

bool Triangle(int l1, int l2, int l3) { return std::abs(l1 - l2) <= l3 && l3 <= l1 + l2; }

// Every (l1, l2, l3) with each l <= max_l allowed by the triangle rule.
std::vector<std::tuple<int, int, int>> AllTriples(int max_l) {
  std::vector<std::tuple<int, int, int>> triples;
  for (int l1 = 0; l1 <= max_l; ++l1)
    for (int l2 = 0; l2 <= max_l; ++l2)
      for (int l3 = 0; l3 <= max_l; ++l3)
        if (Triangle(l1, l2, l3)) triples.emplace_back(l1, l2, l3);
  return triples;
}

// A few triples with large l, up to kMaxWigner3jL.
std::vector<std::tuple<int, int, int>> HighTriples() {
  const int m = kMaxWigner3jL;
  return {{m, m, m}, {m, m, 0}, {m, m, m - 1}, {m, 1, m - 1}, {12, 13, 14}, {16, 8, 9},
          {14, 15, 1}, {13, 3, 16}, {0, m, m}, {m, 0, m}, {15, 15, 16}, {12, 12, 12}};
}

TEST(Wigner3j, MatchesE3nnReferenceUpToL3) {
  auto blocks = testing::LoadReferenceWigner3j();
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  // The file covers every triangle-allowed triple with l <= 3.
  EXPECT_EQ(blocks->size(), AllTriples(3).size());
  std::set<std::tuple<int, int, int>> seen;
  for (const auto& [key, want] : *blocks) {
    SCOPED_TRACE(absl::StrCat("(l1,l2,l3) = ", key));
    std::vector<std::string> parts = absl::StrSplit(key, ',');
    ASSERT_EQ(parts.size(), 3u);
    int l1, l2, l3;
    ASSERT_TRUE(absl::SimpleAtoi(parts[0], &l1) && absl::SimpleAtoi(parts[1], &l2) && absl::SimpleAtoi(parts[2], &l3));
    seen.emplace(l1, l2, l3);
    absl::StatusOr<std::vector<double>> got = Wigner3j(l1, l2, l3);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want.size());
    ASSERT_EQ(got->size(), static_cast<size_t>((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1)));
    double max_abs_diff = 0;
    size_t worst = 0;
    for (size_t idx = 0; idx < want.size(); ++idx) {
      const double diff = std::abs((*got)[idx] - want[idx]);
      if (!(diff <= max_abs_diff)) {
        max_abs_diff = diff;
        worst = idx;
      }
    }
    EXPECT_LE(max_abs_diff, 1e-12) << "worst at flat index " << worst << ": got " << (*got)[worst] << ", e3nn "
                                   << want[worst];
  }
  EXPECT_EQ(seen.size(), blocks->size()) << "duplicate keys in wigner3j_l3.json";
}

TEST(Wigner3j, HasUnitFrobeniusNorm) {
  auto triples = AllTriples(11);
  for (const auto& t : HighTriples()) triples.push_back(t);
  for (const auto& [l1, l2, l3] : triples) {
    absl::StatusOr<std::vector<double>> c = Wigner3j(l1, l2, l3);
    ASSERT_TRUE(c.ok()) << c.status();
    double norm_squared = 0;
    for (double v : *c) norm_squared += v * v;
    EXPECT_NEAR(norm_squared, 1.0, 1e-13) << "(" << l1 << "," << l2 << "," << l3 << ")";
  }
}

// sum_ij C[i,j,k] C[i,j,k'] = delta_kk' / (2 l3 + 1).
void ExpectOrthogonal(int l1, int l2, int l3) {
  SCOPED_TRACE(absl::StrCat("(l1,l2,l3) = (", l1, ",", l2, ",", l3, ")"));
  absl::StatusOr<std::vector<double>> c = Wigner3j(l1, l2, l3);
  ASSERT_TRUE(c.ok()) << c.status();
  const int d12 = (2 * l1 + 1) * (2 * l2 + 1), d3 = 2 * l3 + 1;
  double worst = 0;
  for (int k = 0; k < d3; ++k)
    for (int kp = 0; kp < d3; ++kp) {
      double sum = 0;
      for (int ij = 0; ij < d12; ++ij) sum += (*c)[ij * d3 + k] * (*c)[ij * d3 + kp];
      const double want = (k == kp) ? 1.0 / d3 : 0.0;
      worst = std::max(worst, std::abs(sum - want));
    }
  EXPECT_LE(worst, 1e-13);
}

TEST(Wigner3j, IsOrthogonalForEveryTripleUpToL11) {
  for (const auto& [l1, l2, l3] : AllTriples(11)) ExpectOrthogonal(l1, l2, l3);
}

TEST(Wigner3j, IsOrthogonalForSampledTriplesUpToMaxL) {
  for (const auto& [l1, l2, l3] : HighTriples()) ExpectOrthogonal(l1, l2, l3);
}

TEST(Wigner3j, ZeroWithLIsScaledIdentity) {
  // 0 (x) l -> l is the identity map up to normalization (and sign).
  for (int l = 0; l <= 11; ++l) {
    absl::StatusOr<std::vector<double>> c = Wigner3j(0, l, l);
    ASSERT_TRUE(c.ok()) << c.status();
    const int n = 2 * l + 1;
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < n; ++k)
        EXPECT_NEAR(std::abs((*c)[j * n + k]), j == k ? 1.0 / std::sqrt(n) : 0.0, 1e-14) << "l=" << l;
  }
}

TEST(Wigner3j, RejectsTriangleRuleViolations) {
  for (const auto& [l1, l2, l3] : std::vector<std::tuple<int, int, int>>{
           {1, 1, 3}, {0, 1, 2}, {2, 0, 1}, {5, 1, 3}, {1, 5, 3}, {3, 4, 8}, {11, 11, 23}, {0, 0, 1}}) {
    absl::StatusOr<std::vector<double>> c = Wigner3j(l1, l2, l3);
    ASSERT_FALSE(c.ok()) << "(" << l1 << "," << l2 << "," << l3 << ") returned a block";
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find("expected"), absl::string_view::npos) << c.status();
  }
}

TEST(Wigner3j, RejectsLBeyondMaxAndNegativeL) {
  const int m = kMaxWigner3jL;
  for (const auto& [l1, l2, l3] : std::vector<std::tuple<int, int, int>>{
           {m + 1, 0, m + 1}, {0, m + 1, m + 1}, {m + 1, m + 1, 0}, {m, 1, m + 1}, {-1, 1, 0}, {1, -1, 1}, {1, 1, -1}}) {
    absl::StatusOr<std::vector<double>> c = Wigner3j(l1, l2, l3);
    ASSERT_FALSE(c.ok()) << "(" << l1 << "," << l2 << "," << l3 << ") returned a block";
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(Wigner3j(m, m, m).ok());
}

TEST(Wigner3jNonzeros, ListsEveryNonzeroInOrderAndReconstructsTheBlock) {
  for (const auto& [l1, l2, l3] : std::vector<std::tuple<int, int, int>>{{1, 1, 0}, {2, 3, 4}, {5, 5, 2}, {7, 4, 6}}) {
    absl::StatusOr<std::vector<double>> c = Wigner3j(l1, l2, l3);
    ASSERT_TRUE(c.ok());
    const std::vector<Wigner3jEntry> entries = Wigner3jNonzeros(*c, l1, l2, l3);
    const int d2 = 2 * l2 + 1, d3 = 2 * l3 + 1;
    std::vector<double> rebuilt(c->size(), 0.0);
    int64_t previous = -1;
    for (const Wigner3jEntry& e : entries) {
      const int64_t flat = (int64_t{e.i} * d2 + e.j) * d3 + e.k;
      EXPECT_GT(flat, previous) << "not in (i, j, k) order";
      previous = flat;
      ASSERT_LT(flat, static_cast<int64_t>(c->size()));
      EXPECT_EQ(e.value, (*c)[flat]);
      rebuilt[flat] = e.value;
    }
    size_t significant = 0;
    for (size_t idx = 0; idx < c->size(); ++idx) {
      EXPECT_LE(std::abs(rebuilt[idx] - (*c)[idx]), 1e-14);
      if (std::abs((*c)[idx]) > 1e-14) ++significant;
    }
    EXPECT_EQ(entries.size(), significant);
    EXPECT_LT(entries.size(), c->size()) << "3j blocks are sparse";
  }
}

// --- The independent D matrices (tests/support/wigner_d) ---------------------------------------

TEST(WignerD, GeneratorsAreRealAntisymmetricAndCloseTheAlgebra) {
  for (int l = 0; l <= kMaxWigner3jL; ++l) {
    SCOPED_TRACE(absl::StrCat("l=", l));
    const int n = 2 * l + 1;
    double max_imaginary = -1;
    const std::vector<std::vector<double>> a = testing::RealGenerators(l, &max_imaginary);
    EXPECT_LE(max_imaginary, 1e-12) << "change of basis does not give real generators";
    ASSERT_EQ(a.size(), 3u);
    for (const auto& g : a)
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) EXPECT_NEAR(g[i * n + j], -g[j * n + i], 1e-13);
    // [A_x, A_y] = A_z and cyclic.
    for (int axis = 0; axis < 3; ++axis) {
      const auto& p = a[axis];
      const auto& q = a[(axis + 1) % 3];
      const auto& r = a[(axis + 2) % 3];
      const std::vector<double> pq = testing::MatMul(p, q, n), qp = testing::MatMul(q, p, n);
      for (int k = 0; k < n * n; ++k) EXPECT_NEAR(pq[k] - qp[k], r[k], 1e-12) << "axis " << axis;
    }
    // Casimir: A_x^2 + A_y^2 + A_z^2 = -l(l+1) I.
    std::vector<double> casimir(n * n, 0.0);
    for (const auto& g : a) {
      const std::vector<double> g2 = testing::MatMul(g, g, n);
      for (int k = 0; k < n * n; ++k) casimir[k] += g2[k];
    }
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) EXPECT_NEAR(casimir[i * n + j], i == j ? -l * (l + 1.0) : 0.0, 1e-10 * (l + 1) * (l + 1));
  }
}

TEST(WignerD, MatrixExponentialComposesAndIsOrthogonal) {
  uint64_t seed = 0;
  std::mt19937_64 rng = testing::FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::uniform_real_distribution<double> angle(-3.2, 3.2);
  for (int l : {1, 2, 5, 11, 16}) {
    const int n = 2 * l + 1;
    const auto a = testing::RealGenerators(l);
    for (int axis = 0; axis < 3; ++axis) {
      const double t1 = angle(rng), t2 = angle(rng);
      auto scaled = [&](double t) {
        std::vector<double> m = a[axis];
        for (double& v : m) v *= t;
        return testing::MatrixExponential(m, n);
      };
      const std::vector<double> d12 = testing::MatMul(scaled(t1), scaled(t2), n), d = scaled(t1 + t2);
      for (int k = 0; k < n * n; ++k) EXPECT_NEAR(d12[k], d[k], 1e-12) << "l=" << l << " axis=" << axis;
    }
    const Rotation r = testing::RandomRotation(rng);
    const std::vector<double> d = testing::WignerD(l, r);
    const std::vector<double> dtd = testing::MatMul(testing::Transpose(d, n), d, n);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) EXPECT_NEAR(dtd[i * n + j], i == j ? 1.0 : 0.0, 1e-12) << "l=" << l;
    // A full turn about any axis is the identity (integer l).
    for (Axis axis : {Axis::kX, Axis::kY, Axis::kZ}) {
      const std::vector<double> full = testing::WignerD(l, Rotation{{{axis, 2 * M_PI}}, false});
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) EXPECT_NEAR(full[i * n + j], i == j ? 1.0 : 0.0, 1e-11) << "l=" << l;
    }
  }
}

double Det3(const std::vector<double>& m) {
  return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
}

// D^1 is the Cartesian rotation in e3nn's (y, z, x) order, up to a sign per axis and one global
// sign convention for the angle: D^1(R) = S R S^T with S a signed permutation taking (x, y, z)
// components to (y, z, x) positions.
TEST(WignerD, L1IsTheCartesianRotationInYZXOrder) {
  uint64_t seed = 0;
  std::mt19937_64 rng = testing::FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::uniform_real_distribution<double> angle(-3.0, 3.0);
  std::vector<std::pair<Axis, double>> samples;
  for (Axis axis : {Axis::kX, Axis::kY, Axis::kZ})
    for (int k = 0; k < 3; ++k) samples.emplace_back(axis, angle(rng));
  for (const auto& [axis, t] : samples) {
    const std::vector<double> d = testing::WignerD(1, Rotation{{{axis, t}}, false});
    EXPECT_NEAR(Det3(d), 1.0, 1e-13);
  }
  // S[row][col]: real index row = (y, z, x)[row] -> Cartesian col = (1, 2, 0)[row], with signs s.
  const int cartesian_of_row[3] = {1, 2, 0};
  int matches = 0;
  for (int signs = 0; signs < 8; ++signs) {
    for (double angle_sign : {1.0, -1.0}) {
      std::vector<double> s(9, 0.0);
      for (int row = 0; row < 3; ++row) s[row * 3 + cartesian_of_row[row]] = (signs >> row & 1) ? -1.0 : 1.0;
      bool all = true;
      for (const auto& [axis, t] : samples) {
        const std::vector<double> want =
            testing::MatMul(testing::MatMul(s, testing::CartesianRotation(axis, angle_sign * t), 3),
                            testing::Transpose(s, 3), 3);
        const std::vector<double> d = testing::WignerD(1, Rotation{{{axis, t}}, false});
        for (int k = 0; k < 9; ++k) all = all && std::abs(d[k] - want[k]) < 1e-12;
      }
      if (all) ++matches;
    }
  }
  // S and -S give the same conjugation, so exactly two sign patterns fit.
  EXPECT_EQ(matches, 2) << "D^1 is not a (y, z, x)-ordered Cartesian rotation";
}

// --- Equivariance -----------------------------------------------------------------------------

// max |sum_ijk C[i,j,k] D1[i,a] D2[j,b] D3[k,c] - C[a,b,c]| for a given block C.
double EquivarianceError(const std::vector<double>& c, int l1, int l2, int l3,
                         const std::vector<std::vector<double>>& ds) {
  const int n1 = 2 * l1 + 1, n2 = 2 * l2 + 1, n3 = 2 * l3 + 1;
  const std::vector<double>&d1 = ds[l1], &d2 = ds[l2], &d3 = ds[l3];
  // t1[a,j,k] = sum_i D1[i,a] C[i,j,k]
  std::vector<double> t1(c.size(), 0.0), t2(c.size(), 0.0), t3(c.size(), 0.0);
  for (int i = 0; i < n1; ++i)
    for (int a = 0; a < n1; ++a) {
      const double w = d1[i * n1 + a];
      for (int jk = 0; jk < n2 * n3; ++jk) t1[a * n2 * n3 + jk] += w * c[i * n2 * n3 + jk];
    }
  // t2[a,b,k] = sum_j D2[j,b] t1[a,j,k]
  for (int a = 0; a < n1; ++a)
    for (int j = 0; j < n2; ++j)
      for (int b = 0; b < n2; ++b) {
        const double w = d2[j * n2 + b];
        for (int k = 0; k < n3; ++k) t2[(a * n2 + b) * n3 + k] += w * t1[(a * n2 + j) * n3 + k];
      }
  // t3[a,b,c] = sum_k D3[k,c] t2[a,b,k]
  double worst = 0;
  for (int ab = 0; ab < n1 * n2; ++ab)
    for (int cc = 0; cc < n3; ++cc) {
      double sum = 0;
      for (int k = 0; k < n3; ++k) sum += d3[k * n3 + cc] * t2[ab * n3 + k];
      worst = std::max(worst, std::abs(sum - c[ab * n3 + cc]));
    }
  return worst;
}

double EquivarianceError(int l1, int l2, int l3, const std::vector<std::vector<double>>& ds) {
  absl::StatusOr<std::vector<double>> c = Wigner3j(l1, l2, l3);
  if (!c.ok()) return INFINITY;
  return EquivarianceError(*c, l1, l2, l3, ds);
}

TEST(Wigner3j, IsEquivariantForEveryTripleUpToL11) {
  uint64_t seed = 0;
  std::mt19937_64 rng = testing::FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  for (int trial = 0; trial < 2; ++trial) {
    const Rotation r = testing::RandomRotation(rng);
    const auto ds = testing::WignerDs(11, r);
    for (const auto& [l1, l2, l3] : AllTriples(11)) {
      EXPECT_LE(EquivarianceError(l1, l2, l3, ds), 1e-11) << "(" << l1 << "," << l2 << "," << l3 << ")";
    }
  }
}

TEST(Wigner3j, IsEquivariantForSampledTriplesUpToMaxL) {
  uint64_t seed = 0;
  std::mt19937_64 rng = testing::FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  const Rotation r = testing::RandomRotation(rng);
  const auto ds = testing::WignerDs(kMaxWigner3jL, r);
  for (const auto& [l1, l2, l3] : HighTriples()) {
    EXPECT_LE(EquivarianceError(l1, l2, l3, ds), 1e-10) << "(" << l1 << "," << l2 << "," << l3 << ")";
  }
}

// The equivariance check itself can fail: a block with one coefficient's sign flipped must not
// pass it, nor may the right block checked with one leg rotated the wrong way.
TEST(Wigner3j, EquivarianceCheckDetectsACorruptedBlock) {
  uint64_t seed = 0;
  std::mt19937_64 rng = testing::FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  const auto ds = testing::WignerDs(3, testing::RandomRotation(rng));
  absl::StatusOr<std::vector<double>> c = Wigner3j(2, 1, 3);
  ASSERT_TRUE(c.ok());
  EXPECT_LE(EquivarianceError(*c, 2, 1, 3, ds), 1e-12);
  std::vector<double> corrupted = *c;
  for (double& v : corrupted)
    if (std::abs(v) > 1e-3) {
      v = -v;
      break;
    }
  EXPECT_GT(EquivarianceError(corrupted, 2, 1, 3, ds), 1e-3);
  std::vector<std::vector<double>> inverse_leg = ds;
  inverse_leg[1] = testing::Transpose(ds[1], 3);
  EXPECT_GT(EquivarianceError(*c, 2, 1, 3, inverse_leg), 1e-3);
}

}  // namespace
}  // namespace tpserve
