// HostTensor: the float32 array that crosses the core's API. The transport decodes wire tensors
// (any dtype) into HostTensors and encodes results from them; the core never sees bytes of other
// dtypes. An empty shape means "absent".
//
// Inputs may borrow their values instead of owning them: a unary RPC's float32 bytes already are
// the array, so decoding them copies nothing. Whoever submits a borrowing request keeps that
// memory alive and unchanged until the request's result callback has run.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/core/tensor.h"

namespace tpserve::server {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;          // the values when owned (empty when borrowed)
  const float* borrowed = nullptr;  // the values when borrowed ...
  size_t borrowed_size = 0;         // ... and how many there are
  // The borrowed values lie in page-locked memory (a HostPool lease): a GPU worker copies them to
  // the device from there instead of gathering them into its staging buffer first.
  bool pinned = false;

  HostTensor() = default;
  HostTensor(std::vector<int64_t> shape_in, std::vector<float> data_in)
      : shape(std::move(shape_in)), data(std::move(data_in)) {}
  static HostTensor Zeros(std::vector<int64_t> shape_in) {
    int64_t n = 1;
    for (int64_t s : shape_in) n *= s;
    return HostTensor(std::move(shape_in), std::vector<float>(static_cast<size_t>(n), 0.0f));
  }
  // A view of `count` floats at `values` (4-byte aligned), which the caller keeps alive.
  static HostTensor Borrow(std::vector<int64_t> shape_in, const float* values, size_t count) {
    HostTensor t;
    t.shape = std::move(shape_in);
    t.borrowed = values;
    t.borrowed_size = count;
    return t;
  }

  bool present() const { return !shape.empty(); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return shape.empty() ? 0 : n;
  }
  // Rows of a [rows, cols] matrix (the batch of x1, x2, out and their gradients).
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  // The values held, owned or borrowed (may disagree with numel() until validated).
  const float* values() const { return borrowed != nullptr ? borrowed : data.data(); }
  size_t size() const { return borrowed != nullptr ? borrowed_size : data.size(); }

  ConstTensorView view() const { return {values(), DType::kFloat32, shape}; }
  TensorView mutable_view() { return {data.data(), DType::kFloat32, shape}; }
};

}  // namespace tpserve::server
