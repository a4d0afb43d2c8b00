#include "nn/activation.h"

#include <cmath>

namespace tpserve::nn {
namespace {

double ComputeSecondMomentConstant(Activation activation) {
  constexpr double kStep = 1.0 / 256.0;
  constexpr int kHalfPoints = 20 * 256;
  double total = 0;
  for (int i = -kHalfPoints; i <= kHalfPoints; ++i) {
    const double z = i * kStep;
    const double f = ActivationValue(activation, z);
    total += f * f * std::exp(-0.5 * z * z);
  }
  const double moment = total * kStep / std::sqrt(2.0 * M_PI);
  return 1.0 / std::sqrt(moment);
}

}  // namespace

const char* ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kGelu: return "gelu";
    case Activation::kTanh: return "tanh";
    case Activation::kSigmoid: return "sigmoid";
  }
  return "?";
}

double SecondMomentConstant(Activation activation) {
  static const double gelu = ComputeSecondMomentConstant(Activation::kGelu);
  static const double tanh_constant = ComputeSecondMomentConstant(Activation::kTanh);
  static const double sigmoid = ComputeSecondMomentConstant(Activation::kSigmoid);
  switch (activation) {
    case Activation::kGelu: return gelu;
    case Activation::kTanh: return tanh_constant;
    case Activation::kSigmoid: return sigmoid;
  }
  return 1.0;
}

}  // namespace tpserve::nn
