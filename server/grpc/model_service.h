// tp.v1.ModelService: models, their weights (chunked streams) and their gradient buffers.
#pragma once

#include "server/grpc/rpc_scope.h"
#include "tp/v1/tensor_product.grpc.pb.h"

namespace tpserve::server {

class ModelServiceImpl final : public tp::v1::ModelService::Service {
 public:
  explicit ModelServiceImpl(const ServiceEnv& env) : env_(env) {}

  grpc::Status CreateModel(grpc::ServerContext* context, grpc::ServerReader<tp::v1::CreateModelRequest>* reader,
                           tp::v1::ModelInfo* response) override;
  grpc::Status GetModel(grpc::ServerContext* context, const tp::v1::GetModelRequest* request,
                        tp::v1::ModelInfo* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const tp::v1::ListModelsRequest* request,
                          tp::v1::ListModelsResponse* response) override;
  grpc::Status DeleteModel(grpc::ServerContext* context, const tp::v1::DeleteModelRequest* request,
                           tp::v1::DeleteModelResponse* response) override;
  grpc::Status UploadWeights(grpc::ServerContext* context, grpc::ServerReader<tp::v1::UploadWeightsRequest>* reader,
                             tp::v1::ModelInfo* response) override;
  grpc::Status DownloadWeights(grpc::ServerContext* context, const tp::v1::DownloadWeightsRequest* request,
                               grpc::ServerWriter<tp::v1::WeightsChunk>* writer) override;
  grpc::Status GetGradient(grpc::ServerContext* context, const tp::v1::GetGradientRequest* request,
                           grpc::ServerWriter<tp::v1::WeightsChunk>* writer) override;
  grpc::Status ZeroGradient(grpc::ServerContext* context, const tp::v1::ZeroGradientRequest* request,
                            tp::v1::ZeroGradientResponse* response) override;
  grpc::Status SgdStep(grpc::ServerContext* context, const tp::v1::SgdStepRequest* request,
                       tp::v1::ModelInfo* response) override;

 private:
  const ServiceEnv& env_;
};

}  // namespace tpserve::server
