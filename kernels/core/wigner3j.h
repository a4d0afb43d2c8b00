// Wigner 3j symbols in e3nn's real basis and sign convention.
//
// C[i][j][k] (i < 2l1+1, j < 2l2+1, k < 2l3+1) is the equivariant bilinear map
//   l1 (x) l2 -> l3, normalized so that sum_ijk C^2 = 1, exactly as e3nn's o3.wigner_3j:
// complex Clebsch-Gordan coefficients from the Racah formula, rotated to the real basis with
// e3nn's change of basis (which orders l=1 as (y, z, x)), then normalized. Computed on demand
// in extended precision; there are no tables.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve {

// Largest l that Wigner3j accepts. Accuracy was checked (orthogonality, equivariance) up to here.
inline constexpr int kMaxWigner3jL = 16;

// One nonzero of a 3j block: C[i][j][k] = value.
struct Wigner3jEntry {
  int16_t i, j, k;
  double value;
};

// Dense [2l1+1][2l2+1][2l3+1] block, C order. Error when (l1, l2, l3) violates the triangle
// rule or an l exceeds kMaxWigner3jL.
absl::StatusOr<std::vector<double>> Wigner3j(int l1, int l2, int l3);

// The nonzeros of a dense block (|value| > 1e-14), in (i, j, k) order.
std::vector<Wigner3jEntry> Wigner3jNonzeros(const std::vector<double>& dense, int l1, int l2, int l3);

}  // namespace tpserve
