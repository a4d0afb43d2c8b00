#include "kernels/core/wigner3j.h"

#include <cmath>
#include <complex>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tpserve {
namespace {

using Real = long double;  // 64-bit mantissa: the Racah sum cancels a few digits at high l.
using Complex = std::complex<Real>;

Real Factorial(int n) {
  Real result = 1;
  for (int i = 2; i <= n; ++i) result *= i;
  return result;
}

// Complex-basis Clebsch-Gordan coefficient <l1 m1; l2 m2 | l3 m3> (Racah's formula).
Real ClebschGordan(int l1, int m1, int l2, int m2, int l3, int m3) {
  if (m3 != m1 + m2) return 0;
  const int v_min = std::max({-l1 + l2 + m3, -l1 + m1, 0});
  const int v_max = std::min({l2 + l3 + m1, l3 - l1 + l2, l3 + m3});
  const Real prefactor = std::sqrt(
      (2 * l3 + 1) * Factorial(l3 + l1 - l2) * Factorial(l3 - l1 + l2) * Factorial(l1 + l2 - l3) *
      Factorial(l3 + m3) * Factorial(l3 - m3) /
      (Factorial(l1 + l2 + l3 + 1) * Factorial(l1 - m1) * Factorial(l1 + m1) * Factorial(l2 - m2) *
       Factorial(l2 + m2)));
  Real sum = 0;
  for (int v = v_min; v <= v_max; ++v) {
    const Real sign = ((v + l2 + m2) % 2 == 0) ? 1 : -1;
    sum += sign * Factorial(l2 + l3 + m1 - v) * Factorial(l1 - m1 + v) /
           (Factorial(v) * Factorial(l3 - l1 + l2 - v) * Factorial(l3 + m3 - v) * Factorial(v + l1 - l2 - m3));
  }
  return prefactor * sum;
}

// e3nn's change_basis_real_to_complex(l): Q[row][col], row indexed like the complex basis
// (contracted with the Clebsch-Gordan index), col the real basis; scaled by (-i)^l so that
// the rotated coefficients come out real.
std::vector<Complex> ChangeOfBasis(int l) {
  const int d = 2 * l + 1;
  std::vector<Complex> q(d * d);
  const Real h = 1 / std::sqrt(Real{2});
  for (int m = -l; m < 0; ++m) {
    q[(l + m) * d + (l - m)] = Complex(h, 0);
    q[(l + m) * d + (l + m)] = Complex(0, -h);
  }
  q[l * d + l] = 1;
  for (int m = 1; m <= l; ++m) {
    const Real s = (m % 2 == 0) ? 1 : -1;
    q[(l + m) * d + (l + m)] = Complex(s * h, 0);
    q[(l + m) * d + (l - m)] = Complex(0, s * h);
  }
  Complex phase = 1;
  for (int i = 0; i < l; ++i) phase *= Complex(0, -1);
  for (Complex& value : q) value *= phase;
  return q;
}

}  // namespace

absl::StatusOr<std::vector<double>> Wigner3j(int l1, int l2, int l3) {
  if (l1 < 0 || l2 < 0 || l3 < 0 || l1 > kMaxWigner3jL || l2 > kMaxWigner3jL || l3 > kMaxWigner3jL) {
    return absl::InvalidArgumentError(absl::StrCat("wigner_3j(", l1, ", ", l2, ", ", l3,
                                                   "): expected every l in [0, ", kMaxWigner3jL, "]"));
  }
  if (l3 < std::abs(l1 - l2) || l3 > l1 + l2) {
    return absl::InvalidArgumentError(absl::StrCat("wigner_3j(", l1, ", ", l2, ", ", l3,
                                                   "): expected |l1 - l2| <= l3 <= l1 + l2"));
  }
  const int d1 = 2 * l1 + 1, d2 = 2 * l2 + 1, d3 = 2 * l3 + 1;
  const std::vector<Complex> q1 = ChangeOfBasis(l1), q2 = ChangeOfBasis(l2), q3 = ChangeOfBasis(l3);
  // real[a][b][c] = sum_{i,k,n} Q1[i][a] Q2[k][b] conj(Q3[n][c]) CG[i][k][n]; each Q row has
  // at most two nonzeros, so loop over the nonzeros only.
  std::vector<Complex> real(static_cast<size_t>(d1) * d2 * d3);
  for (int m1 = -l1; m1 <= l1; ++m1) {
    for (int m2 = -l2; m2 <= l2; ++m2) {
      const int m3 = m1 + m2;
      if (std::abs(m3) > l3) continue;
      const Real cg = ClebschGordan(l1, m1, l2, m2, l3, m3);
      if (cg == 0) continue;
      const int i = l1 + m1, k = l2 + m2, n = l3 + m3;
      for (int a = 0; a < d1; ++a) {
        const Complex qa = q1[i * d1 + a];
        if (qa == Complex(0)) continue;
        for (int b = 0; b < d2; ++b) {
          const Complex qb = q2[k * d2 + b];
          if (qb == Complex(0)) continue;
          for (int c = 0; c < d3; ++c) {
            const Complex qc = q3[n * d3 + c];
            if (qc == Complex(0)) continue;
            real[(static_cast<size_t>(a) * d2 + b) * d3 + c] += qa * qb * std::conj(qc) * cg;
          }
        }
      }
    }
  }
  Real norm_squared = 0;
  for (const Complex& value : real) norm_squared += value.real() * value.real();
  const Real norm = std::sqrt(norm_squared);
  std::vector<double> result(real.size());
  for (size_t idx = 0; idx < real.size(); ++idx) {
    // The imaginary parts vanish by construction (the (-i)^l phase); e3nn asserts the same.
    result[idx] = static_cast<double>(real[idx].real() / norm);
  }
  return result;
}

std::vector<Wigner3jEntry> Wigner3jNonzeros(const std::vector<double>& dense, int l1, int l2, int l3) {
  const int d2 = 2 * l2 + 1, d3 = 2 * l3 + 1;
  std::vector<Wigner3jEntry> entries;
  for (int i = 0; i < 2 * l1 + 1; ++i)
    for (int j = 0; j < d2; ++j)
      for (int k = 0; k < d3; ++k) {
        const double value = dense[(static_cast<size_t>(i) * d2 + j) * d3 + k];
        if (std::abs(value) > 1e-14) {
          entries.push_back({static_cast<int16_t>(i), static_cast<int16_t>(j), static_cast<int16_t>(k), value});
        }
      }
  return entries;
}

}  // namespace tpserve
