// Wire tensors (tp.v1.Tensor) as the core's HostTensors and back: the server side of the codec in
// wire/tensor_bytes.h (which the client shares), where a request's float32 bytes may be borrowed
// instead of copied.
#pragma once

#include "absl/status/statusor.h"
#include "server/core/host_tensor.h"
#include "tp/v1/tensor_product.pb.h"
#include "wire/tensor_bytes.h"

namespace tpserve::wire {

// A tensor whose byte length matches shape x dtype exactly; every extent >= 0.
enum class Decode { kCopy, kBorrow };
// kBorrow: float32 bytes are not copied; the HostTensor points into `tensor`, which must outlive
// it unchanged (other dtypes, and misaligned bytes, are converted into owned values as kCopy does).
absl::StatusOr<server::HostTensor> DecodeTensor(const tp::v1::Tensor& tensor, const char* what,
                                                Decode mode = Decode::kCopy);
// Leaves the bytes alone when `tensor` already borrows them as float32 (see Forward's out_into).
void EncodeTensor(const server::HostTensor& tensor, tp::v1::DType dtype, tp::v1::Tensor* out);

}  // namespace tpserve::wire
