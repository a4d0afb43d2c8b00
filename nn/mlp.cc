#include "nn/mlp.h"

#include <cmath>

#include "nn/activation.h"

namespace tpserve::nn {
namespace {

// out[r, j] = scale * sum_i x[r, i] W[i, j]
template <class T>
void MatMul(const T* x, const T* w, int64_t rows, int fan_in, int fan_out, T scale, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    T* o = out + r * fan_out;
    for (int j = 0; j < fan_out; ++j) o[j] = T(0);
    for (int i = 0; i < fan_in; ++i) {
      const T xi = x[r * fan_in + i];
      const T* wi = w + int64_t{i} * fan_out;
      for (int j = 0; j < fan_out; ++j) o[j] += xi * wi[j];
    }
    for (int j = 0; j < fan_out; ++j) o[j] *= scale;
  }
}

}  // namespace

int64_t RadialMlp::num_parameters() const {
  int64_t total = 0;
  for (int k = 0; k < num_matrices(); ++k) total += matrix_numel(k);
  return total;
}

double RadialMlp::ForwardMultiplyAdds(int64_t rows) const {
  return static_cast<double>(rows) * static_cast<double>(num_parameters());
}

template <class T>
void RadialMlp::Forward(const T* params, const T* x, int64_t rows, Cache<T>* cache, T* out) const {
  const T act_scale = static_cast<T>(SecondMomentConstant(Activation::kGelu));
  cache->layer_inputs.assign(num_matrices(), {});
  cache->pre_activations.assign(num_matrices() - 1, {});
  cache->layer_inputs[0].assign(x, x + rows * sizes_[0]);
  const T* w = params;
  for (int k = 0; k < num_matrices(); ++k) {
    const int fan_in = sizes_[k], fan_out = sizes_[k + 1];
    const T scale = T(1) / std::sqrt(static_cast<T>(fan_in));
    const bool last = k == num_matrices() - 1;
    T* dst = out;
    if (!last) {
      cache->pre_activations[k].resize(rows * fan_out);
      dst = cache->pre_activations[k].data();
    }
    MatMul(cache->layer_inputs[k].data(), w, rows, fan_in, fan_out, scale, dst);
    if (!last) {
      std::vector<T>& next = cache->layer_inputs[k + 1];
      next.resize(rows * fan_out);
      for (int64_t n = 0; n < rows * fan_out; ++n) next[n] = act_scale * ActivationValue(Activation::kGelu, dst[n]);
    }
    w += matrix_numel(k);
  }
}

template <class T>
void RadialMlp::Backward(const T* params, const Cache<T>& cache, int64_t rows, const T* grad_out,
                         T* grad_params) const {
  const T act_scale = static_cast<T>(SecondMomentConstant(Activation::kGelu));
  std::vector<int64_t> offsets(num_matrices(), 0);
  for (int k = 1; k < num_matrices(); ++k) offsets[k] = offsets[k - 1] + matrix_numel(k - 1);
  std::vector<T> grad(grad_out, grad_out + rows * sizes_.back());  // d loss / d (output of matrix k)
  for (int k = num_matrices() - 1; k >= 0; --k) {
    const int fan_in = sizes_[k], fan_out = sizes_[k + 1];
    const T scale = T(1) / std::sqrt(static_cast<T>(fan_in));
    const T* x = cache.layer_inputs[k].data();
    const T* w = params + offsets[k];
    T* gw = grad_params + offsets[k];
    // dW[i, j] += scale * sum_r x[r, i] grad[r, j]
    for (int64_t r = 0; r < rows; ++r) {
      for (int i = 0; i < fan_in; ++i) {
        const T xi = scale * x[r * fan_in + i];
        for (int j = 0; j < fan_out; ++j) gw[int64_t{i} * fan_out + j] += xi * grad[r * fan_out + j];
      }
    }
    if (k == 0) break;
    // d loss / d pre-activation of layer k-1 = scale * (grad W^T) * act'(pre)
    const std::vector<T>& pre = cache.pre_activations[k - 1];
    std::vector<T> next(rows * fan_in);
    for (int64_t r = 0; r < rows; ++r) {
      for (int i = 0; i < fan_in; ++i) {
        T sum = 0;
        for (int j = 0; j < fan_out; ++j) sum += grad[r * fan_out + j] * w[int64_t{i} * fan_out + j];
        const int64_t n = r * fan_in + i;
        next[n] = scale * sum * act_scale * ActivationDerivative(Activation::kGelu, pre[n]);
      }
    }
    grad = std::move(next);
  }
}

template void RadialMlp::Forward<float>(const float*, const float*, int64_t, Cache<float>*, float*) const;
template void RadialMlp::Forward<double>(const double*, const double*, int64_t, Cache<double>*, double*) const;
template void RadialMlp::Backward<float>(const float*, const Cache<float>&, int64_t, const float*, float*) const;
template void RadialMlp::Backward<double>(const double*, const Cache<double>&, int64_t, const double*,
                                          double*) const;

}  // namespace tpserve::nn
