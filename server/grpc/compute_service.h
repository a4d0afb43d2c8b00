// tp.v1.TensorProductService: forward and backward calls (unary, chunked, and the ordered
// bidirectional stream) and the Echo probe. Each handler converts the request (convert.h), runs
// it on the core within the call's deadline and converts the result back.
#pragma once

#include <atomic>

#include "server/grpc/rpc_scope.h"
#include "tp/v1/tensor_product.grpc.pb.h"

namespace tpserve::server {

// Every method is served with the synchronous API. A server with any callback-API method (an
// earlier Stream was one) answers its synchronous unary calls 0.1-0.15 ms slower: on the H100
// host a unary Echo of the seed's sizes took p50 0.57-0.63 ms instead of 0.42-0.49 ms
// (grpc-echo-probe, docs/BENCHMARKS.md). The price: a Stream holds two threads while open.
//
// The methods are registered by hand (sync_methods.h: the generated service's names and wire
// messages) because Forward is served from the message's bytes: x1 and x2 are read from gRPC's
// receive buffer straight into page-locked buffers the core leases for the call
// (InferenceCore::LeaseBuffers), which the device copies from, and `out` is sent from the leased
// buffer the device copied it into (forward_wire.h).
// Through the generated handler the same call made four more copies of its tensors (into the
// request message, into the worker's staging, out of it, into the response message). The other
// methods parse their requests so that one that does not parse is INVALID_ARGUMENT, as Forward's
// is (request_parsing.h).
class ComputeServiceImpl final : public grpc::Service {
 public:
  explicit ComputeServiceImpl(const ServiceEnv& env);

  grpc::Status Forward(grpc::ServerContext* context, const grpc::ByteBuffer* request, grpc::ByteBuffer* response);
  grpc::Status Backward(grpc::ServerContext* context, const tp::v1::BackwardRequest* request,
                        tp::v1::BackwardResponse* response);
  grpc::Status BackwardChunked(grpc::ServerContext* context, const tp::v1::BackwardRequest* request,
                               grpc::ServerWriter<tp::v1::BackwardResponse>* writer);
  // Served by a StreamHandler (stream_handler.h).
  grpc::Status Stream(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<tp::v1::StreamResponse, grpc::ByteBuffer>* stream);
  grpc::Status Echo(grpc::ServerContext* context, const tp::v1::EchoRequest* request,
                    tp::v1::EchoResponse* response);

 private:
  const ServiceEnv& env_;
  std::atomic<int64_t> open_streams_{0};
};

}  // namespace tpserve::server
