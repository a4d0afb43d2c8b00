// tp.v1.TensorProductService: forward and backward calls (unary, chunked, and the ordered
// bidirectional stream) and the Echo probe. Each handler converts the request (convert.h), runs
// it on the core within the call's deadline and converts the result back.
#pragma once

#include "server/grpc/rpc_scope.h"
#include "tp/v1/tensor_product.grpc.pb.h"

namespace tpserve::server {

// Stream is served with the callback API (server/grpc/stream_reactor.h); the unary and
// server-streaming methods with the synchronous one.
class ComputeServiceImpl final
    : public tp::v1::TensorProductService::WithCallbackMethod_Stream<tp::v1::TensorProductService::Service> {
 public:
  explicit ComputeServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status Forward(grpc::ServerContext* context, const tp::v1::ForwardRequest* request,
                       tp::v1::ForwardResponse* response) override;
  grpc::Status Backward(grpc::ServerContext* context, const tp::v1::BackwardRequest* request,
                        tp::v1::BackwardResponse* response) override;
  grpc::Status BackwardChunked(grpc::ServerContext* context, const tp::v1::BackwardRequest* request,
                               grpc::ServerWriter<tp::v1::BackwardResponse>* writer) override;
  grpc::ServerBidiReactor<tp::v1::StreamRequest, tp::v1::StreamResponse>* Stream(
      grpc::CallbackServerContext* context) override;
  grpc::Status Echo(grpc::ServerContext* context, const tp::v1::EchoRequest* request,
                    tp::v1::EchoResponse* response) override;

 private:
  const ServiceEnv& env_;
};

}  // namespace tpserve::server
