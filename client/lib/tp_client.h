// tp_client: a C++ client of tpserve over the generated stubs. It adds what every caller would
// otherwise repeat: channel set-up (TLS, bearer token, message limits), chunked weight uploads and
// downloads, reassembly of chunked gradients, and grpc::Status -> absl::Status.
//
// One client may front several servers: `target` names one address, a list or a resolver URI
// (channel_target.h), and the channel balances calls over them with the policy of
// service_config.h (round_robin, health checking, retries of idempotent calls on UNAVAILABLE).
// Every call carries a deadline (timeout_seconds) unless the caller turns it off.
//
// Thread-safety: a TpClient may be shared by threads (one channel, many concurrent calls).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/lib/service_config.h"
#include "grpcpp/grpcpp.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tp/v1/tensor_product.grpc.pb.h"

namespace tpserve::client {

struct ClientOptions {
  // "host:port", "host1:port,host2:port", "ipv4:127.0.0.1:1,127.0.0.1:2", "dns:///name:port", ...
  std::string target;
  std::string auth_token;           // sent as "authorization: Bearer <token>" when set
  bool tls = false;                 // TLS channel (server certificate checked against tls_ca_file)
  std::string tls_ca_file;          // PEM roots; empty: the system's roots
  std::string tls_server_name;      // override of the name checked in the certificate
  std::string tls_cert_file;        // PEM client certificate chain, for servers that require one (mTLS)
  std::string tls_key_file;         // its PEM private key
  int64_t max_message_bytes = 64 << 20;
  double timeout_seconds = 60;      // deadline of every unary and server-streaming call; 0: none
  double stream_timeout_seconds = 0;  // deadline of a bidirectional Stream (long-lived); 0: none
  ChannelPolicy policy;             // load balancing, health checking, retries (service_config.h)
  // Health checking needs other servers to send to: kAuto turns it on when `target` may name
  // several (a list or a resolver URI) and off for one "host:port", whose callers would rather see
  // the server's own error than the channel's "no healthy server".
  enum class HealthChecking { kAuto, kOn, kOff } health_checking = HealthChecking::kAuto;
  int64_t chunk_elements = 262144;  // float32 elements per uploaded chunk (1 MB)
};

absl::Status FromGrpc(const grpc::Status& status);

class TpClient {
 public:
  static absl::StatusOr<std::unique_ptr<TpClient>> Connect(const ClientOptions& options);

  // ---- models ----
  // Seeded initialization when `weights` is absent, else an upload in chunks.
  absl::StatusOr<tp::v1::ModelInfo> CreateModel(const std::string& name, const tp::v1::ModelSpec& spec,
                                                const std::vector<float>* weights, uint64_t seed = 0);
  absl::StatusOr<tp::v1::ModelInfo> GetModel(const std::string& name);
  absl::StatusOr<std::vector<tp::v1::ModelInfo>> ListModels();
  absl::Status DeleteModel(const std::string& name);
  // `after_chunk(elements_sent)` runs after each chunk is written (tests use it to crash the server
  // mid-upload).
  absl::StatusOr<tp::v1::ModelInfo> UploadWeights(const std::string& name, const std::vector<float>& weights,
                                                  uint64_t expected_version = 0,
                                                  const std::function<void(int64_t)>& after_chunk = nullptr);
  // Weights (float32) and the version they belong to.
  absl::StatusOr<std::vector<float>> DownloadWeights(const std::string& name, uint64_t* version = nullptr);

  // ---- compute ----
  // Forward and Echo send their large bytes fields from `request` itself (borrowed_wire.h): no copy
  // by the serializer. `request` must not change until the call returns.
  absl::StatusOr<tp::v1::ForwardResponse> Forward(const tp::v1::ForwardRequest& request);
  absl::StatusOr<tp::v1::BackwardResponse> Backward(const tp::v1::BackwardRequest& request);
  // Reassembles the chunked weight gradient into response.grad_weight (float32, [weight_numel]).
  absl::StatusOr<tp::v1::BackwardResponse> BackwardChunked(const tp::v1::BackwardRequest& request);
  absl::StatusOr<tp::v1::EchoResponse> Echo(const tp::v1::EchoRequest& request);

  // A bidirectional Stream call: Write requests, Read responses (in request order).
  struct Stream {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReaderWriter<tp::v1::StreamRequest, tp::v1::StreamResponse>> rpc;
  };
  Stream OpenStream();

  // ---- gradient buffer ----
  absl::StatusOr<std::vector<float>> GetGradient(const std::string& name);
  absl::Status ZeroGradient(const std::string& name);
  absl::StatusOr<tp::v1::ModelInfo> SgdStep(const std::string& name, double learning_rate, bool zero_gradient);

  // grpc.health.v1 Check ("" = the whole server): SERVING, NOT_SERVING, ... Asked over a channel
  // of its own without health checking (one server of a list), so that it reaches a server whose
  // health keeps it out of the balanced channel.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(const std::string& service = "");

  // A context carrying the token and the per-call deadline, for direct stub calls.
  std::unique_ptr<grpc::ClientContext> NewContext() const { return NewContext(options_.timeout_seconds); }
  std::unique_ptr<grpc::ClientContext> NewContext(double timeout_seconds) const;
  tp::v1::ModelService::Stub& models() { return *models_; }
  tp::v1::TensorProductService::Stub& compute() { return *compute_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const std::string& channel_target() const { return channel_target_; }
  const std::string& service_config_json() const { return service_config_json_; }

 private:
  explicit TpClient(ClientOptions options) : options_(std::move(options)) {}
  // A unary call of `method` (a full path, "/tp.v1.TensorProductService/Forward") with request
  // bytes already encoded (borrowed_wire.h), through gRPC's generic stub.
  template <class Response>
  absl::StatusOr<Response> CallEncoded(const std::string& method, const grpc::ByteBuffer& request);
  absl::StatusOr<std::vector<float>> ReadChunks(grpc::ClientReader<tp::v1::WeightsChunk>& reader,
                                                grpc::ClientContext& context, const char* what);

  ClientOptions options_;
  std::string channel_target_, service_config_json_;
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<grpc::Channel> health_channel_;  // pick_first, no health checking
  std::unique_ptr<tp::v1::ModelService::Stub> models_;
  std::unique_ptr<tp::v1::TensorProductService::Stub> compute_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::string forward_path_, echo_path_;  // "/tp.v1.TensorProductService/Forward", ".../Echo"
};

}  // namespace tpserve::client
