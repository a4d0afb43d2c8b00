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
#include "server/grpc/stream_limits.h"
#include "server/metrics/metrics.h"

namespace grpc {
class Server;
}

namespace tpserve::server {

struct TransportConfig {
  std::string listen_address = "0.0.0.0:50051";  // port 0 picks a free one (see GrpcServer::port)
  std::string tls_cert_file;  // PEM; with tls_key_file turns TLS on
  std::string tls_key_file;   // PEM
  // PEM roots: clients must present a certificate they sign (mTLS). Needs TLS.
  std::string tls_client_ca_file;
  // How often gRPC looks at the certificates staged by ReloadCertificates (seconds).
  int tls_reload_seconds = 1;
  std::string auth_token;     // non-empty: every tp.v1 call needs "authorization: Bearer <token>"
  int64_t max_message_bytes = 64 << 20;  // receive and send limit per message
  bool reflection = true;
  int64_t chunk_elements = 262144;  // default elements per streamed WeightsChunk
  int64_t stream_max_in_flight = 64;
  int64_t max_streams = 256;  // open Stream calls (each holds two threads); one more: RESOURCE_EXHAUSTED
  int max_threads = 1024;     // gRPC's synchronous-server threads (one per running call); see SERVER.md
  // ---- limits against clients that hold resources (docs/SERVER.md, "Limits") ----
  // Open Health/Watch + reflection streams (no token needed; each holds a thread): at most this,
  // and at most max_threads / 4.
  int64_t max_open_watch_streams = 32;
  int64_t max_concurrent_streams = 128;       // HTTP/2 streams (calls) per connection
  double keepalive_time_seconds = 60;         // the server pings an idle connection this often ...
  double keepalive_timeout_seconds = 20;      // ... and closes it when the ping is not answered in this
  double min_client_ping_interval_seconds = 10;  // clients pinging more often get GOAWAY (too_many_pings)
  double max_connection_idle_seconds = 1800;  // a connection with no call for this long is closed (0: never)
  double max_connection_age_seconds = 0;      // connections are closed after this long (0: never) ...
  double max_connection_age_grace_seconds = 30;  // ... giving their calls this long to finish
  double upload_idle_seconds = 60;            // an upload with no chunk for this long is dropped (0: never)
  double idle_release_seconds = 30;           // idle this long: pooled memory goes back to the system (0: never)

  bool tls() const { return !tls_cert_file.empty() || !tls_key_file.empty(); }
  std::string DebugString() const;  // the token is never printed
};

class ModelServiceImpl;
class ComputeServiceImpl;
class HealthServiceImpl;
class KserveServiceImpl;
class NetworkServiceImpl;

class GrpcServer {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const TransportConfig& config, InferenceCore* core,
                                                           Metrics* metrics);
  ~GrpcServer();

  int port() const { return port_; }
  // Health turns NOT_SERVING, new calls are refused, calls in flight get `grace` to finish.
  void Shutdown(absl::Duration grace);
  // Re-reads tls_cert/tls_key (and tls_client_ca) after checking them (tpserve does it on SIGHUP):
  // new connections get the new certificate within tls_reload_seconds, open ones keep theirs. A
  // pair that is broken or mismatched is refused with a message and the current one stays. OK and
  // nothing done without TLS.
  absl::Status ReloadCertificates();
  void Wait();

 private:
  GrpcServer() = default;
  absl::Status StageCertificates();

  TransportConfig config_;
  // TLS: the certificate, key and client CA are copied here after each check; gRPC's file watcher
  // serves what this directory holds, so a half-edited file in the user's place is never served.
  std::string tls_staging_dir_;
  ServiceEnv env_;
  std::unique_ptr<ModelServiceImpl> model_service_;
  std::unique_ptr<ComputeServiceImpl> compute_service_;
  std::unique_ptr<HealthServiceImpl> health_service_;
  std::unique_ptr<OpenStreamLimit> watch_streams_;
  std::unique_ptr<Housekeeper> housekeeper_;
  std::unique_ptr<NetworkServiceImpl> network_service_;  // tp.v1.NetworkService (network models)
  std::unique_ptr<KserveServiceImpl> kserve_service_;  // inference.GRPCInferenceService (KServe v2)
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  int lost_listener_ = -1;  // InferenceCore::AddDeviceLostListener: health NOT_SERVING on a device fault
};

}  // namespace tpserve::server
