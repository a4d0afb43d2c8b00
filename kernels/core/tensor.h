// Non-owning views of the dense row-major arrays that cross the backend interface.
//
// A view names memory it does not own: a host pointer for the CPU backend, a device pointer for
// the CUDA backend (Backend::memory_space() says which). Shapes are [batch, dim] for x1, x2,
// out and their gradients, [weight_numel] for shared weights and [batch, weight_numel] for
// per-sample weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"

namespace tpserve {

enum class DType : uint8_t { kFloat32, kFloat64 };

inline size_t DTypeSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 8; }
const char* DTypeName(DType dtype);  // "float32", "float64"

enum class MemorySpace : uint8_t { kHost, kCudaDevice };

template <typename Pointer>
struct BasicTensorView {
  Pointer data = nullptr;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;

  bool present() const { return data != nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  size_t bytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  template <typename T>
  auto typed() const {
    using Target = std::conditional_t<std::is_const_v<std::remove_pointer_t<Pointer>>, const T*, T*>;
    return static_cast<Target>(data);
  }
};

using TensorView = BasicTensorView<void*>;
using ConstTensorView = BasicTensorView<const void*>;

inline ConstTensorView AsConst(const TensorView& view) { return {view.data, view.dtype, view.shape}; }

std::string ShapeString(const std::vector<int64_t>& shape);  // "[64, 1152]"

// OK when `view` is present with exactly `dtype` and `shape`; otherwise INVALID_ARGUMENT naming
// `what` and the expected shape and dtype.
template <typename Pointer>
absl::Status CheckTensor(const BasicTensorView<Pointer>& view, const char* what, DType dtype,
                         const std::vector<int64_t>& shape);

}  // namespace tpserve
