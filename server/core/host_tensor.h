// HostTensor: the owning float32 array that crosses the core's API. The transport decodes wire
// tensors (any dtype) into HostTensors and encodes results from them; the core never sees bytes
// of other dtypes. An empty shape means "absent".
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/core/tensor.h"

namespace tpserve::server {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  HostTensor() = default;
  HostTensor(std::vector<int64_t> shape_in, std::vector<float> data_in)
      : shape(std::move(shape_in)), data(std::move(data_in)) {}
  static HostTensor Zeros(std::vector<int64_t> shape_in) {
    int64_t n = 1;
    for (int64_t s : shape_in) n *= s;
    return HostTensor(std::move(shape_in), std::vector<float>(static_cast<size_t>(n), 0.0f));
  }

  bool present() const { return !shape.empty(); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return shape.empty() ? 0 : n;
  }
  // Rows of a [rows, cols] matrix (the batch of x1, x2, out and their gradients).
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }

  ConstTensorView view() const { return {data.data(), DType::kFloat32, shape}; }
  TensorView mutable_view() { return {data.data(), DType::kFloat32, shape}; }
};

}  // namespace tpserve::server
