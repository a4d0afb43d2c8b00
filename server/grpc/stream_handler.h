// tp.v1 TensorProductService.Stream: one handler object per call, with its own types and writer
// thread (as Triton keeps its streaming handler apart from the unary one; both share convert.h).
//
// Requests are admitted as they arrive (so several can be batched or in flight at once) and
// answered strictly in arrival order, by a writer thread of the call's own; at most
// stream_max_in_flight are outstanding. At most max_streams calls are open at once: one more
// answers RESOURCE_EXHAUSTED before it reads anything, so that streams cannot take every thread
// from unary callers. A message that does not parse ends the reading: the requests before it are
// answered, then the call ends with INVALID_ARGUMENT.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/sync_stream.h"
#include "server/core/request.h"
#include "server/grpc/rpc_scope.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::server {

class StreamHandler {
 public:
  using ServerStream = grpc::ServerReaderWriter<tp::v1::StreamResponse, grpc::ByteBuffer>;
  // `open_streams` counts the Stream calls open on the service.
  StreamHandler(const ServiceEnv& env, std::atomic<int64_t>* open_streams, grpc::ServerContext* context,
                ServerStream* stream);
  // Serves the call to its end.
  grpc::Status Run();

 private:
  struct Entry;
  struct State;
  // Reads and admits requests until the client finishes, the writer fails, or a message does not
  // parse (*malformed: INVALID_ARGUMENT).
  void ReadRequests(grpc::Status* malformed);
  // `message` as the core's request (or the error it is answered with); fills in `entry`.
  absl::StatusOr<InferenceRequest> Convert(tp::v1::StreamRequest& message, Entry& entry);
  // The writer thread: answers the front entry once it is done, until reads are done and every
  // entry is answered, or a write fails.
  void WriteAnswers();
  // Requests admitted but never answered (the client cancelled, or went away): counted once the
  // core is done with them.
  void CountUnanswered();
  // Each request's own count (tp_requests_total, latency), with the device it ran or failed on.
  void Record(const Entry& entry, grpc::StatusCode code) const;

  const ServiceEnv& env_;
  std::atomic<int64_t>* open_streams_;
  grpc::ServerContext* context_;
  ServerStream* stream_;
  std::shared_ptr<State> state_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
};

}  // namespace tpserve::server
