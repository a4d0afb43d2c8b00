#include "tests/support/wigner_d.h"

#include <algorithm>
#include <cmath>
#include <complex>

namespace tpserve::testing {
namespace {

using Complex = std::complex<double>;
using ComplexMatrix = std::vector<Complex>;  // row-major, n x n

constexpr double kPi = 3.14159265358979323846;

// e3nn's real -> complex change of basis for spin l, written column by column from the real
// spherical harmonics: column mu (real index) holds the complex coefficients (rows m = -l..l).
//   mu = 0:  Y_0
//   mu > 0:  (Y_{-mu} + (-1)^mu Y_mu) / sqrt2
//   mu < 0:  -i (Y_{mu} - (-1)^|mu| Y_{-mu}) / sqrt2   (i.e. -i/sqrt2 at m = mu, +i(-1)^|mu|/sqrt2 at m = -mu)
// and the whole matrix times (-i)^l (e3nn's phase that makes its Clebsch-Gordan coefficients real).
ComplexMatrix RealToComplex(int l) {
  const int n = 2 * l + 1;
  ComplexMatrix q(n * n, Complex(0, 0));
  auto at = [&](int m_complex, int mu_real) -> Complex& { return q[(m_complex + l) * n + (mu_real + l)]; };
  const double h = 1.0 / std::sqrt(2.0);
  at(0, 0) = 1.0;
  for (int mu = 1; mu <= l; ++mu) {
    const double sign = (mu % 2 == 0) ? 1.0 : -1.0;
    at(-mu, mu) = h;
    at(mu, mu) = sign * h;
    at(-mu, -mu) = Complex(0, -h);
    at(mu, -mu) = Complex(0, sign * h);
  }
  Complex phase = 1.0;
  for (int k = 0; k < l; ++k) phase *= Complex(0, -1);
  for (Complex& value : q) value *= phase;
  return q;
}

ComplexMatrix ComplexMul(const ComplexMatrix& a, const ComplexMatrix& b, int n) {
  ComplexMatrix c(n * n, Complex(0, 0));
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k) {
      const Complex aik = a[i * n + k];
      if (aik == Complex(0, 0)) continue;
      for (int j = 0; j < n; ++j) c[i * n + j] += aik * b[k * n + j];
    }
  return c;
}

ComplexMatrix ConjugateTranspose(const ComplexMatrix& a, int n) {
  ComplexMatrix t(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) t[j * n + i] = std::conj(a[i * n + j]);
  return t;
}

}  // namespace

std::vector<std::vector<double>> RealGenerators(int l, double* max_imaginary) {
  const int n = 2 * l + 1;
  // Complex basis |l, m>, row/column index m + l.
  ComplexMatrix jz(n * n), jplus(n * n), jminus(n * n);
  for (int m = -l; m <= l; ++m) {
    jz[(m + l) * n + (m + l)] = static_cast<double>(m);
    // J_+ |m> = sqrt(l(l+1) - m(m+1)) |m+1>,  J_- |m> = sqrt(l(l+1) - m(m-1)) |m-1>.
    if (m < l) jplus[(m + 1 + l) * n + (m + l)] = std::sqrt(static_cast<double>(l * (l + 1) - m * (m + 1)));
    if (m > -l) jminus[(m - 1 + l) * n + (m + l)] = std::sqrt(static_cast<double>(l * (l + 1) - m * (m - 1)));
  }
  ComplexMatrix jx(n * n), jy(n * n);
  for (int k = 0; k < n * n; ++k) {
    jx[k] = (jplus[k] + jminus[k]) / 2.0;
    jy[k] = (jplus[k] - jminus[k]) / Complex(0, 2);
  }
  const ComplexMatrix q = RealToComplex(l);
  const ComplexMatrix qh = ConjugateTranspose(q, n);
  std::vector<std::vector<double>> generators;
  double max_imag = 0;
  for (const ComplexMatrix* j : {&jx, &jy, &jz}) {
    // G = -i J (so that exp(angle * G) = exp(-i angle J)), then A = Q^H G Q.
    ComplexMatrix g(n * n);
    for (int k = 0; k < n * n; ++k) g[k] = Complex(0, -1) * (*j)[k];
    const ComplexMatrix a = ComplexMul(qh, ComplexMul(g, q, n), n);
    std::vector<double> real(n * n);
    for (int k = 0; k < n * n; ++k) {
      real[k] = a[k].real();
      max_imag = std::max(max_imag, std::abs(a[k].imag()));
    }
    generators.push_back(std::move(real));
  }
  if (max_imaginary != nullptr) *max_imaginary = max_imag;
  return generators;
}

std::vector<double> MatMul(const std::vector<double>& a, const std::vector<double>& b, int n) {
  std::vector<double> c(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k) {
      const double aik = a[i * n + k];
      for (int j = 0; j < n; ++j) c[i * n + j] += aik * b[k * n + j];
    }
  return c;
}

std::vector<double> Transpose(const std::vector<double>& a, int n) {
  std::vector<double> t(a.size());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) t[j * n + i] = a[i * n + j];
  return t;
}

std::vector<double> MatrixExponential(const std::vector<double>& a, int n) {
  double norm = 0;
  for (double v : a) norm += v * v;
  norm = std::sqrt(norm);
  // Scale so that ||a / 2^s|| <= 1/4; a Taylor series of 20 terms is then exact to rounding.
  int squarings = 0;
  while (norm > 0.25) {
    norm /= 2;
    ++squarings;
  }
  const double scale = std::ldexp(1.0, -squarings);
  std::vector<double> scaled(a.size());
  for (size_t k = 0; k < a.size(); ++k) scaled[k] = a[k] * scale;
  std::vector<double> result(static_cast<size_t>(n) * n, 0.0), term(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) result[i * n + i] = term[i * n + i] = 1.0;
  for (int k = 1; k <= 20; ++k) {
    term = MatMul(term, scaled, n);
    for (double& v : term) v /= k;
    for (size_t idx = 0; idx < result.size(); ++idx) result[idx] += term[idx];
  }
  for (int s = 0; s < squarings; ++s) result = MatMul(result, result, n);
  return result;
}

Rotation RandomRotation(std::mt19937_64& rng, bool improper) {
  std::uniform_real_distribution<double> angle(-kPi, kPi);
  Rotation rotation;
  for (Axis axis : {Axis::kZ, Axis::kY, Axis::kZ, Axis::kX}) rotation.factors.push_back({axis, angle(rng)});
  rotation.improper = improper;
  return rotation;
}

std::vector<double> WignerD(int l, const Rotation& rotation) {
  const int n = 2 * l + 1;
  const std::vector<std::vector<double>> generators = RealGenerators(l);
  std::vector<double> d(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) d[i * n + i] = 1.0;
  for (const AxisRotation& factor : rotation.factors) {
    std::vector<double> a = generators[static_cast<int>(factor.axis)];
    for (double& v : a) v *= factor.angle;
    d = MatMul(d, MatrixExponential(a, n), n);
  }
  return d;
}

std::vector<std::vector<double>> WignerDs(int max_l, const Rotation& rotation) {
  std::vector<std::vector<double>> ds;
  for (int l = 0; l <= max_l; ++l) ds.push_back(WignerD(l, rotation));
  return ds;
}

std::vector<double> CartesianRotation(Axis axis, double angle) {
  const double c = std::cos(angle), s = std::sin(angle);
  switch (axis) {
    case Axis::kX: return {1, 0, 0, 0, c, -s, 0, s, c};
    case Axis::kY: return {c, 0, s, 0, 1, 0, -s, 0, c};
    case Axis::kZ: return {c, -s, 0, s, c, 0, 0, 0, 1};
  }
  return {};
}

std::vector<double> RotateIrreps(const Irreps& irreps, const Rotation& rotation, const std::vector<double>& x,
                                 int64_t batch) {
  const std::vector<std::vector<double>> ds = WignerDs(irreps.max_l(), rotation);
  const int64_t dim = irreps.dim();
  std::vector<double> y(x.size(), 0.0);
  for (int64_t z = 0; z < batch; ++z) {
    for (int e = 0; e < irreps.size(); ++e) {
      const MulIrrep& entry = irreps[e];
      const int n = entry.ir.dim();
      const double sign = rotation.improper ? entry.ir.parity : 1.0;
      const std::vector<double>& d = ds[entry.ir.l];
      for (int u = 0; u < entry.mul; ++u) {
        const int64_t base = z * dim + irreps.offset(e) + int64_t{u} * n;
        for (int i = 0; i < n; ++i) {
          double sum = 0;
          for (int j = 0; j < n; ++j) sum += d[i * n + j] * x[base + j];
          y[base + i] = sign * sum;
        }
      }
    }
  }
  return y;
}

}  // namespace tpserve::testing
