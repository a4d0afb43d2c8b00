// Real-basis Wigner D matrices for tests, built without the Wigner 3j code under test.
//
// D^l(R) comes from the Lie algebra: the complex-basis angular momentum matrices J_z, J_+, J_-
// of spin l (Condon-Shortley phases) give the generators G_n = -i J_n; e3nn's change of basis
// Q (real -> complex, with its (-i)^l phase; l = 1 is ordered (y, z, x) up to signs) turns them
// into real antisymmetric A_n = Q^H G_n Q, and a rotation by `angle` about axis n is
// D = expm(angle * A_n), by scaling and squaring of a Taylor series in double precision.
// A rotation is a product of such elementary rotations; D of the product is the product of Ds.
//
// Matrices are dense, row-major, (2l+1) x (2l+1); D acts on a component vector x[i] as
// x'[i] = sum_j D[i][j] x[j].
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/core/irreps.h"

namespace tpserve::testing {

enum class Axis { kX = 0, kY = 1, kZ = 2 };

struct AxisRotation {
  Axis axis;
  double angle;  // radians
};

// R = factors[0] * factors[1] * ... (the last factor acts first on a vector).
struct Rotation {
  std::vector<AxisRotation> factors;
  bool improper = false;  // true: the rotation composed with inversion (-R)
};

// A rotation with random angles in [-pi, pi) about z, y, z, x (covers SO(3)); `improper` as given.
Rotation RandomRotation(std::mt19937_64& rng, bool improper = false);

// Real antisymmetric so(3) generators of spin l in e3nn's real basis, index 0 = x, 1 = y, 2 = z,
// with [A_x, A_y] = A_z (cyclic). `max_imaginary` (optional) receives the largest |imaginary
// part| dropped in the change of basis (zero up to rounding when the basis is right).
std::vector<std::vector<double>> RealGenerators(int l, double* max_imaginary = nullptr);

// expm(a) for an n x n row-major matrix.
std::vector<double> MatrixExponential(const std::vector<double>& a, int n);
// c = a * b for n x n row-major matrices.
std::vector<double> MatMul(const std::vector<double>& a, const std::vector<double>& b, int n);
std::vector<double> Transpose(const std::vector<double>& a, int n);

// D^l(R) for the proper part of R (parity is applied per irrep by RotateIrreps).
std::vector<double> WignerD(int l, const Rotation& rotation);
// D^l for l = 0..max_l.
std::vector<std::vector<double>> WignerDs(int max_l, const Rotation& rotation);

// 3x3 Cartesian rotation matrix about `axis` by `angle` in (x, y, z) order, right-handed.
std::vector<double> CartesianRotation(Axis axis, double angle);

// Applies the rotation block-wise to a batch of flat irreps vectors x[batch][irreps.dim()]:
// entry (mul, (l, p)) gets x[z, off + u*(2l+1) + i] -> sum_j s * D^l[i][j] x[z, off + u*(2l+1) + j]
// with s = p when the rotation is improper, else 1.
std::vector<double> RotateIrreps(const Irreps& irreps, const Rotation& rotation, const std::vector<double>& x,
                                 int64_t batch);

}  // namespace tpserve::testing
