// Spherical harmonics of edge vectors as e3nn's o3.spherical_harmonics(lmax, v, normalize=True,
// normalization='component') computes them (e3nn 0.6: arguments in (x, y, z) order, no permutation):
//   u = v / max(|v|, 1e-12)
//   l=0: 1
//   l=1: sqrt(3) (x, y, z)
//   l=2: sqrt(15) x z, sqrt(15) x y, sqrt(5) (y^2 - (x^2 + z^2) / 2), sqrt(15) y z, sqrt(15)/2 (z^2 - x^2)
// Output [num_vectors, (lmax+1)^2], the irreps 1x0e + 1x1o (+ 1x2e) back to back.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace tpserve::nn {

inline int SphericalHarmonicsDim(int lmax) { return (lmax + 1) * (lmax + 1); }

// vectors: [num_vectors, 3]; out: [num_vectors, (lmax+1)^2]. lmax in 0..2.
template <class T>
void SphericalHarmonics(int lmax, const T* vectors, int64_t num_vectors, T* out) {
  const int dim = SphericalHarmonicsDim(lmax);
  const T sqrt3 = std::sqrt(T(3)), sqrt5 = std::sqrt(T(5)), sqrt15 = std::sqrt(T(15));
  for (int64_t e = 0; e < num_vectors; ++e) {
    const T* v = vectors + 3 * e;
    const T norm = std::max(std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), T(1e-12));
    const T x = v[0] / norm, y = v[1] / norm, z = v[2] / norm;
    T* sh = out + e * dim;
    sh[0] = T(1);
    if (lmax >= 1) {
      sh[1] = sqrt3 * x;
      sh[2] = sqrt3 * y;
      sh[3] = sqrt3 * z;
    }
    if (lmax >= 2) {
      sh[4] = sqrt15 * x * z;
      sh[5] = sqrt15 * x * y;
      sh[6] = sqrt5 * (y * y - T(0.5) * (x * x + z * z));
      sh[7] = sqrt15 * y * z;
      sh[8] = T(0.5) * sqrt15 * (z * z - x * x);
    }
  }
}

}  // namespace tpserve::nn
