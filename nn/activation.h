// The scalar activations of the network, each normalized to unit second moment as e3nn's
// normalize2mom does: f_hat(x) = f(x) / sqrt(E[f(z)^2]), z ~ N(0, 1). e3nn estimates the moment
// by Monte Carlo (10^6 samples, ~1e-3 relative error); here it is the exact integral (trapezoid
// rule, h = 1/256 on [-20, 20], error far below double rounding for these smooth integrands).
// gelu is the exact one (erf), torch's default.
#pragma once

#include <cmath>

namespace tpserve::nn {

enum class Activation { kGelu, kTanh, kSigmoid };

const char* ActivationName(Activation activation);  // "gelu", "tanh", "sigmoid"

// 1 / sqrt(E[f(z)^2]) for the unnormalized f; computed once per process.
double SecondMomentConstant(Activation activation);

// f(x) and f'(x) of the unnormalized activation.
template <class T>
T ActivationValue(Activation activation, T x) {
  switch (activation) {
    case Activation::kGelu: return T(0.5) * x * (T(1) + std::erf(x / std::sqrt(T(2))));
    case Activation::kTanh: return std::tanh(x);
    case Activation::kSigmoid: return T(1) / (T(1) + std::exp(-x));
  }
  return x;
}

template <class T>
T ActivationDerivative(Activation activation, T x) {
  switch (activation) {
    case Activation::kGelu: {
      const T cdf = T(0.5) * (T(1) + std::erf(x / std::sqrt(T(2))));
      const T pdf = std::exp(T(-0.5) * x * x) / std::sqrt(T(2 * M_PI));
      return cdf + x * pdf;
    }
    case Activation::kTanh: {
      const T t = std::tanh(x);
      return T(1) - t * t;
    }
    case Activation::kSigmoid: {
      const T s = T(1) / (T(1) + std::exp(-x));
      return s * (T(1) - s);
    }
  }
  return T(1);
}

}  // namespace tpserve::nn
