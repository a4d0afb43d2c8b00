// Requests sent from the caller's memory: the large bytes fields of a ForwardRequest (x1.data,
// x2.data) or an EchoRequest (payload) go to gRPC as slices that point into the caller's message
// instead of being copied by protobuf's serializer (590 KB per seed-model Forward). Everything else
// is serialized as usual; protobuf's wire format lets the pieces follow one another.
//
// The slices are counted: gRPC may hold one until its bytes are written, even after a failed call,
// so the caller waits for SliceLoans::WaitReturned() before the message may change or go away.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>

#include "grpcpp/support/byte_buffer.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::client {

class SliceLoans {
 public:
  SliceLoans() = default;
  SliceLoans(const SliceLoans&) = delete;
  SliceLoans& operator=(const SliceLoans&) = delete;
  ~SliceLoans() { WaitReturned(); }

  // A slice over `bytes` (not copied), counted until gRPC releases it.
  grpc::Slice Lend(const std::string& bytes);
  // Blocks until every lent slice is released.
  void WaitReturned();
  int outstanding() const;

 private:
  static void Return(void* loans);

  mutable std::mutex mu_;
  std::condition_variable returned_;
  int outstanding_ = 0;
};

// Bytes fields shorter than this are copied (a slice of their own costs more than the copy).
inline constexpr size_t kLendMinBytes = 64 * 1024;

// The wire bytes of `request`, its large tensor data lent from it.
grpc::ByteBuffer EncodeForwardRequest(const tp::v1::ForwardRequest& request, SliceLoans& loans);
grpc::ByteBuffer EncodeEchoRequest(const tp::v1::EchoRequest& request, SliceLoans& loans);

}  // namespace tpserve::client
