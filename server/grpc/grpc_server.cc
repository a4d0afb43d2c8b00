#include "server/grpc/grpc_server.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "wire/channel_tuning.h"
#include "server/grpc/compute_service.h"
#include "server/grpc/health_service.h"
#include "server/grpc/kserve_service.h"
#include "server/grpc/network_service.h"
#include "server/grpc/model_service.h"
#include "server/tls/server_tls.h"
#include "kernels/core/status_macros.h"

namespace tpserve::server {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(what, " ", path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes `contents` to dir/name through a temp file and a rename, so a reader sees old or new.
absl::Status WriteAtomically(const std::string& dir, const std::string& name, const std::string& contents) {
  const std::string path = dir + "/" + name, tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << contents;
    if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return absl::InternalError(absl::StrCat("cannot rename ", tmp));
  return absl::OkStatus();
}

}  // namespace

absl::Status GrpcServer::StageCertificates() {
  RETURN_IF_ERROR(CheckCertificateAndKey(config_.tls_cert_file, config_.tls_key_file));
  absl::StatusOr<std::string> cert = ReadFile(config_.tls_cert_file, "TLS certificate");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(config_.tls_key_file, "TLS key");
  if (!key.ok()) return key.status();
  std::string client_ca;
  if (!config_.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile(config_.tls_client_ca_file, "TLS client CA");
    if (!ca.ok()) return ca.status();
    if (ca->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("TLS client CA ", config_.tls_client_ca_file, ": expected PEM certificates"));
    }
    client_ca = *std::move(ca);
    RETURN_IF_ERROR(WriteAtomically(tls_staging_dir_, "client_ca.pem", client_ca));
  }
  // The watcher reads both files at each refresh; the key goes last so that a refresh between the
  // two renames sees the new certificate with the old key for at most one interval.
  RETURN_IF_ERROR(WriteAtomically(tls_staging_dir_, "cert.pem", *cert));
  return WriteAtomically(tls_staging_dir_, "key.pem", *key);
}

absl::Status GrpcServer::ReloadCertificates() {
  if (!config_.tls()) return absl::OkStatus();
  return StageCertificates();
}

std::string TransportConfig::DebugString() const {
  return absl::StrFormat(
      "listen=%s tls=%s client_certificates=%s auth=%s max_message_bytes=%d reflection=%s chunk_elements=%d stream_max_in_flight=%d "
      "max_streams=%d max_threads=%d max_open_watch_streams=%d max_concurrent_streams=%d keepalive_time_seconds=%g "
      "keepalive_timeout_seconds=%g min_client_ping_interval_seconds=%g max_connection_idle_seconds=%g "
      "max_connection_age_seconds=%g max_connection_age_grace_seconds=%g upload_idle_seconds=%g "
      "idle_release_seconds=%g",
      listen_address, tls() ? absl::StrCat("on (cert ", tls_cert_file, ")") : "off",
      tls_client_ca_file.empty() ? "not required" : absl::StrCat("required (CA ", tls_client_ca_file, ")"),
      auth_token.empty() ? "off" : "bearer token", max_message_bytes, reflection ? "on" : "off", chunk_elements,
      stream_max_in_flight, max_streams, max_threads, max_open_watch_streams, max_concurrent_streams,
      keepalive_time_seconds, keepalive_timeout_seconds, min_client_ping_interval_seconds, max_connection_idle_seconds,
      max_connection_age_seconds, max_connection_age_grace_seconds, upload_idle_seconds, idle_release_seconds);
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
  if (config.max_open_watch_streams < 1 || config.max_concurrent_streams < 1 || config.keepalive_time_seconds <= 0 ||
      config.keepalive_timeout_seconds <= 0 || config.min_client_ping_interval_seconds < 0 ||
      config.max_connection_idle_seconds < 0 || config.max_connection_age_seconds < 0 ||
      config.max_connection_age_grace_seconds < 0 || config.upload_idle_seconds < 0 ||
      config.idle_release_seconds < 0) {
    return absl::InvalidArgumentError(
        "max_open_watch_streams and max_concurrent_streams must be >= 1, keepalive times > 0, the other "
        "durations >= 0");
  }
  server->env_.max_message_bytes = config.max_message_bytes;
  server->housekeeper_ =
      std::make_unique<Housekeeper>(core, config.upload_idle_seconds, config.idle_release_seconds);
  server->env_.housekeeper = server->housekeeper_.get();
  // Token-free streams may hold at most a quarter of the threads, whatever the flag says.
  server->watch_streams_ = std::make_unique<OpenStreamLimit>(
      std::max<int64_t>(1, std::min<int64_t>(config.max_open_watch_streams, config.max_threads / 4)));
  server->model_service_ = std::make_unique<ModelServiceImpl>(server->env_);
  server->compute_service_ = std::make_unique<ComputeServiceImpl>(server->env_);
  server->network_service_ = std::make_unique<NetworkServiceImpl>(server->env_);
  server->health_service_ = std::make_unique<HealthServiceImpl>(
      std::vector<std::string>{tp::v1::ModelService::service_full_name(),
                               tp::v1::TensorProductService::service_full_name(),
                               tp::v1::NetworkService::service_full_name(),
                               inference::GRPCInferenceService::service_full_name()},
      server->watch_streams_.get());
  server->kserve_service_ = std::make_unique<KserveServiceImpl>(server->env_);

  std::shared_ptr<grpc::ServerCredentials> credentials;
  server->config_ = config;
  if (config.tls()) {
    if (config.tls_cert_file.empty() || config.tls_key_file.empty()) {
      return absl::InvalidArgumentError("TLS needs both --tls_cert and --tls_key");
    }
    std::string staging = (std::filesystem::temp_directory_path() / "tpserve-tls-XXXXXX").string();
    if (::mkdtemp(staging.data()) == nullptr) return absl::InternalError(absl::StrCat("mkdtemp ", staging));
    server->tls_staging_dir_ = staging;
    RETURN_IF_ERROR(server->StageCertificates());
    // gRPC's file watcher serves the staged files and picks up what ReloadCertificates stages.
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        staging + "/key.pem", staging + "/cert.pem", config.tls_client_ca_file.empty() ? "" : staging + "/client_ca.pem",
        static_cast<unsigned>(std::max(config.tls_reload_seconds, 1)));
    grpc::experimental::TlsServerCredentialsOptions options(provider);
    options.watch_identity_key_cert_pairs();
    if (!config.tls_client_ca_file.empty()) {
      options.watch_root_certs();
      options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    }
    credentials = grpc::experimental::TlsServerCredentials(options);
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
  // gRPC sets SO_REUSEPORT by default: a second server on the same port would start and take half
  // of the new connections. Off, its bind fails and it says so.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Connection-level limits: calls per connection, keepalive both ways, idle and old connections.
  auto ms = [](double seconds) { return static_cast<int>(std::min(seconds * 1000.0, double{INT32_MAX})); };
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             static_cast<int>(std::min<int64_t>(config.max_concurrent_streams, INT32_MAX)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(config.keepalive_time_seconds));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(config.keepalive_timeout_seconds));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             ms(config.min_client_ping_interval_seconds));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  if (config.max_connection_idle_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms(config.max_connection_idle_seconds));
  }
  if (config.max_connection_age_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, ms(config.max_connection_age_seconds));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, ms(config.max_connection_age_grace_seconds));
  }
  if (config.reflection) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
    interceptors.push_back(MakeReflectionStreamLimiter(server->watch_streams_.get()));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  // Each running call holds a thread of the synchronous server: the quota bounds them, so that a
  // flood of calls cannot exhaust the process (calls past it answer RESOURCE_EXHAUSTED).
  grpc::ResourceQuota quota("tpserve");
  quota.SetMaxThreads(config.max_threads);
  builder.SetResourceQuota(quota);
  builder.RegisterService(server->model_service_.get());
  builder.RegisterService(server->compute_service_.get());
  builder.RegisterService(server->network_service_.get());
  builder.RegisterService(server->health_service_.get());
  builder.RegisterService(server->kserve_service_.get());
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen_address,
                                               " (is another process, maybe another tpserve, using the port?)"));
  }
  server->health_service_->SetServing(true);
  server->kserve_service_->SetReady(true);
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
    server_.reset();  // its certificate watcher reads the staged files until it goes
  }
  if (!tls_staging_dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(tls_staging_dir_, ignored);
  }
}

void GrpcServer::Shutdown(absl::Duration grace) {
  health_service_->BeginShutdown();
  kserve_service_->SetReady(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
}

void GrpcServer::Wait() { server_->Wait(); }

}  // namespace tpserve::server
