// tp.v1.ModelService: models, their weights (chunked streams) and their gradient buffers.
#pragma once

#include "grpcpp/support/byte_buffer.h"
#include "server/grpc/rpc_scope.h"
#include "tp/v1/tensor_product.grpc.pb.h"

namespace tpserve::server {

// Registered by hand (as the generated tp::v1::ModelService::Service would, same names and
// messages) so that a request that does not parse is INVALID_ARGUMENT (request_parsing.h).
class ModelServiceImpl final : public grpc::Service {
 public:
  explicit ModelServiceImpl(const ServiceEnv& env);

  grpc::Status CreateModel(grpc::ServerContext* context, grpc::ServerReader<grpc::ByteBuffer>* reader,
                           tp::v1::ModelInfo* response);
  grpc::Status GetModel(grpc::ServerContext* context, const tp::v1::GetModelRequest* request,
                        tp::v1::ModelInfo* response);
  grpc::Status ListModels(grpc::ServerContext* context, const tp::v1::ListModelsRequest* request,
                          tp::v1::ListModelsResponse* response);
  grpc::Status DeleteModel(grpc::ServerContext* context, const tp::v1::DeleteModelRequest* request,
                           tp::v1::DeleteModelResponse* response);
  grpc::Status UploadWeights(grpc::ServerContext* context, grpc::ServerReader<grpc::ByteBuffer>* reader,
                             tp::v1::ModelInfo* response);
  grpc::Status DownloadWeights(grpc::ServerContext* context, const tp::v1::DownloadWeightsRequest* request,
                               grpc::ServerWriter<tp::v1::WeightsChunk>* writer);
  grpc::Status GetGradient(grpc::ServerContext* context, const tp::v1::GetGradientRequest* request,
                           grpc::ServerWriter<tp::v1::WeightsChunk>* writer);
  grpc::Status ZeroGradient(grpc::ServerContext* context, const tp::v1::ZeroGradientRequest* request,
                            tp::v1::ZeroGradientResponse* response);
  grpc::Status SgdStep(grpc::ServerContext* context, const tp::v1::SgdStepRequest* request,
                       tp::v1::ModelInfo* response);

 private:
  absl::Status CreateNetworkModel(const tp::v1::CreateModelHeader& header,
                                  grpc::ServerReader<grpc::ByteBuffer>* reader, RpcScope* scope,
                                  tp::v1::ModelInfo* response);

  const ServiceEnv& env_;
};

}  // namespace tpserve::server
