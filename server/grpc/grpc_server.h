// The gRPC transport: builds and runs a grpc::Server with tp.v1's two services, the Open Inference
// Protocol's inference.GRPCInferenceService (kserve_service.h), the standard health service
// (grpc.health.v1), server reflection, optional TLS and bearer-token auth, over
// an InferenceCore it does not own.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/inference_core.h"
#include "server/grpc/rpc_scope.h"
#include "server/metrics/metrics.h"

namespace grpc {
class Server;
}

namespace tpserve::server {

struct TransportConfig {
  std::string listen_address = "0.0.0.0:50051";  // port 0 picks a free one (see GrpcServer::port)
  std::string tls_cert_file;  // PEM; with tls_key_file turns TLS on
  std::string tls_key_file;   // PEM
  std::string auth_token;     // non-empty: every tp.v1 call needs "authorization: Bearer <token>"
  int64_t max_message_bytes = 64 << 20;  // receive and send limit per message
  bool reflection = true;
  int64_t chunk_elements = 262144;  // default elements per streamed WeightsChunk
  int64_t stream_max_in_flight = 64;
  int64_t max_streams = 256;  // open Stream calls (each holds two threads); one more: RESOURCE_EXHAUSTED
  int max_threads = 1024;     // gRPC's synchronous-server threads (one per running call); see SERVER.md

  bool tls() const { return !tls_cert_file.empty() || !tls_key_file.empty(); }
  std::string DebugString() const;  // the token is never printed
};

class ModelServiceImpl;
class ComputeServiceImpl;
class HealthServiceImpl;
class KserveServiceImpl;

class GrpcServer {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const TransportConfig& config, InferenceCore* core,
                                                           Metrics* metrics);
  ~GrpcServer();

  int port() const { return port_; }
  // Health turns NOT_SERVING, new calls are refused, calls in flight get `grace` to finish.
  void Shutdown(absl::Duration grace);
  void Wait();

 private:
  GrpcServer() = default;
  ServiceEnv env_;
  std::unique_ptr<ModelServiceImpl> model_service_;
  std::unique_ptr<ComputeServiceImpl> compute_service_;
  std::unique_ptr<HealthServiceImpl> health_service_;
  std::unique_ptr<KserveServiceImpl> kserve_service_;  // inference.GRPCInferenceService (KServe v2)
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  int lost_listener_ = -1;  // InferenceCore::AddDeviceLostListener: health NOT_SERVING on a device fault
};

}  // namespace tpserve::server
