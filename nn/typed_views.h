// Tensor views of a layer's float or double buffers, typed by the element type (the layers are
// templates over float and double and hand their buffers to the Backend as views).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/core/tensor.h"

namespace tpserve::nn {

template <class T>
constexpr DType kDTypeOf = std::is_same_v<T, float> ? DType::kFloat32 : DType::kFloat64;

template <class T>
ConstTensorView InView(const T* data, std::vector<int64_t> shape) {
  return {data, kDTypeOf<T>, std::move(shape)};
}
template <class T>
TensorView OutView(T* data, std::vector<int64_t> shape) {
  return {data, kDTypeOf<T>, std::move(shape)};
}

}  // namespace tpserve::nn
