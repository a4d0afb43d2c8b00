// tp.v1.NetworkService: Predict and TrainStep on network models (kind "qm9"). Each handler decodes
// the graph batch (graph_codec.h) and runs the call through the model's NetworkRunner (CPU or GPU,
// server/core/network_runner.h) on the calling thread: with the synchronous API that thread is the
// call's own, and the batcher and device workers (which the tensor-product calls use) launch tensor
// products, not whole networks.
#pragma once

#include "server/grpc/rpc_scope.h"
#include "tp/v1/tensor_product.grpc.pb.h"

namespace tpserve::server {

// Registered by hand, as the other tp.v1 services are, so that a request that does not parse is
// INVALID_ARGUMENT (request_parsing.h).
class NetworkServiceImpl final : public grpc::Service {
 public:
  explicit NetworkServiceImpl(const ServiceEnv& env);

  grpc::Status Predict(grpc::ServerContext* context, const tp::v1::PredictRequest* request,
                       tp::v1::PredictResponse* response);
  grpc::Status TrainStep(grpc::ServerContext* context, const tp::v1::TrainStepRequest* request,
                         tp::v1::TrainStepResponse* response);

 private:
  const ServiceEnv& env_;
};

}  // namespace tpserve::server
