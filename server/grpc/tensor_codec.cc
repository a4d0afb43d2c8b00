#include "server/grpc/tensor_codec.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/core/tensor.h"

namespace tpserve::wire {

absl::StatusOr<server::HostTensor> DecodeTensor(const tp::v1::Tensor& tensor, const char* what, Decode mode) {
  server::HostTensor host;
  const int64_t numel = ShapeElements(tensor);
  if (numel < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": shape ", ShapeString({tensor.shape().begin(), tensor.shape().end()}), " has a negative or absurd extent"));
  }
  if (tensor.shape().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": missing (no shape); expected [batch, dim]"));
  }
  host.shape.assign(tensor.shape().begin(), tensor.shape().end());
  const std::string& bytes = tensor.data();
  if (mode == Decode::kBorrow && tensor.dtype() == tp::v1::DTYPE_FLOAT32 &&
      bytes.size() == static_cast<size_t>(numel) * sizeof(float) &&
      reinterpret_cast<uintptr_t>(bytes.data()) % alignof(float) == 0) {
    return server::HostTensor::Borrow(std::move(host.shape), reinterpret_cast<const float*>(bytes.data()),
                                      static_cast<size_t>(numel));
  }
  absl::StatusOr<std::vector<float>> values = BytesToFloats(
      tensor.dtype(), tensor.data(), absl::StrCat(what, " ", ShapeString(host.shape)).c_str(), numel);
  if (!values.ok()) return values.status();
  host.data = *std::move(values);
  return host;
}

void EncodeTensor(const server::HostTensor& tensor, tp::v1::DType dtype, tp::v1::Tensor* out) {
  if (DTypeSize(dtype) == 0) dtype = tp::v1::DTYPE_FLOAT32;
  out->clear_shape();
  for (int64_t extent : tensor.shape) out->add_shape(extent);
  out->set_dtype(dtype);
  // Already there: the values were written straight into this message's bytes (out_into).
  if (dtype == tp::v1::DTYPE_FLOAT32 && out->data().size() == tensor.size() * sizeof(float) &&
      static_cast<const void*>(tensor.values()) == static_cast<const void*>(out->data().data())) {
    return;
  }
  out->clear_data();
  FloatsToBytes(tensor.values(), tensor.size(), dtype, out->mutable_data());
}

}  // namespace tpserve::wire
