// The radial MLP of a convolution, e3nn's FullyConnectedNet([num_basis, hidden..., out], gelu):
// no biases; layer k computes x_{k+1} = x_k W_k / sqrt(fan_in_k), followed on hidden layers by the
// second-moment-normalized gelu (activation.h). W_k is [fan_in_k, fan_out_k], row-major, stored
// back to back in the flat parameter vector (W_0 first).
#pragma once

#include <cstdint>
#include <vector>

namespace tpserve::nn {

class RadialMlp {
 public:
  // sizes = [in, hidden_1, ..., hidden_n, out]; at least two entries.
  explicit RadialMlp(std::vector<int> sizes) : sizes_(std::move(sizes)) {}

  const std::vector<int>& sizes() const { return sizes_; }
  int num_matrices() const { return static_cast<int>(sizes_.size()) - 1; }
  int64_t matrix_numel(int k) const { return int64_t{sizes_[k]} * sizes_[k + 1]; }
  int64_t num_parameters() const;
  // Multiply-adds of one forward pass over `rows` inputs.
  double ForwardMultiplyAdds(int64_t rows) const;

  // What Backward needs from Forward: the input of every matrix (layer_inputs[0] = x) and the
  // pre-activations of the hidden layers.
  template <class T>
  struct Cache {
    std::vector<std::vector<T>> layer_inputs;
    std::vector<std::vector<T>> pre_activations;
  };

  // x: [rows, sizes[0]]; out: [rows, sizes.back()]; params: the matrices back to back.
  template <class T>
  void Forward(const T* params, const T* x, int64_t rows, Cache<T>* cache, T* out) const;
  // grad_params (+=) from grad_out [rows, sizes.back()]; the input gradient is not needed.
  template <class T>
  void Backward(const T* params, const Cache<T>& cache, int64_t rows, const T* grad_out, T* grad_params) const;

 private:
  std::vector<int> sizes_;
};

}  // namespace tpserve::nn
