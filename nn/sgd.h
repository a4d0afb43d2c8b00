// Stochastic gradient descent with momentum, in PyTorch's torch.optim.SGD semantics
// (dampening 0, no Nesterov, no weight decay):
//   v <- momentum * v + g;   p <- p - lr * v
// On the first step PyTorch sets v = g; with v starting at zero the formula above gives the same.
#pragma once

#include <cstddef>
#include <vector>

namespace tpserve::nn {

struct SgdMomentumOptions {
  double lr = 1e-2;
  double momentum = 0.9;
};

// Updates params and velocity in place. velocity is resized (zero-filled) to params' size when it
// is empty; params, velocity and grad must otherwise have equal sizes (checked by the caller).
template <class T>
void SgdMomentumStep(std::vector<T>& params, std::vector<T>& velocity, const std::vector<T>& grad,
                     const SgdMomentumOptions& options) {
  if (velocity.empty()) velocity.assign(params.size(), T(0));
  const T lr = static_cast<T>(options.lr);
  const T momentum = static_cast<T>(options.momentum);
  for (size_t i = 0; i < params.size(); ++i) {
    velocity[i] = momentum * velocity[i] + grad[i];
    params[i] -= lr * velocity[i];
  }
}

}  // namespace tpserve::nn
