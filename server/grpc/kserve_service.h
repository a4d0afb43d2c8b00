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
//
// The methods are registered by hand (sync_methods.h: the generated service's names and wire
// messages) because ModelInfer is served around its tensor bytes, as tp.v1's Forward is
// (forward_wire.h): raw FP32 inputs go from gRPC's receive buffer straight into the page-locked
// buffers the core leases for the call (InferenceCore::LeaseBuffers), which the device copies from
// (the rest of the message is parsed by protobuf), and a float32 forward answered in raw bytes has
// `out` written by the device into a lease that the response sends from (the message's other
// fields, then raw_output_contents' tag and length, then the lease). Any other request is parsed
// by protobuf as the generated handler would.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "inference/grpc_service.grpc.pb.h"
#include "server/core/call_buffers.h"
#include "server/grpc/rpc_scope.h"

namespace tpserve::server {

struct RawInputs;  // a ModelInfer request's raw FP32 inputs as received (kserve_service.cc)

class KserveServiceImpl final : public grpc::Service {
 public:
  explicit KserveServiceImpl(const ServiceEnv& env);

  // ServerReady answers ready while this is set and some device can still serve (the transport
  // sets it with the health service's SERVING).
  void SetReady(bool ready) { ready_.store(ready); }

  grpc::Status ServerLive(grpc::ServerContext* context, const inference::ServerLiveRequest* request,
                          inference::ServerLiveResponse* response);
  grpc::Status ServerReady(grpc::ServerContext* context, const inference::ServerReadyRequest* request,
                           inference::ServerReadyResponse* response);
  // ready: the model exists and `version` is empty or the version it holds now.
  grpc::Status ModelReady(grpc::ServerContext* context, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response);
  grpc::Status ServerMetadata(grpc::ServerContext* context, const inference::ServerMetadataRequest* request,
                              inference::ServerMetadataResponse* response);
  // inputs x1 [-1, dim_in1], x2 [-1, dim_in2], output out [-1, dim_out]; versions: the current one.
  grpc::Status ModelMetadata(grpc::ServerContext* context, const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response);
  // Request and response are inference.ModelInferRequest / ModelInferResponse on the wire.
  grpc::Status ModelInfer(grpc::ServerContext* context, const grpc::ByteBuffer* request, grpc::ByteBuffer* response);
  // Requests are answered one after another, in order; an error answers that request alone
  // (error_message) and the stream goes on.
  grpc::Status ModelStreamInfer(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>* stream);
  // Triton's config fields that describe our models: inputs (grad_out optional), outputs without
  // the batch dimension, max_batch_size, and the irreps and sizes as parameters.
  grpc::Status ModelConfig(grpc::ServerContext* context, const inference::ModelConfigRequest* request,
                           inference::ModelConfigResponse* response);
  grpc::Status RepositoryIndex(grpc::ServerContext* context, const inference::RepositoryIndexRequest* request,
                               inference::RepositoryIndexResponse* response);
  // Every model of --model_dir is loaded at start and stays loaded: loading one that exists is a
  // no-op (OK), an unknown one is NOT_FOUND.
  grpc::Status RepositoryModelLoad(grpc::ServerContext* context, const inference::RepositoryModelLoadRequest* request,
                                   inference::RepositoryModelLoadResponse* response);
  grpc::Status RepositoryModelUnload(grpc::ServerContext* context,
                                     const inference::RepositoryModelUnloadRequest* request,
                                     inference::RepositoryModelUnloadResponse* response);

 private:
  // One inference: convert, lease the call's buffers from the core (`buffers`, which the caller
  // keeps until the response is sent), run within the call's deadline, convert back. With
  // `lease_out` (unary calls): a float32 raw forward's `out` is left in buffers' out lease, which
  // the caller sends after `response` as raw_output_contents[0]. `raw`: the request's raw FP32
  // inputs where gRPC received them (ModelInfer's fast path), else null.
  absl::Status Infer(grpc::ServerContext* context, const inference::ModelInferRequest& request,
                     RawInputs* raw, inference::ModelInferResponse* response, std::string* device,
                     bool lease_out, CallBuffers* buffers, RpcScope* scope);

  const ServiceEnv& env_;
  std::atomic<bool> ready_{false};
};

}  // namespace tpserve::server
