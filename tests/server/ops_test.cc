// Operations: server reflection lists tp.v1's services; health turns NOT_SERVING at shutdown;
// the config file and its precedence.
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/server_config.h"
#include "tests/server/server_test_util.h"
#include "tests/support/fault_injecting_backend.h"

namespace tpserve::testing {
namespace {

// A forward call of 2 samples for a model with Spec("2x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o").
tp::v1::ForwardRequest SmallForward(const std::string& model) {
  tp::v1::ForwardRequest request;
  request.set_model(model);
  *request.mutable_x1() = F32({2, 5}, {0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 1.0});
  *request.mutable_x2() = F32({2, 4}, {1.0, -0.5, 0.25, 0.75, -1.0, 0.5, -0.25, 0.125});
  return request;
}


TEST(OpsTest, Reflection_ListsTheTensorProductServices) {
  auto server = TestServer::Start();
  std::string listing = ListServicesByReflection(server->target());
  EXPECT_NE(listing.find("tp.v1.TensorProductService"), std::string::npos);
  EXPECT_NE(listing.find("tp.v1.ModelService"), std::string::npos);
  EXPECT_NE(listing.find("grpc.health.v1.Health"), std::string::npos);
}

TEST(OpsTest, Health_IsNotServingOnceShutdownBegins) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  EXPECT_EQ(*client->Health(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(*client->Health("tp.v1.TensorProductService"), grpc::health::v1::HealthCheckResponse::SERVING);
  server->grpc().Shutdown(absl::Seconds(1));
  server->grpc().Wait();
  EXPECT_FALSE(client->Health().ok() && *client->Health() == grpc::health::v1::HealthCheckResponse::SERVING);
}

// A device fault (as a GPU's illegal address) turns health NOT_SERVING, later calls UNAVAILABLE
// naming the device, and tp_device_lost{device} 1 on /metrics; a plain launch error does none of it.
TEST(OpsTest, DeviceFault_TurnsHealthNotServing_AndCallsUnavailable) {
  using grpc::health::v1::HealthCheckResponse;
  auto device = std::make_shared<FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(device));
  auto server = TestServer::Start({}, {}, std::move(backends));
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", Spec("2x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o"), nullptr, /*seed=*/3).ok());
  const tp::v1::ForwardRequest request = SmallForward("m");
  ASSERT_TRUE(client->Forward(request).ok());

  device->fault.store(InjectedFault::kLaunchError);
  EXPECT_EQ(client->Forward(request).status().code(), absl::StatusCode::kInternal);
  device->fault.store(InjectedFault::kNone);
  ASSERT_TRUE(client->Forward(request).ok());
  EXPECT_EQ(*client->Health(), HealthCheckResponse::SERVING);
  EXPECT_EQ(MetricValue(server->metrics().Serialize(), "tp_device_lost", {"device=\"cpu\""}), 0);

  device->fault.store(InjectedFault::kDeviceFault);
  EXPECT_EQ(client->Forward(request).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(*client->Health(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(*client->Health("tp.v1.TensorProductService"), HealthCheckResponse::NOT_SERVING);
  absl::StatusOr<tp::v1::ForwardResponse> after = client->Forward(request);
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable) << after.status();
  EXPECT_NE(after.status().message().find("cpu is lost"), std::string::npos) << after.status();
  EXPECT_EQ(MetricValue(server->metrics().Serialize(), "tp_device_lost", {"device=\"cpu\""}), 1);
}

// With two devices, losing one keeps the server SERVING on the other (the response names it; the
// lost one reads 1 in tp_device_lost); losing both turns health NOT_SERVING and calls UNAVAILABLE.
TEST(OpsTest, DeviceFault_OnOneOfTwoDevices_KeepsServingOnTheOther) {
  using grpc::health::v1::HealthCheckResponse;
  auto gpu0 = std::make_shared<FakeDevice>(), gpu1 = std::make_shared<FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(gpu0, "gpu:0"));
  backends.push_back(std::make_unique<FaultInjectingBackend>(gpu1, "gpu:1"));
  auto server = TestServer::Start({}, {}, std::move(backends));
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", Spec("2x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o"), nullptr, /*seed=*/3).ok());
  const tp::v1::ForwardRequest request = SmallForward("m");
  absl::StatusOr<tp::v1::ForwardResponse> before = client->Forward(request);
  ASSERT_TRUE(before.ok()) << before.status();

  // Both devices faulty for one call: whichever runs it is lost; then the switch is off again.
  gpu0->fault.store(InjectedFault::kDeviceFault);
  gpu1->fault.store(InjectedFault::kDeviceFault);
  EXPECT_EQ(client->Forward(request).status().code(), absl::StatusCode::kInternal);
  const bool lost0 = gpu0->faulted.load();
  ASSERT_NE(lost0, gpu1->faulted.load()) << "one call, one device";
  gpu0->fault.store(InjectedFault::kNone);
  gpu1->fault.store(InjectedFault::kNone);
  const std::string lost = lost0 ? "gpu:0" : "gpu:1", alive = lost0 ? "gpu:1" : "gpu:0";
  EXPECT_EQ(*client->Health(), HealthCheckResponse::SERVING);
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<tp::v1::ForwardResponse> after = client->Forward(request);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->device(), alive);
    EXPECT_EQ(after->out().data(), before->out().data()) << "same weights, same inputs, same bytes";
  }
  const std::string text = server->metrics().Serialize();
  EXPECT_EQ(MetricValue(text, "tp_device_lost", {"device=\"" + lost + "\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_device_lost", {"device=\"" + alive + "\""}), 0);

  (lost0 ? gpu1 : gpu0)->fault.store(InjectedFault::kDeviceFault);
  EXPECT_EQ(client->Forward(request).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(*client->Health(), HealthCheckResponse::NOT_SERVING);
  absl::StatusOr<tp::v1::ForwardResponse> last = client->Forward(request);
  EXPECT_EQ(last.status().code(), absl::StatusCode::kUnavailable) << last.status();
  EXPECT_NE(last.status().message().find(alive + " is lost"), std::string::npos) << last.status();
}

namespace {
// Opens a Stream and completes one echo on it, so that the server's handler holds its slot.
// Returns the stream, or the status it ended with when the server refused it.
struct OpenedStream {
  client::TpClient::Stream stream;
  grpc::Status refused;  // OK when the echo came back
};
OpenedStream OpenAndEcho(client::TpClient& client) {
  OpenedStream opened{client.OpenStream(), grpc::Status::OK};
  tp::v1::StreamRequest request;
  request.set_request_id(7);
  request.mutable_echo()->set_payload("ping");
  opened.stream.rpc->Write(request);
  tp::v1::StreamResponse response;
  if (!opened.stream.rpc->Read(&response)) {
    opened.refused = opened.stream.rpc->Finish();
    if (opened.refused.ok()) opened.refused = grpc::Status(grpc::StatusCode::UNKNOWN, "ended without an answer");
  }
  return opened;
}
void Close(OpenedStream& opened) {
  opened.stream.rpc->WritesDone();
  tp::v1::StreamResponse response;
  while (opened.stream.rpc->Read(&response)) {
  }
  EXPECT_TRUE(opened.stream.rpc->Finish().ok());
}
}  // namespace

// max_streams open Stream calls at most: one more is RESOURCE_EXHAUSTED naming the limit, unary
// calls still run, and a closed stream frees its slot.
TEST(OpsTest, MaxStreams_RefusesOneMoreButNotUnaryCalls) {
  server::TransportConfig transport;
  transport.max_streams = 2;
  auto server = TestServer::Start({}, transport);
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", Spec("2x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o"), nullptr, /*seed=*/3).ok());
  const tp::v1::ForwardRequest request = SmallForward("m");

  OpenedStream a = OpenAndEcho(*client), b = OpenAndEcho(*client);
  ASSERT_TRUE(a.refused.ok()) << a.refused.error_message();
  ASSERT_TRUE(b.refused.ok()) << b.refused.error_message();
  OpenedStream c = OpenAndEcho(*client);
  EXPECT_EQ(c.refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(c.refused.error_message().find("max_streams is 2"), std::string::npos) << c.refused.error_message();
  EXPECT_TRUE(client->Forward(request).ok());
  Close(a);
  OpenedStream d = OpenAndEcho(*client);
  EXPECT_TRUE(d.refused.ok()) << d.refused.error_message();
  Close(b);
  Close(d);
}

// A flood of calls past max_threads: the calls the server cannot take answer RESOURCE_EXHAUSTED
// and the server keeps serving (nothing crashes, every call ends); after it, calls run as before.
TEST(OpsTest, MaxThreads_BoundsTheServersThreadsUnderAFloodOfStreams) {
  server::TransportConfig transport;
  transport.max_threads = 8;
  auto server = TestServer::Start({}, transport);
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  constexpr int kStreams = 24;
  std::vector<OpenedStream> opened;
  int refused = 0, served = 0;
  for (int i = 0; i < kStreams; ++i) {
    opened.push_back(OpenAndEcho(*client));
    if (opened.back().refused.ok()) {
      ++served;
    } else {
      EXPECT_EQ(opened.back().refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << opened.back().refused.error_message();
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(served, 0);
  EXPECT_LT(served, 8) << refused << " refused";
  for (OpenedStream& s : opened) {
    if (s.refused.ok()) Close(s);
  }
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(client->ListModels().ok());
  OpenedStream after = OpenAndEcho(*client);
  EXPECT_TRUE(after.refused.ok()) << after.refused.error_message();
  Close(after);
}

// Watch streams the current status, then the change when shutdown begins, then ends; an unknown
// service is NOT_FOUND for Check and SERVICE_UNKNOWN for Watch.
TEST(OpsTest, HealthWatch_SeesShutdownAndUnknownServicesAreNamed) {
  using grpc::health::v1::HealthCheckResponse;
  auto server = TestServer::Start();
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("no.such.Service");
    HealthCheckResponse response;
    grpc::Status status = stub->Check(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    grpc::ClientContext watch_context;
    auto unknown = stub->Watch(&watch_context, request);
    ASSERT_TRUE(unknown->Read(&response));
    EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
    watch_context.TryCancel();
    unknown->Finish().IgnoreError();
  }
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("tp.v1.ModelService");
  auto watch = stub->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  std::thread shutdown([&] { server->grpc().Shutdown(absl::Seconds(5)); });
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(watch->Read(&response));
  EXPECT_TRUE(watch->Finish().ok());
  shutdown.join();
  server->grpc().Wait();
}

TEST(OpsTest, ConfigFile_SetsEveryComponentAndRejectsUnknownKeys) {
  TempDir dir;
  std::string path = dir.path() + "/tpserve.json";
  std::ofstream(path) << R"({"listen": "127.0.0.1:7000", "model_dir": "/m", "max_batch_size": 128,
      "max_queue_delay_us": 50, "max_queued_requests": 9, "non_finite": "pass", "auth_token": "t",
      "max_message_bytes": 1024, "demo_model": "seed", "demo_irreps_in1": "1x0e", "backend": "cpu",
      "max_streams": 5, "max_threads": 64, "network_device": "cuda:1"})";
  server::ServerConfig config;
  ASSERT_TRUE(server::ApplyConfigFile(path, &config).ok());
  EXPECT_EQ(config.transport.listen_address, "127.0.0.1:7000");
  EXPECT_EQ(config.core.model_dir, "/m");
  EXPECT_EQ(config.core.max_batch_size, 128);
  EXPECT_EQ(config.core.max_queue_delay_us, 50);
  EXPECT_EQ(config.core.max_queued_requests, 9);
  EXPECT_EQ(config.transport.max_streams, 5);
  EXPECT_EQ(config.transport.max_threads, 64);
  EXPECT_FALSE(config.core.reject_non_finite);
  EXPECT_EQ(config.transport.auth_token, "t");
  EXPECT_EQ(config.transport.max_message_bytes, 1024);
  EXPECT_EQ(config.demo_spec.irreps_in1, "1x0e");
  EXPECT_EQ(config.backend, "cpu");
  EXPECT_EQ(config.network_device, "cuda:1");
  const std::string printed = config.DebugString();
  EXPECT_NE(printed.find("network_device=cuda:1"), std::string::npos) << printed;
  EXPECT_NE(printed.find("max_message_bytes=1024"), std::string::npos) << printed;
  EXPECT_NE(printed.find("max_batch_size=128"), std::string::npos) << printed;
  EXPECT_NE(printed.find("auth=bearer token"), std::string::npos) << printed;
  EXPECT_EQ(printed.find("=t "), std::string::npos) << "the token is never printed: " << printed;
  std::ofstream(path) << R"({"max_batch_sise": 3})";
  auto status = server::ApplyConfigFile(path, &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("max_batch_sise"), std::string::npos);
}

// ---- configuration checks (issue 16, item 4) ----

TEST(OpsTest, ValidateConfig_RefusesEachInvalidValueNamingTheKey) {
  EXPECT_TRUE(server::ValidateConfig(server::ServerConfig{}).ok()) << "the defaults are valid";
  const std::vector<std::pair<std::string, std::function<void(server::ServerConfig&)>>> cases = {
      {"stream_max_in_flight", [](auto& c) { c.transport.stream_max_in_flight = 0; }},
      {"stream_max_in_flight", [](auto& c) { c.transport.stream_max_in_flight = -3; }},
      {"max_message_bytes", [](auto& c) { c.transport.max_message_bytes = -1; }},
      {"max_message_bytes", [](auto& c) { c.transport.max_message_bytes = int64_t{1} << 32; }},
      {"chunk_elements", [](auto& c) { c.transport.chunk_elements = -1; }},
      {"max_streams", [](auto& c) { c.transport.max_streams = 0; }},
      {"max_threads", [](auto& c) { c.transport.max_threads = 2; }},
      {"workers_per_gpu", [](auto& c) { c.workers_per_gpu = 0; }},
      {"max_batch_size", [](auto& c) { c.core.max_batch_size = 0; }},
      {"max_queue_delay_us", [](auto& c) { c.core.max_queue_delay_us = -1; }},
      {"max_queued_bytes", [](auto& c) { c.core.max_queued_bytes = 0; }},
      {"max_pinned_host_bytes", [](auto& c) { c.core.max_pinned_host_bytes = -1; }},
      {"shutdown_grace_seconds", [](auto& c) { c.shutdown_grace_seconds = -1; }},
      {"tls_key", [](auto& c) { c.transport.tls_cert_file = "c.pem"; }},
      {"tls_client_ca", [](auto& c) { c.transport.tls_client_ca_file = "ca.pem"; }},
      {"metrics_auth", [](auto& c) { c.metrics_auth = true; }},
      {"metrics_tls", [](auto& c) { c.metrics_tls = true; }},
      {"listen", [](auto& c) { c.transport.listen_address = ""; }},
  };
  for (const auto& [key, change] : cases) {
    server::ServerConfig config;
    change(config);
    absl::Status status = server::ValidateConfig(config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_NE(status.message().find(key), std::string::npos) << status;
    EXPECT_NE(status.message().find("expected"), std::string::npos) << status;
  }
}

TEST(OpsTest, FlagsOnCommandLine_SeesEveryFormAbseilAccepts) {
  auto is_bool = [](const std::string& name) { return name == "reflection" || name == "metrics_tls"; };
  auto given = server::FlagsOnCommandLine({"--non_finite", "reject", "--max_batch_size=4096", "-backend=cpu",
                                           "--noreflection", "--metrics_tls", "--listen", "--auth_token=x", "--",
                                           "--demo_model=late"},
                                          is_bool);
  EXPECT_EQ(given, (std::set<std::string>{"non_finite", "max_batch_size", "backend", "reflection", "metrics_tls",
                                          "listen"}));
  // "--listen --auth_token=x": the second is --listen's value, as Abseil reads it; after "--" nothing counts.
}

TEST(OpsTest, ResolveAuthToken_FromAFileTheFlagOrTheEnvironment) {
  TempDir dir;
  const std::string file = dir.path() + "/token";
  std::ofstream(file) << "file-token \n";
  server::ServerConfig config;
  config.auth_token_file = file;
  ASSERT_TRUE(server::ResolveAuthToken(&config, "env-token").ok());
  EXPECT_EQ(config.transport.auth_token, "file-token") << "the file wins over the environment";
  server::ServerConfig from_env;
  ASSERT_TRUE(server::ResolveAuthToken(&from_env, "env-token").ok());
  EXPECT_EQ(from_env.transport.auth_token, "env-token");
  server::ServerConfig from_flag;
  from_flag.transport.auth_token = "flag-token";
  ASSERT_TRUE(server::ResolveAuthToken(&from_flag, "env-token").ok());
  EXPECT_EQ(from_flag.transport.auth_token, "flag-token");
  server::ServerConfig both;
  both.transport.auth_token = "flag-token";
  both.auth_token_file = file;
  EXPECT_EQ(server::ResolveAuthToken(&both, nullptr).code(), absl::StatusCode::kInvalidArgument);
  server::ServerConfig empty;
  std::ofstream(dir.path() + "/empty") << "\n";
  empty.auth_token_file = dir.path() + "/empty";
  EXPECT_EQ(server::ResolveAuthToken(&empty, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(server::ConfigWarnings(from_flag).empty()) << "a token without TLS is warned about";
  from_flag.transport.tls_cert_file = "c.pem";
  from_flag.transport.tls_key_file = "k.pem";
  EXPECT_TRUE(server::ConfigWarnings(from_flag).empty());
}

TEST(OpsTest, ConfigFile_SetsTheCudaKernelOptionsAndPrintsThem) {
  TempDir dir;
  std::string path = dir.path() + "/tpserve.json";
  std::ofstream(path) << R"({"forward_kernel": "factored-mma", "factored_warp_cols": 16, "factored_blocks_per_sm": 3})";
  server::ServerConfig config;
  ASSERT_TRUE(server::ApplyConfigFile(path, &config).ok());
  EXPECT_EQ(config.cuda.forward_kernel, CudaBackendOptions::ForwardKernel::kFactoredMma);
  EXPECT_EQ(config.cuda.factored_warp_cols, 16);
  EXPECT_EQ(config.cuda.factored_blocks_per_sm, 3);
  const std::string printed = config.DebugString();
  EXPECT_NE(printed.find("forward_kernel=factored-mma factored_warp_cols=16 factored_blocks_per_sm=3"),
            std::string::npos)
      << printed;
  std::ofstream(path) << R"({"forward_kernel": "wgmma-please"})";
  auto status = server::ApplyConfigFile(path, &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("expected auto, factored-mma, factored-3xtf32 or gemm"), std::string::npos)
      << status;
}

}  // namespace
}  // namespace tpserve::testing
