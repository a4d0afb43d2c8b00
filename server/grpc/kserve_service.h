// inference.GRPCInferenceService: the Open Inference Protocol (KServe v2) on tpserve's port,
// beside tp.v1. A thin layer like compute_service: each handler converts the request
// (kserve_convert.h), runs it on the same core (the same batching, deadlines and admission as
// tp.v1 calls) and converts the result back. The same RpcScope gives it the bearer-token check
// and the metrics (method label "ModelInfer", ...; per device).
//
// ServerLive and ServerReady answer without a token (they are probes, like grpc.health.v1);
// every other method needs it when the server has one. Not served: ModelStatistics, the
// shared-memory, trace and log calls (not declared: UNIMPLEMENTED) and RepositoryModelUnload
// (UNIMPLEMENTED, naming tp.v1's DeleteModel).
#pragma once

#include <atomic>

#include "inference/grpc_service.grpc.pb.h"
#include "server/grpc/rpc_scope.h"

namespace tpserve::server {

class KserveServiceImpl final : public inference::GRPCInferenceService::Service {
 public:
  explicit KserveServiceImpl(const ServiceEnv& env);

  // ServerReady answers ready while this is set and some device can still serve (the transport
  // sets it with the health service's SERVING).
  void SetReady(bool ready) { ready_.store(ready); }

  grpc::Status ServerLive(grpc::ServerContext* context, const inference::ServerLiveRequest* request,
                          inference::ServerLiveResponse* response) override;
  grpc::Status ServerReady(grpc::ServerContext* context, const inference::ServerReadyRequest* request,
                           inference::ServerReadyResponse* response) override;
  // ready: the model exists and `version` is empty or the version it holds now.
  grpc::Status ModelReady(grpc::ServerContext* context, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override;
  grpc::Status ServerMetadata(grpc::ServerContext* context, const inference::ServerMetadataRequest* request,
                              inference::ServerMetadataResponse* response) override;
  // inputs x1 [-1, dim_in1], x2 [-1, dim_in2], output out [-1, dim_out]; versions: the current one.
  grpc::Status ModelMetadata(grpc::ServerContext* context, const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response) override;
  grpc::Status ModelInfer(grpc::ServerContext* context, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override;
  // Requests are answered one after another, in order; an error answers that request alone
  // (error_message) and the stream goes on.
  grpc::Status ModelStreamInfer(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>* stream) override;
  // Triton's config fields that describe our models: inputs (grad_out optional), outputs without
  // the batch dimension, max_batch_size, and the irreps and sizes as parameters.
  grpc::Status ModelConfig(grpc::ServerContext* context, const inference::ModelConfigRequest* request,
                           inference::ModelConfigResponse* response) override;
  grpc::Status RepositoryIndex(grpc::ServerContext* context, const inference::RepositoryIndexRequest* request,
                               inference::RepositoryIndexResponse* response) override;
  // Every model of --model_dir is loaded at start and stays loaded: loading one that exists is a
  // no-op (OK), an unknown one is NOT_FOUND.
  grpc::Status RepositoryModelLoad(grpc::ServerContext* context, const inference::RepositoryModelLoadRequest* request,
                                   inference::RepositoryModelLoadResponse* response) override;
  grpc::Status RepositoryModelUnload(grpc::ServerContext* context,
                                     const inference::RepositoryModelUnloadRequest* request,
                                     inference::RepositoryModelUnloadResponse* response) override;

 private:
  // One inference: convert, run on the core within the call's deadline, convert back.
  absl::Status Infer(grpc::ServerContext* context, const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response, std::string* device);

  const ServiceEnv& env_;
  std::atomic<bool> ready_{false};
};

}  // namespace tpserve::server
