#include "client/lib/borrowed_wire.h"

#include <vector>

#include "wire/tensor_bytes.h"

namespace tpserve::client {
namespace {

// Appends `bytes` (the value of length-delimited field `field`, already tagged in `head`) to the
// pieces: lent when large, else copied into `head`.
void AppendBytes(std::string& head, const std::string& bytes, std::vector<grpc::Slice>& pieces, SliceLoans& loans) {
  if (bytes.size() < kLendMinBytes) {
    head += bytes;
    return;
  }
  pieces.emplace_back(head);
  head.clear();
  pieces.push_back(loans.Lend(bytes));
}

grpc::ByteBuffer Finish(std::string& head, std::vector<grpc::Slice>& pieces) {
  if (!head.empty()) pieces.emplace_back(head);
  return grpc::ByteBuffer(pieces.data(), pieces.size());
}

// Field numbers (tensor_product.proto); borrowed_wire_test checks them and that no field is missed.
constexpr int kForwardX1 = 2, kForwardX2 = 3, kEchoPayload = 1;

}  // namespace

grpc::Slice SliceLoans::Lend(const std::string& bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++outstanding_;
  }
  return grpc::Slice(const_cast<char*>(bytes.data()), bytes.size(), &SliceLoans::Return, this);
}

void SliceLoans::Return(void* loans) {
  auto* self = static_cast<SliceLoans*>(loans);
  std::lock_guard<std::mutex> lock(self->mu_);
  --self->outstanding_;
  self->returned_.notify_all();  // under the lock: the waiter may destroy *self once it is released
}

void SliceLoans::WaitReturned() {
  std::unique_lock<std::mutex> lock(mu_);
  returned_.wait(lock, [&] { return outstanding_ == 0; });
}

int SliceLoans::outstanding() const {
  std::lock_guard<std::mutex> lock(mu_);
  return outstanding_;
}

grpc::ByteBuffer EncodeForwardRequest(const tp::v1::ForwardRequest& request, SliceLoans& loans) {
  tp::v1::ForwardRequest scalars;  // every field but the two tensors
  scalars.set_model(request.model());
  scalars.set_output_dtype(request.output_dtype());
  scalars.set_precision(request.precision());
  std::string head = scalars.SerializeAsString();
  std::vector<grpc::Slice> pieces;
  for (const auto& [field, present, tensor] : {std::tuple{kForwardX1, request.has_x1(), &request.x1()},
                                               std::tuple{kForwardX2, request.has_x2(), &request.x2()}}) {
    if (!present) continue;
    tp::v1::Tensor meta;  // shape and dtype; data follows
    *meta.mutable_shape() = tensor->shape();
    meta.set_dtype(tensor->dtype());
    wire::AppendTensorHead(field, meta, tensor->data().size(), &head);
    AppendBytes(head, tensor->data(), pieces, loans);
  }
  return Finish(head, pieces);
}

grpc::ByteBuffer EncodeEchoRequest(const tp::v1::EchoRequest& request, SliceLoans& loans) {
  tp::v1::EchoRequest scalars;
  scalars.set_response_bytes(request.response_bytes());
  std::string head = scalars.SerializeAsString();
  std::vector<grpc::Slice> pieces;
  if (!request.payload().empty()) {
    wire::AppendLengthDelimitedTag(kEchoPayload, request.payload().size(), &head);
    AppendBytes(head, request.payload(), pieces, loans);
  }
  return Finish(head, pieces);
}

}  // namespace tpserve::client
