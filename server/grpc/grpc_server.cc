#include "server/grpc/grpc_server.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/resource_quota.h"
#include "wire/channel_tuning.h"
#include "server/grpc/compute_service.h"
#include "server/grpc/health_service.h"
#include "server/grpc/model_service.h"

namespace tpserve::server {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(what, " ", path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::string TransportConfig::DebugString() const {
  return absl::StrFormat(
      "listen=%s tls=%s auth=%s max_message_bytes=%d reflection=%s chunk_elements=%d stream_max_in_flight=%d "
      "max_streams=%d max_threads=%d",
      listen_address, tls() ? absl::StrCat("on (cert ", tls_cert_file, ")") : "off",
      auth_token.empty() ? "off" : "bearer token", max_message_bytes, reflection ? "on" : "off", chunk_elements,
      stream_max_in_flight, max_streams, max_threads);
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const TransportConfig& config, InferenceCore* core,
                                                              Metrics* metrics) {
  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->env_.core = core;
  server->env_.metrics = metrics;
  server->env_.auth_token = config.auth_token;
  // A streamed chunk must fit in one message, with room for its framing.
  const int64_t max_chunk_elements = std::max<int64_t>(1, (config.max_message_bytes - 1024) / 4);
  server->env_.chunk_elements = std::clamp<int64_t>(config.chunk_elements, 1, max_chunk_elements);
  server->env_.max_chunk_elements = max_chunk_elements;
  server->env_.stream_max_in_flight = config.stream_max_in_flight;
  server->env_.max_streams = config.max_streams;
  if (config.max_streams < 1 || config.max_threads < 4) {
    return absl::InvalidArgumentError("max_streams must be >= 1 and max_threads >= 4");
  }
  server->model_service_ = std::make_unique<ModelServiceImpl>(server->env_);
  server->compute_service_ = std::make_unique<ComputeServiceImpl>(server->env_);
  server->health_service_ = std::make_unique<HealthServiceImpl>(std::vector<std::string>{
      tp::v1::ModelService::service_full_name(), tp::v1::TensorProductService::service_full_name()});

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (config.tls()) {
    if (config.tls_cert_file.empty() || config.tls_key_file.empty()) {
      return absl::InvalidArgumentError("TLS needs both --tls_cert and --tls_key");
    }
    absl::StatusOr<std::string> cert = ReadFile(config.tls_cert_file, "TLS certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(config.tls_key_file, "TLS key");
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(options);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }

  grpc::EnableDefaultHealthCheckService(false);  // ours is synchronous (health_service.h)
  if (config.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen_address, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(config.max_message_bytes, INT32_MAX)));
  builder.SetMaxSendMessageSize(static_cast<int>(std::min<int64_t>(config.max_message_bytes, INT32_MAX)));
  for (const auto& [name, value] : transport::kTensorChannelArgs) builder.AddChannelArgument(name, value);
  // Each running call holds a thread of the synchronous server: the quota bounds them, so that a
  // flood of calls cannot exhaust the process (calls past it answer RESOURCE_EXHAUSTED).
  grpc::ResourceQuota quota("tpserve");
  quota.SetMaxThreads(config.max_threads);
  builder.SetResourceQuota(quota);
  builder.RegisterService(server->model_service_.get());
  builder.RegisterService(server->compute_service_.get());
  builder.RegisterService(server->health_service_.get());
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen_address));
  }
  server->health_service_->SetServing(true);
  // A lost device cannot come back in this process. While other devices serve, the server keeps
  // SERVING with less capacity (tp_device_lost{device} and the log say which is gone); once every
  // device is lost it reports NOT_SERVING so that a load balancer or an orchestrator moves traffic
  // away and restarts it (calls meanwhile answer UNAVAILABLE).
  HealthServiceImpl* health = server->health_service_.get();
  server->lost_listener_ = core->AddDeviceLostListener([health, core](const std::string&, const std::string&) {
    if (core->AllDevicesLost()) health->SetServing(false);
  });
  return server;
}

GrpcServer::~GrpcServer() {
  if (lost_listener_ >= 0) env_.core->RemoveDeviceLostListener(lost_listener_);
  if (health_service_) health_service_->BeginShutdown();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
}

void GrpcServer::Shutdown(absl::Duration grace) {
  health_service_->BeginShutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
}

void GrpcServer::Wait() { server_->Wait(); }

}  // namespace tpserve::server
