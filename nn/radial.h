// The radial basis of the edge lengths: e3nn's soft_one_hot_linspace(r, 0, max_radius, num_basis,
// basis='smooth_finite', cutoff=True), times a constant scale (issue 19: sqrt(5) * 1.1):
//   centers c_i = max_radius (i + 1) / (num_basis + 1), step = max_radius / (num_basis + 1)
//   d = (r - c_i) / step;  y_i = 1.14136 e^2 su(d + 1) su(1 - d),  su(t) = exp(-1/t) for t > 0, else 0
// Each function is smooth, nonzero only for |d| < 1 and peaks at 1.14136 (at d = 0).
#pragma once

#include <cmath>
#include <cstdint>

namespace tpserve::nn {

// issue 19's factor on the basis.
inline double RadialBasisScale() { return std::sqrt(5.0) * 1.1; }

template <class T>
T SoftUnitStep(T t) {
  return t > T(0) ? std::exp(T(-1) / t) : T(0);
}

// lengths: [num_edges]; out: [num_edges, num_basis], already multiplied by `scale`.
template <class T>
void SmoothFiniteBasis(const T* lengths, int64_t num_edges, int num_basis, double max_radius, double scale, T* out) {
  const double step = max_radius / (num_basis + 1);
  const T amplitude = static_cast<T>(1.14136 * std::exp(2.0) * scale);
  for (int64_t e = 0; e < num_edges; ++e) {
    for (int i = 0; i < num_basis; ++i) {
      const T center = static_cast<T>(step * (i + 1));
      const T d = (lengths[e] - center) / static_cast<T>(step);
      out[e * num_basis + i] = amplitude * SoftUnitStep(d + T(1)) * SoftUnitStep(T(1) - d);
    }
  }
}

}  // namespace tpserve::nn
