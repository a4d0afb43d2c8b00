// Limits that keep one client from exhausting the server (issue 16, items 5-9), each against a real
// server on loopback: plan paths and plan builds, Echo sizes, token-free streams and connection
// limits, the memory budget (uploads, unread Stream results, downloads), idle uploads, idle memory
// release, Forward's validation before allocation, and error messages that echo client input.
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/grpc/tensor_codec.h"
#include "tests/server/server_test_util.h"

namespace tpserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// "VmHWM" / "VmRSS" of this process, in bytes.
int64_t ProcStatusBytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, key + ":")) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    int64_t kib = 0;
    fields >> kib;
    return kib * 1024;
  }
  return -1;
}

std::string Terms(int count, const std::string& term) {
  std::string out;
  for (int i = 0; i < count; ++i) absl::StrAppend(&out, i == 0 ? "" : " + ", term);
  return out;
}

// Polls `done` for up to `seconds`.
template <typename Done>
bool Eventually(Done done, double seconds = 5) {
  const auto start = Clock::now();
  while (!done()) {
    if (Seconds(start) > seconds) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

double PlanBuilds(TestServer& server) {
  return std::max(0.0, MetricValue(server.metrics().Serialize(), "tp_plan_build_seconds_count", {}));
}

// ---- item 5: plan paths, builds, cancellation ------------------------------------------------

TEST(LimitsTest, CreateModel_TooManyPathsIsRefusedBeforeAnyWork) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  const std::string terms = Terms(48, "1x0e");  // 48^3 = 110,592 paths; 26 s of planning before
  const auto start = Clock::now();
  auto created = client->CreateModel("wide", Spec(terms, terms, terms), nullptr);
  EXPECT_LT(Seconds(start), 1.0);
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument) << created.status();
  EXPECT_TRUE(absl::StrContains(created.status().message(), "110592 paths")) << created.status();
  EXPECT_TRUE(absl::StrContains(created.status().message(), "max_paths")) << created.status();
  EXPECT_EQ(PlanBuilds(*server), 0) << "a refused product must cost no plan build";
}

TEST(LimitsTest, CreateModel_OldWorstCaseIsFastAndBuildsItsPlanOnce) {
  server::CoreConfig core;
  core.max_paths = 200000;
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  const std::string terms = Terms(48, "1x0e");
  const auto start = Clock::now();
  auto created = client->CreateModel("wide", Spec(terms, terms, terms), nullptr);
  const double seconds = Seconds(start);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->num_paths(), 110592);
  EXPECT_LT(seconds, 5.0) << "CreateModel of 110,592 paths";
  EXPECT_EQ(PlanBuilds(*server), 1) << "one plan build per create";
  auto small = client->CreateModel("small", Spec("2x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o"), nullptr);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(PlanBuilds(*server), 2);
}

TEST(LimitsTest, CreateModel_ClientCancelStopsThePlanBuild) {
  server::CoreConfig core;
  core.max_paths = int64_t{1} << 22;
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  // 128 x 128 x 32 = 524,288 paths: seconds of planning, had the build not stopped.
  const std::string in = Terms(128, "1x0e"), out = Terms(32, "1x0e");
  grpc::ClientContext context;
  tp::v1::ModelInfo info;
  auto writer = client->models().CreateModel(&context, &info);
  tp::v1::CreateModelRequest header;
  header.mutable_header()->set_name("huge");
  *header.mutable_header()->mutable_spec() = Spec(in, in, out);
  ASSERT_TRUE(writer->Write(header));
  writer->WritesDone();
  // Cancelled once the server is at work on it (the handler is in flight, building the plan).
  ASSERT_TRUE(Eventually([&] {
    return MetricValue(server->metrics().Serialize(), "tp_in_flight_requests", {"method=\"CreateModel\""}) == 1;
  }));
  context.TryCancel();
  const auto cancelled_at = Clock::now();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The server's handler ends soon after with CANCELLED (the build stopped), and made no model.
  EXPECT_TRUE(Eventually([&] {
    return MetricValue(server->metrics().Serialize(), "tp_requests_total",
                       {"method=\"CreateModel\"", "code=\"CANCELLED\""}) == 1;
  }, 10)) << server->metrics().Serialize();
  EXPECT_LT(Seconds(cancelled_at), 1.0) << "the build went on after the cancel";
  EXPECT_FALSE(server->core().FindModel("huge").ok());
}

// ---- item 6: Echo sizes ---------------------------------------------------------------------

TEST(LimitsTest, Echo_ResponsePastTheMessageLimitIsRefusedBeforeAllocating) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  const int64_t peak_before = ProcStatusBytes("VmHWM");
  tp::v1::EchoRequest request;
  request.set_payload("hello world");
  request.set_response_bytes(int64_t{1} << 30);
  auto echoed = client->Echo(request);
  ASSERT_FALSE(echoed.ok());
  EXPECT_EQ(echoed.status().code(), absl::StatusCode::kInvalidArgument) << echoed.status();
  EXPECT_TRUE(absl::StrContains(echoed.status().message(), "max_message_bytes")) << echoed.status();
  request.set_response_bytes((int64_t{64} << 20) + 1);
  EXPECT_EQ(client->Echo(request).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(ProcStatusBytes("VmHWM") - peak_before, int64_t{256} << 20) << "Echo allocated before checking";
  request.set_response_bytes(1000);
  echoed = client->Echo(request);
  ASSERT_TRUE(echoed.ok()) << echoed.status();
  EXPECT_EQ(echoed->payload().size(), 1000u);
}

TEST(LimitsTest, StreamEcho_ResponsePastTheMessageLimitIsRefusedLikeUnary) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  const int64_t peak_before = ProcStatusBytes("VmHWM");
  client::TpClient::Stream stream = client->OpenStream();
  for (int64_t bytes : {int64_t{1} << 30, int64_t{100}}) {
    tp::v1::StreamRequest request;
    request.set_request_id(bytes);
    request.mutable_echo()->set_response_bytes(bytes);
    ASSERT_TRUE(stream.rpc->Write(request));
  }
  stream.rpc->WritesDone();
  tp::v1::StreamResponse response;
  ASSERT_TRUE(stream.rpc->Read(&response));
  EXPECT_EQ(response.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << response.message();
  EXPECT_TRUE(absl::StrContains(response.message(), "max_message_bytes")) << response.message();
  ASSERT_TRUE(stream.rpc->Read(&response));
  EXPECT_EQ(response.code(), 0);
  EXPECT_EQ(response.echo().payload().size(), 100u);
  EXPECT_TRUE(stream.rpc->Finish().ok());
  EXPECT_LT(ProcStatusBytes("VmHWM") - peak_before, int64_t{256} << 20) << "Stream's Echo allocated before checking";
}

// ---- item 7: token-free streams, connection limits -------------------------------------------


// 20 Watch streams took every thread of a 16-thread server: ListModels failed.
TEST(LimitsTest, WatchStreams_CannotTakeTheThreadsOfTp1Calls) {
  using grpc::health::v1::HealthCheckResponse;
  server::TransportConfig transport;
  transport.max_threads = 16;
  auto server = TestServer::Start({}, transport);
  auto client = server->Connect();
  auto stub = grpc::health::v1::Health::NewStub(client->channel());
  struct Watch {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> reader;
  };
  std::vector<std::unique_ptr<Watch>> watches;
  int serving = 0, refused = 0;
  for (int i = 0; i < 20; ++i) {
    auto watch = std::make_unique<Watch>();
    watch->reader = stub->Watch(&watch->context, grpc::health::v1::HealthCheckRequest());
    HealthCheckResponse response;
    if (watch->reader->Read(&response)) {
      ++serving;
      watches.push_back(std::move(watch));
    } else {
      grpc::Status status = watch->reader->Finish();
      EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
      ++refused;
    }
  }
  EXPECT_EQ(serving, 4) << "a quarter of 16 threads";
  EXPECT_EQ(refused, 16);
  // Reflection shares the bound: refused while the Watch streams hold it.
  EXPECT_EQ(ListServicesByReflection(server->target()), "");
  auto listed = client->ListModels();
  EXPECT_TRUE(listed.ok()) << listed.status();
  auto health = client->Health();
  EXPECT_TRUE(health.ok()) << health.status();
  for (auto& watch : watches) {
    watch->context.TryCancel();
    watch->reader->Finish().IgnoreError();
  }
  EXPECT_TRUE(Eventually([&] {
    return absl::StrContains(ListServicesByReflection(server->target()), "tp.v1.ModelService");
  })) << "reflection works again once the streams are closed";
}

TEST(LimitsTest, Connection_ConcurrentCallsPerConnectionAreBounded) {
  server::TransportConfig transport;
  transport.max_concurrent_streams = 2;
  auto server = TestServer::Start({}, transport);
  auto client = server->Connect();
  struct OpenStream {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<tp::v1::StreamRequest, tp::v1::StreamResponse>> rpc;
  };
  std::vector<std::unique_ptr<OpenStream>> streams;
  for (int i = 0; i < 2; ++i) {
    auto stream = std::make_unique<OpenStream>();
    stream->rpc = client->compute().Stream(&stream->context);
    tp::v1::StreamRequest request;
    request.mutable_echo()->set_payload("x");
    ASSERT_TRUE(stream->rpc->Write(request));
    tp::v1::StreamResponse response;
    ASSERT_TRUE(stream->rpc->Read(&response));  // open at the server
    streams.push_back(std::move(stream));
  }
  {  // A third call on the same connection waits for a free stream.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(700));
    tp::v1::ListModelsResponse response;
    grpc::Status status = client->models().ListModels(&context, tp::v1::ListModelsRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  }
  {  // Another connection (its own subchannel, as another client process would have) has its own streams.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto stub = tp::v1::ModelService::NewStub(
        grpc::CreateCustomChannel(server->target(), grpc::InsecureChannelCredentials(), args));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    tp::v1::ListModelsResponse response;
    grpc::Status status = stub->ListModels(&context, tp::v1::ListModelsRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  for (auto& stream : streams) {
    stream->rpc->WritesDone();
    tp::v1::StreamResponse response;
    while (stream->rpc->Read(&response)) {
    }
    EXPECT_TRUE(stream->rpc->Finish().ok());
  }
  EXPECT_TRUE(client->ListModels().ok());
}

TEST(LimitsTest, Connection_IdleConnectionsAreClosed) {
  // Whether the client's connection is still READY `seconds` after its last call. A loaded machine
  // may take a while to look, so the limit's effect is judged against a server without the limit.
  auto ready_after = [](double max_connection_idle_seconds, double seconds) {
    server::TransportConfig transport;
    transport.max_connection_idle_seconds = max_connection_idle_seconds;
    auto server = TestServer::Start({}, transport);
    auto client = server->Connect();
    EXPECT_TRUE(client->ListModels().ok());
    const bool closed = Eventually([&] { return client->channel()->GetState(false) != GRPC_CHANNEL_READY; }, seconds);
    EXPECT_TRUE(client->ListModels().ok()) << "the client reconnects";
    return !closed;
  };
  EXPECT_FALSE(ready_after(/*max_connection_idle_seconds=*/0.3, /*seconds=*/20))
      << "the server closes a connection idle past max_connection_idle_seconds";
  EXPECT_TRUE(ready_after(/*max_connection_idle_seconds=*/0, /*seconds=*/2)) << "without the limit it stays open";
}

// An open Stream (one Echo answered), then read until the server ends it or `seconds` pass (the
// client then cancels it). True when the server ended it first; `status` is the call's status.
bool StreamEndedByTheServer(grpc::ClientContext& context,
                            grpc::ClientReaderWriter<tp::v1::StreamRequest, tp::v1::StreamResponse>& rpc,
                            double seconds, grpc::Status* status) {
  tp::v1::StreamRequest request;
  request.mutable_echo()->set_payload("x");
  EXPECT_TRUE(rpc.Write(request));
  tp::v1::StreamResponse response;
  EXPECT_TRUE(rpc.Read(&response));
  std::atomic<bool> ended{false};
  std::thread reader([&] {
    tp::v1::StreamResponse more;
    while (rpc.Read(&more)) {
    }
    ended = true;
  });
  const bool ended_in_time = Eventually([&] { return ended.load(); }, seconds);
  context.TryCancel();
  reader.join();
  *status = rpc.Finish();
  return ended_in_time;
}

// An open Stream on a connection older than max_connection_age: the server says GOAWAY at that age
// and ends the call after the grace; the client reconnects for the next call. With the age off
// (the default) the same stream stays open.
TEST(LimitsTest, Connection_OldConnectionsAreClosedAfterTheGrace) {
  auto stream_lasts = [](double age_seconds, double observe_seconds) {
    server::TransportConfig transport;
    transport.max_connection_age_seconds = age_seconds;
    transport.max_connection_age_grace_seconds = 0.5;
    auto server = TestServer::Start({}, transport);
    auto client = server->Connect();
    grpc::ClientContext context;
    auto rpc = client->compute().Stream(&context);
    grpc::Status status;
    const bool ended_in_time = StreamEndedByTheServer(context, *rpc, observe_seconds, &status);
    if (ended_in_time) EXPECT_FALSE(status.ok()) << "a stream cut for age does not end OK";
    EXPECT_TRUE(client->ListModels().ok()) << "the client reconnects";
    return ended_in_time;
  };
  EXPECT_TRUE(stream_lasts(/*age_seconds=*/1.0, /*observe_seconds=*/15))
      << "the server ends a call on a connection past max_connection_age (+ grace)";
  EXPECT_FALSE(stream_lasts(/*age_seconds=*/0, /*observe_seconds=*/3)) << "without an age limit it stays open";
}

// A client that pings more often than --min_client_ping_interval_seconds allows is disconnected
// (GOAWAY too_many_pings after the second strike), ending its open call; one within the limit keeps it.
TEST(LimitsTest, Connection_ClientsPingingTooOftenAreDisconnected) {
  auto stream_survives_pings = [](double min_client_ping_interval_seconds) {
    server::TransportConfig transport;
    transport.min_client_ping_interval_seconds = min_client_ping_interval_seconds;
    auto server = TestServer::Start({}, transport);
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 100);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, 100);
    auto stub = tp::v1::TensorProductService::NewStub(
        grpc::CreateCustomChannel(server->target(), grpc::InsecureChannelCredentials(), args));
    grpc::ClientContext context;
    auto rpc = stub->Stream(&context);
    grpc::Status status;
    return !StreamEndedByTheServer(context, *rpc, /*seconds=*/4, &status);
  };
  EXPECT_FALSE(stream_survives_pings(/*min_client_ping_interval_seconds=*/10))
      << "pings every 100 ms against a 10 s minimum: the server disconnects the client";
  EXPECT_TRUE(stream_survives_pings(/*min_client_ping_interval_seconds=*/0.01)) << "pings within the limit are fine";
}

// ---- item 8: the memory budget ---------------------------------------------------------------

// 64 x 64 x 256 = 1,048,576 weights (4 MiB); the model holds 12 MiB of the budget with one CPU
// worker (weights, the worker's replica and gradient buffer).
const tp::v1::ModelSpec kFourMiBSpec = Spec("64x0e", "64x0e", "256x0e");
constexpr int64_t kMiB = int64_t{1} << 20;

struct OpenUpload {
  std::unique_ptr<grpc::ClientContext> context;
  tp::v1::ModelInfo info;
  std::unique_ptr<grpc::ClientWriter<tp::v1::UploadWeightsRequest>> writer;
};

// An upload of model `name` that sent its first chunk (1024 values) and waits.
std::unique_ptr<OpenUpload> StartUpload(client::TpClient& client, const std::string& name) {
  auto upload = std::make_unique<OpenUpload>();
  upload->context = std::make_unique<grpc::ClientContext>();
  upload->writer = client.models().UploadWeights(upload->context.get(), &upload->info);
  tp::v1::UploadWeightsRequest message;
  message.set_model(name);
  std::vector<float> values(1024, 0.5f);
  wire::ForEachChunk(values.data(), 1024, 1024, [&](const tp::v1::WeightsChunk& chunk) {
    *message.mutable_chunk() = chunk;
    return upload->writer->Write(message);
  });
  return upload;
}

TEST(LimitsTest, MemoryBudget_UploadsPastTheBudgetAreResourceExhausted) {
  server::CoreConfig core;
  core.max_memory_bytes = 40 * kMiB;
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", kFourMiBSpec, nullptr).ok());
  const int64_t model_bytes = server->core().memory_budget().used_bytes();
  EXPECT_EQ(model_bytes, 12 * kMiB);
  // A model that does not fit is refused before its weights are allocated.
  auto big = client->CreateModel("big", Spec("128x0e", "128x0e", "256x0e"), nullptr);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  // Uploads reserve their whole size at their first message: 7 of 4 MiB fit in the 28 MiB left.
  std::vector<std::unique_ptr<OpenUpload>> uploads;
  for (int i = 0; i < 7; ++i) {
    uploads.push_back(StartUpload(*client, "m"));
    const int64_t expected = model_bytes + (i + 1) * 4 * kMiB;
    ASSERT_TRUE(Eventually([&] { return server->core().memory_budget().used_bytes() == expected; }))
        << "upload " << i << ": " << server->core().memory_budget().used_bytes();
  }
  auto refused = StartUpload(*client, "m");
  refused->writer->WritesDone();
  grpc::Status status = refused->writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "max_memory_bytes")) << status.error_message();
  EXPECT_EQ(MetricValue(server->metrics().Serialize(), "tp_memory_budget_used_bytes", {}),
            static_cast<double>(model_bytes + 28 * kMiB));
  for (auto& upload : uploads) {
    upload->context->TryCancel();
    upload->writer->Finish().IgnoreError();
  }
  EXPECT_TRUE(Eventually([&] { return server->core().memory_budget().used_bytes() == model_bytes; }));
  // Released: a whole upload goes through again.
  std::vector<float> weights(1048576, 0.25f);
  auto uploaded = client->UploadWeights("m", weights);
  ASSERT_TRUE(uploaded.ok()) << uploaded.status();
  EXPECT_EQ(uploaded->version(), 2u);
  ASSERT_TRUE(client->DeleteModel("m").ok());
  EXPECT_TRUE(Eventually([&] { return server->core().memory_budget().used_bytes() == 0; }));
}

TEST(LimitsTest, MemoryBudget_DownloadsAndGradientsReserveWhatTheyHold) {
  server::CoreConfig core;
  core.max_memory_bytes = 14 * kMiB;  // the model's 12 MiB, and not 4 more
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", kFourMiBSpec, nullptr).ok());
  auto downloaded = client->DownloadWeights("m");
  EXPECT_EQ(downloaded.status().code(), absl::StatusCode::kResourceExhausted) << downloaded.status();
  auto gradient = client->GetGradient("m");
  EXPECT_EQ(gradient.status().code(), absl::StatusCode::kResourceExhausted) << gradient.status();
  auto stepped = client->SgdStep("m", 0.1, false);
  EXPECT_EQ(stepped.status().code(), absl::StatusCode::kResourceExhausted) << stepped.status();
  EXPECT_EQ(server->core().memory_budget().used_bytes(), 12 * kMiB) << "refusals hold nothing";
}

// Results a Stream's client does not read wait in the server: they count against the budget, and
// requests past it are answered RESOURCE_EXHAUSTED instead of growing the process.
TEST(LimitsTest, MemoryBudget_UnreadStreamResultsAreBounded) {
  server::CoreConfig core;
  core.max_memory_bytes = 24 * kMiB;
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  const tp::v1::ModelSpec spec = Spec("16x0e + 16x1o", "16x0e + 16x1o", "16x0e + 16x1o");
  ASSERT_TRUE(client->CreateModel("m", spec, nullptr).ok());
  const int64_t model_bytes = server->core().memory_budget().used_bytes();
  constexpr int kRequests = 48, kBatch = 1024;
  tp::v1::StreamRequest request;
  request.mutable_forward()->set_model("m");
  std::vector<double> x(kBatch * 64, 0.01);
  *request.mutable_forward()->mutable_x1() = F32({kBatch, 64}, x);
  *request.mutable_forward()->mutable_x2() = F32({kBatch, 64}, x);
  client::TpClient::Stream stream = client->OpenStream();
  for (int i = 0; i < kRequests; ++i) {
    request.set_request_id(i);
    ASSERT_TRUE(stream.rpc->Write(request));
  }
  // Nothing read yet: the answers (and their requests) wait in the server, within the budget.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LE(server->core().memory_budget().used_bytes(), 24 * kMiB);
  stream.rpc->WritesDone();
  int ok = 0, exhausted = 0;
  tp::v1::StreamResponse response;
  while (stream.rpc->Read(&response)) {
    if (response.code() == 0) ++ok;
    if (response.code() == static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)) {
      ++exhausted;
      EXPECT_TRUE(absl::StrContains(response.message(), "max_memory_bytes")) << response.message();
    }
  }
  EXPECT_TRUE(stream.rpc->Finish().ok());
  EXPECT_EQ(ok + exhausted, kRequests);
  EXPECT_GT(ok, 0);
  EXPECT_GT(exhausted, 0) << "48 unread answers of ~1.3 MB each exceed a 24 MiB budget";
  EXPECT_TRUE(Eventually([&] { return server->core().memory_budget().used_bytes() == model_bytes; }));
}

TEST(LimitsTest, Upload_WithoutProgressIsDropped) {
  server::TransportConfig transport;
  transport.upload_idle_seconds = 0.3;
  auto server = TestServer::Start({}, transport);
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", kFourMiBSpec, nullptr).ok());
  const int64_t model_bytes = server->core().memory_budget().used_bytes();
  auto upload = StartUpload(*client, "m");
  ASSERT_TRUE(Eventually([&] { return server->core().memory_budget().used_bytes() > model_bytes; }));
  // The client stalls: the server drops the upload and releases its memory on its own.
  EXPECT_TRUE(Eventually([&] { return server->core().memory_budget().used_bytes() == model_bytes; }, 3));
  upload->writer->WritesDone();
  grpc::Status status = upload->writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  auto info = client->GetModel("m");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version(), 1u) << "weights unchanged";
  // An upload that keeps sending is not dropped, however long it takes in all.
  std::vector<float> weights(1048576, 0.5f);
  client::ClientOptions options = server->ClientOptions();
  options.chunk_elements = 65536;
  auto slow = *client::TpClient::Connect(options);
  auto uploaded = slow->UploadWeights("m", weights, 0, [](int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // 16 chunks: 0.8 s in all
  });
  EXPECT_TRUE(uploaded.ok()) << uploaded.status();
}

TEST(LimitsTest, IdleServer_ReleasesPooledMemory) {
  server::TransportConfig transport;
  transport.idle_release_seconds = 0.3;
  auto server = TestServer::Start({}, transport);
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", Spec("16x0e + 16x1o", "16x0e + 16x1o", "16x0e + 16x1o"), nullptr).ok());
  tp::v1::ForwardRequest request;
  request.set_model("m");
  std::vector<double> x(512 * 64, 0.01);
  *request.mutable_x1() = F32({512, 64}, x);
  *request.mutable_x2() = F32({512, 64}, x);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client->Forward(request).ok());
  EXPECT_GT(server->core().host_pool().pinned_bytes(), 0u) << "Forward's leases are pooled";
  EXPECT_TRUE(Eventually([&] { return server->core().host_pool().pinned_bytes() == 0; }, 3))
      << "an idle server frees its pooled leases";
  ASSERT_TRUE(client->Forward(request).ok()) << "and allocates again when work comes";
}

// ---- item 9: validation before allocation, error messages of bounded size --------------------

TEST(LimitsTest, Forward_ValidatesShapesBeforeAllocatingTheOutput) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", Spec("1x0e", "1x0e", "256x0e"), nullptr).ok());
  const size_t pinned_before = server->core().host_pool().pinned_bytes();
  tp::v1::ForwardRequest request;
  request.set_model("m");
  *request.mutable_x1() = F32({4096, 0}, {});
  *request.mutable_x2() = F32({4096, 1}, std::vector<double>(4096, 1.0));
  auto result = client->Forward(request);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  // The output would have been 4096 x 256 floats (4 MiB); only the 64 KiB input lease is taken.
  EXPECT_LT(server->core().host_pool().pinned_bytes() - pinned_before, size_t{1} << 20);
}

TEST(LimitsTest, Errors_EchoingHugeClientInputAreCut) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", Spec("1x0e", "1x0e", "1x0e"), nullptr).ok());
  {  // A shape of a million extents.
    tp::v1::ForwardRequest request;
    request.set_model("m");
    tp::v1::Tensor* x1 = request.mutable_x1();
    for (int i = 0; i < 1000000; ++i) x1->add_shape(1);
    x1->set_dtype(tp::v1::DTYPE_FLOAT32);
    x1->set_data(std::string(4, '\0'));
    *request.mutable_x2() = F32({1, 1}, {1.0});
    auto result = client->Forward(request);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status().ToString().substr(0, 300);
    EXPECT_LE(result.status().message().size(), 512u);
    EXPECT_TRUE(absl::StrContains(result.status().message(), "1000000 extents")) << result.status();
  }
  {  // A megabyte of irreps, valid terms then a bad one.
    const std::string irreps = Terms(100000, "1x0e") + " + 1xbad";
    auto created = client->CreateModel("big", Spec(irreps, "1x0e", "1x0e"), nullptr);
    EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_LE(created.status().message().size(), 512u);
    EXPECT_TRUE(absl::StrContains(created.status().message(), "irreps_in1")) << created.status();
  }
  {  // A megabyte of valid terms (past the 256-term limit).
    const std::string irreps = Terms(100000, "1x0e");
    auto created = client->CreateModel("big", Spec("1x0e", irreps, "1x0e"), nullptr);
    EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_LE(created.status().message().size(), 512u);
  }
  {  // A long model name.
    auto info = client->GetModel(std::string(100000, 'n'));
    EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
    EXPECT_LE(info.status().message().size(), 512u);
    auto created = client->CreateModel(std::string(100000, '!'), Spec("1x0e", "1x0e", "1x0e"), nullptr);
    EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_LE(created.status().message().size(), 512u);
  }
}

}  // namespace
}  // namespace tpserve::testing
