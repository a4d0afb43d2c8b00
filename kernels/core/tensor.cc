#include "kernels/core/tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tpserve {

const char* DTypeName(DType dtype) { return dtype == DType::kFloat32 ? "float32" : "float64"; }

std::string ShapeString(const std::vector<int64_t>& shape) {
  // A client can send a million extents: the string names the first few and how many there are.
  constexpr size_t kShownExtents = 8;
  if (shape.size() <= kShownExtents) return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.begin() + kShownExtents, ", "), ", ... (",
                      shape.size(), " extents)]");
}

template <typename Pointer>
absl::Status CheckTensor(const BasicTensorView<Pointer>& view, const char* what, DType dtype,
                         const std::vector<int64_t>& shape) {
  if (!view.present()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": missing; expected ", DTypeName(dtype), " ", ShapeString(shape)));
  }
  if (view.dtype != dtype || view.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected ", DTypeName(dtype), " ", ShapeString(shape),
                                                   ", got ", DTypeName(view.dtype), " ", ShapeString(view.shape)));
  }
  return absl::OkStatus();
}

template absl::Status CheckTensor(const BasicTensorView<void*>&, const char*, DType, const std::vector<int64_t>&);
template absl::Status CheckTensor(const BasicTensorView<const void*>&, const char*, DType,
                                  const std::vector<int64_t>&);

}  // namespace tpserve
