// What a call may change and what the server reports about it, end to end on loopback (CPU
// backend, real model directories): races of delete/create with uploads and SGD steps, an SGD step
// whose save fails, state changes of calls whose client gave up, requests that do not parse, and
// the metrics' labels (device of every call, series removed with their model).
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"
#include "tests/support/fault_injecting_backend.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"

namespace tpserve::testing {
namespace {

using ::tp::v1::BackwardRequest;
using ::tp::v1::ForwardRequest;

BackwardRequest AccumulateFor(const std::string& model, const ReferenceCase& c) {
  BackwardRequest request = BackwardFor(model, c);
  request.set_weight_grad(tp::v1::WEIGHT_GRAD_ACCUMULATE);
  return request;
}

// Waits (up to 10 s) until the server's metric reaches `value` (the server may finish a call after
// its client saw the end).
void WaitForMetric(TestServer& server, const std::string& name, const std::vector<std::string>& labels,
                   double value) {
  for (int i = 0; i < 1000; ++i) {
    if (MetricValue(server.metrics().Serialize(), name, labels) == value) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << name << " never reached " << value << "; now "
                << MetricValue(server.metrics().Serialize(), name, labels);
}

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string Text(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string text;
  if (buffer.Dump(&slices).ok()) {
    for (const auto& s : slices) text.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return text;
}

// Sends `messages` as they are (bytes) to `method` ("/tp.v1.ModelService/GetModel"), half-closes,
// and returns the call's status; the responses' bytes land in `responses`. The same framing serves
// every kind of method (a unary call is one message each way).
grpc::Status RawCall(const std::string& target, const std::string& method, const std::vector<std::string>& messages,
                     std::vector<std::string>* responses = nullptr) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  // gRPC's generic stub, one operation at a time on a queue of this call (a blocking call written out).
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(&context, method, &cq);
  auto done = [&cq] {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok;
  };
  int tag = 0;
  call->StartCall(&tag);
  bool open = done();
  for (const std::string& message : messages) {
    if (!open) break;
    call->Write(Bytes(message), &tag);
    open = done();
  }
  if (open) {
    call->WritesDone(&tag);
    done();
    grpc::ByteBuffer response;
    for (;;) {
      call->Read(&response, &tag);
      if (!done()) break;
      if (responses != nullptr) responses->push_back(Text(response));
    }
  }
  grpc::Status status;
  call->Finish(&status, &tag);
  done();
  cq.Shutdown();
  void* ignored_tag = nullptr;
  bool ignored_ok = false;
  while (cq.Next(&ignored_tag, &ignored_ok)) {
  }
  return status;
}

// ---- delete and re-create while an upload or a step is in flight ----------------------------

// Two specs with the same number of weights, so that weights meant for one fit the other.
tp::v1::ModelSpec SpecA() { return Spec("2x0e", "2x0e", "2x0e"); }
tp::v1::ModelSpec SpecB() { return Spec("2x1o", "2x0e", "2x1o"); }

TEST(ServerRaces, UploadBegunOnAModelDeletedAndRecreatedMeanwhile_IsNotFound) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  ASSERT_TRUE(client->CreateModel("m", SpecA(), nullptr, 1).ok());
  client::ClientOptions options = server->ClientOptions();
  options.chunk_elements = 2;  // 4 chunks of the 8 weights
  auto uploader = *client::TpClient::Connect(options);
  std::vector<float> weights(8, 0.25f);
  uint64_t recreated_fnv = 0;
  bool swapped = false;
  auto uploaded = uploader->UploadWeights("m", weights, 0, [&](int64_t sent) {
    if (swapped || sent < 2) return;
    swapped = true;
    // The server has the first chunk (and found the model by it) once the call is in flight and a
    // moment has passed; then the model goes and another of its name comes.
    WaitForMetric(*server, "tp_in_flight_requests", {"method=\"UploadWeights\""}, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_TRUE(client->DeleteModel("m").ok());
    auto recreated = client->CreateModel("m", SpecB(), nullptr, 2);
    ASSERT_TRUE(recreated.ok()) << recreated.status();
    recreated_fnv = recreated->weights_fnv1a64();
  });
  ASSERT_TRUE(swapped);
  EXPECT_EQ(uploaded.status().code(), absl::StatusCode::kNotFound) << uploaded.status();
  auto now = client->GetModel("m");
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(now->version(), 1u) << "the upload for the deleted model landed on the new one";
  EXPECT_EQ(now->weights_fnv1a64(), recreated_fnv);
  EXPECT_EQ(now->spec().irreps_in1(), "2x1o");
}

TEST(ServerRaces, DeleteCreateUploadAndStepRounds_RestartShowsTheModelCreatedLast) {
  TempDir dir;
  server::CoreConfig core;
  core.model_dir = dir.path();
  tp::v1::ModelInfo last;
  {
    auto server = TestServer::Start(core);
    auto client = server->Connect();
    ASSERT_TRUE(client->CreateModel("m", SpecA(), nullptr, 1).ok());
    std::atomic<bool> stop{false};
    std::atomic<int> uploads_ok{0}, steps_ok{0};
    std::vector<std::thread> racers;
    for (int i = 0; i < 3; ++i) {
      racers.emplace_back([&, i] {
        auto own = server->Connect();
        std::vector<float> weights(8, 0.5f + i);
        while (!stop.load()) {
          if (own->UploadWeights("m", weights).ok()) ++uploads_ok;
        }
      });
    }
    for (int i = 0; i < 2; ++i) {
      racers.emplace_back([&] {
        auto own = server->Connect();
        while (!stop.load()) {
          if (own->SgdStep("m", 0.1, /*zero_gradient=*/true).ok()) ++steps_ok;
        }
      });
    }
    constexpr int kRounds = 40;
    for (int round = 0; round < kRounds; ++round) {
      absl::Status deleted = client->DeleteModel("m");
      auto created = client->CreateModel("m", round % 2 == 0 ? SpecB() : SpecA(), nullptr, round);
      if (!deleted.ok() || !created.ok()) {
        ADD_FAILURE() << "round " << round << ": " << deleted << " / " << created.status();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop.store(true);
    for (auto& t : racers) t.join();
    if (::testing::Test::HasFailure()) return;
    EXPECT_GT(uploads_ok.load() + steps_ok.load(), 0) << "nothing raced the deletes";
    auto info = client->GetModel("m");
    ASSERT_TRUE(info.ok()) << info.status();
    last = *info;
    EXPECT_EQ(last.spec().irreps_in1(), "2x0e");  // round 39 created spec A
  }
  auto server = TestServer::Start(core);
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  auto reloaded = client->GetModel("m");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->spec().irreps_in1(), last.spec().irreps_in1());
  EXPECT_EQ(reloaded->spec().irreps_out(), last.spec().irreps_out());
  EXPECT_EQ(reloaded->version(), last.version());
  EXPECT_EQ(reloaded->weights_fnv1a64(), last.weights_fnv1a64());
}

// ---- SgdStep is all or nothing ----------------------------------------------------------------

TEST(ServerSgdStep, SaveFailsOnAFullDisk_WeightsVersionAndGradientStayAsTheyWere) {
  TempDir dir;
  server::CoreConfig core;
  core.model_dir = dir.path();
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  ASSERT_TRUE(client->Backward(AccumulateFor("m", c)).ok());
  auto before = client->GetModel("m");
  ASSERT_TRUE(before.ok());

  // The step's next weights file is written through weights-v2.bin.tmp: made a link to /dev/full,
  // its write fails as on a full disk (root or not). Where /dev/full is missing, a directory in
  // its place fails the open instead.
  const std::string obstacle = dir.path() + "/m/weights-v2.bin.tmp";
  if (access("/dev/full", W_OK) == 0) {
    ASSERT_EQ(symlink("/dev/full", obstacle.c_str()), 0);
  } else {
    ASSERT_EQ(mkdir(obstacle.c_str(), 0755), 0);
  }
  auto failed = client->SgdStep("m", 0.5, /*zero_gradient=*/true);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal) << failed.status();
  auto after = client->GetModel("m");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->version(), before->version());
  EXPECT_EQ(after->weights_fnv1a64(), before->weights_fnv1a64());
  auto gradient = client->GetGradient("m");
  ASSERT_TRUE(gradient.ok()) << gradient.status();
  ASSERT_EQ(gradient->size(), c.grad_weight.size());
  EXPECT_LT(RelativeError(ToDoubles(*gradient), c.grad_weight), 1e-5) << "the failed step lost the gradient";

  std::filesystem::remove(obstacle);
  auto stepped = client->SgdStep("m", 0.5, /*zero_gradient=*/true);
  ASSERT_TRUE(stepped.ok()) << stepped.status();
  EXPECT_EQ(stepped->version(), before->version() + 1);
  std::vector<double> expected(c.weight.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = c.weight[i] - 0.5 * c.grad_weight[i];
  EXPECT_LT(RelativeError(ToDoubles(*client->DownloadWeights("m")), expected), 1e-6);
  auto zeroed = client->GetGradient("m");
  ASSERT_TRUE(zeroed.ok());
  ASSERT_EQ(zeroed->size(), c.grad_weight.size());
  for (float g : *zeroed) ASSERT_EQ(g, 0.0f);
}

// ---- calls whose client gave up ---------------------------------------------------------------

// An accumulation launched before its deadline runs to the end and is applied; the server then
// answers (and counts) OK, never DEADLINE_EXCEEDED, though its client saw its own deadline pass
// (docs/SERVER.md, "Calls that fail on the client").
TEST(ServerGaveUp, AccumulationLaunchedBeforeTheDeadline_IsAppliedAndCountedOk) {
  auto device = std::make_shared<FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(device, "gpu:0"));
  server::CoreConfig core;
  core.max_queue_delay_us = 1000;  // through the queue: the handler waits while the launch runs
  auto server = TestServer::Start(core, {}, std::move(backends));
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  device->launch_delay_ms = 600;
  client::ClientOptions options = server->ClientOptions();
  options.timeout_seconds = 0.2;
  auto hurried = *client::TpClient::Connect(options);
  EXPECT_EQ(hurried->Backward(AccumulateFor("m", c)).status().code(), absl::StatusCode::kDeadlineExceeded);
  WaitForMetric(*server, "tp_requests_total", {"method=\"Backward\"", "code=\"OK\""}, 1);
  EXPECT_LE(MetricValue(server->metrics().Serialize(), "tp_requests_total",
                        {"method=\"Backward\"", "code=\"DEADLINE_EXCEEDED\""}),
            0);
  device->launch_delay_ms = 0;
  auto gradient = client->GetGradient("m");
  ASSERT_TRUE(gradient.ok()) << gradient.status();
  ASSERT_EQ(gradient->size(), c.grad_weight.size());
  EXPECT_LT(RelativeError(ToDoubles(*gradient), c.grad_weight), 1e-5);
}

TEST(ServerGaveUp, StreamCancelledWithRequestsQueued_CountsEachCancelledAndNoneStaysInFlight) {
  server::CoreConfig core;
  core.max_queue_delay_us = 2000000;  // the requests wait for company while the test cancels
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  constexpr int kRequests = 10;
  client::TpClient::Stream stream = client->OpenStream();
  for (int i = 0; i < kRequests; ++i) {
    tp::v1::StreamRequest request;
    request.set_request_id(i);
    *request.mutable_forward() = ForwardFor("m", c);
    ASSERT_TRUE(stream.rpc->Write(request));
  }
  for (int i = 0; i < 1000 && MetricValue(server->metrics().Serialize(), "tp_queue_depth", {}) < kRequests; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(MetricValue(server->metrics().Serialize(), "tp_queue_depth", {}), kRequests);
  stream.context->TryCancel();
  tp::v1::StreamResponse response;
  while (stream.rpc->Read(&response)) {
  }
  EXPECT_EQ(stream.rpc->Finish().error_code(), grpc::StatusCode::CANCELLED);
  WaitForMetric(*server, "tp_requests_total", {"method=\"Stream\"", "code=\"CANCELLED\""}, 1);
  std::string text = server->metrics().Serialize();
  EXPECT_EQ(MetricValue(text, "tp_in_flight_requests", {"method=\"Stream/Forward\""}), 0);
  EXPECT_EQ(MetricValue(text, "tp_in_flight_requests", {"method=\"Stream\""}), 0);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"Stream/Forward\"", "code=\"CANCELLED\""}), kRequests);
  EXPECT_LE(MetricValue(text, "tp_batch_size_count", {}), 0) << "cancelled requests were launched";
  EXPECT_TRUE(client->Forward(ForwardFor("m", c)).ok());
}

// A Stream cancelled while an accumulation of it runs: the launch finishes and is applied, and it
// is counted OK (what the server did), though its answer could not be sent.
TEST(ServerGaveUp, StreamCancelledDuringAnAccumulation_CountsItOkAndTheGradientHasIt) {
  auto device = std::make_shared<FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(device, "gpu:0"));
  auto server = TestServer::Start({}, {}, std::move(backends));
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  device->launch_delay_ms = 600;
  client::TpClient::Stream stream = client->OpenStream();
  tp::v1::StreamRequest request;
  *request.mutable_backward() = AccumulateFor("m", c);
  ASSERT_TRUE(stream.rpc->Write(request));
  // Launched: admitted (in flight) and no longer queued.
  WaitForMetric(*server, "tp_in_flight_requests", {"method=\"Stream/Backward\""}, 1);
  WaitForMetric(*server, "tp_queue_depth", {}, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stream.context->TryCancel();
  tp::v1::StreamResponse response;
  while (stream.rpc->Read(&response)) {
  }
  EXPECT_EQ(stream.rpc->Finish().error_code(), grpc::StatusCode::CANCELLED);
  WaitForMetric(*server, "tp_requests_total", {"method=\"Stream\"", "code=\"CANCELLED\""}, 1);
  std::string text = server->metrics().Serialize();
  EXPECT_EQ(MetricValue(text, "tp_requests_total",
                        {"method=\"Stream/Backward\"", "device=\"gpu:0\"", "code=\"OK\""}),
            1);
  EXPECT_EQ(MetricValue(text, "tp_in_flight_requests", {"method=\"Stream/Backward\""}), 0);
  device->launch_delay_ms = 0;
  auto gradient = client->GetGradient("m");
  ASSERT_TRUE(gradient.ok()) << gradient.status();
  ASSERT_EQ(gradient->size(), c.grad_weight.size());
  EXPECT_LT(RelativeError(ToDoubles(*gradient), c.grad_weight), 1e-5);
}

// ---- requests that do not parse ---------------------------------------------------------------

// Bytes no tp.v1 request parses from: a tag whose varint never ends, and field 1 announcing 5
// bytes of which 2 come.
const std::vector<std::string>& Garbage() {
  static const std::vector<std::string> garbage = {std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11),
                                                   std::string("\x0a\x05" "ab", 4)};
  return garbage;
}

TEST(ServerBadBytes, EveryMethod_AnswersARequestThatDoesNotParseWithInvalidArgument) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  const char* methods[] = {
      "/tp.v1.ModelService/CreateModel",          "/tp.v1.ModelService/GetModel",
      "/tp.v1.ModelService/ListModels",           "/tp.v1.ModelService/DeleteModel",
      "/tp.v1.ModelService/UploadWeights",        "/tp.v1.ModelService/DownloadWeights",
      "/tp.v1.ModelService/GetGradient",          "/tp.v1.ModelService/ZeroGradient",
      "/tp.v1.ModelService/SgdStep",              "/tp.v1.TensorProductService/Forward",
      "/tp.v1.TensorProductService/Backward",     "/tp.v1.TensorProductService/BackwardChunked",
      "/tp.v1.TensorProductService/Stream",       "/tp.v1.TensorProductService/Echo"};
  for (const char* method : methods) {
    for (const std::string& garbage : Garbage()) {
      SCOPED_TRACE(method);
      grpc::Status status = RawCall(server->target(), method, {garbage});
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
      EXPECT_TRUE(absl::StrContains(status.error_message(), "are not a tp.v1.")) << status.error_message();
    }
  }
  // Each one answered by the handler (after the token check) and counted like any call.
  EXPECT_EQ(MetricValue(server->metrics().Serialize(), "tp_requests_total", {"code=\"INVALID_ARGUMENT\""}),
            2 * std::size(methods));
  // Nothing changed, and the server serves on.
  auto model = client->GetModel("m");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->version(), 1u);
  EXPECT_TRUE(client->Forward(ForwardFor("m", c)).ok());
}

TEST(ServerBadBytes, MalformedMessageMidStream_AnswersTheOnesBeforeThenEndsWithInvalidArgument) {
  auto server = TestServer::Start();
  tp::v1::StreamRequest echo;
  echo.set_request_id(7);
  echo.mutable_echo()->set_payload("before");
  std::vector<std::string> responses;
  grpc::Status status = RawCall(server->target(), "/tp.v1.TensorProductService/Stream",
                                {echo.SerializeAsString(), Garbage()[1], echo.SerializeAsString()}, &responses);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  ASSERT_EQ(responses.size(), 1u) << "the request before the bad message is answered, none after it";
  tp::v1::StreamResponse first;
  ASSERT_TRUE(first.ParseFromString(responses[0]));
  EXPECT_EQ(first.request_id(), 7u);
  EXPECT_EQ(first.echo().payload(), "before");
}

TEST(ServerBadBytes, MalformedMessageAfterACreateModelHeader_CreatesNothing) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  for (bool upload : {false, true}) {
    SCOPED_TRACE(upload);
    tp::v1::CreateModelRequest header;
    header.mutable_header()->set_name("m");
    *header.mutable_header()->mutable_spec() = SpecA();
    if (upload) {
      header.mutable_header()->set_upload(true);
    } else {
      header.mutable_header()->set_seed(3);
    }
    grpc::Status status =
        RawCall(server->target(), "/tp.v1.ModelService/CreateModel", {header.SerializeAsString(), Garbage()[1]});
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_EQ(client->GetModel("m").status().code(), absl::StatusCode::kNotFound);
  }
}

// ---- metrics: the device of every call, series gone with their model ---------------------------

TEST(ServerMetrics, EveryCallCarriesTheDeviceItReached_FailedLaunchesIncluded) {
  auto device = std::make_shared<FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(device, "gpu:0"));
  auto server = TestServer::Start({}, {}, std::move(backends));
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  ASSERT_TRUE(client->Forward(ForwardFor("m", c)).ok());
  device->fault = InjectedFault::kLaunchError;
  EXPECT_EQ(client->Forward(ForwardFor("m", c)).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(client->Backward(AccumulateFor("m", c)).status().code(), absl::StatusCode::kInternal);
  device->fault = InjectedFault::kNone;
  ASSERT_TRUE(client->GetGradient("m").ok());
  EXPECT_EQ(client->Forward(ForwardFor("nope", c)).status().code(), absl::StatusCode::kNotFound);
  std::string text = server->metrics().Serialize();
  const std::string gpu = "device=\"gpu:0\"";
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"Forward\"", "model=\"m\"", gpu, "code=\"OK\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"Forward\"", "model=\"m\"", gpu, "code=\"INTERNAL\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"Backward\"", gpu, "code=\"INTERNAL\""}), 1);
  // Errors per device: every failed launch is there, none with device "none".
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {gpu, "code=\"INTERNAL\""}), 2);
  EXPECT_LE(MetricValue(text, "tp_requests_total", {"device=\"none\"", "code=\"INTERNAL\""}), 0);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"GetGradient\"", "device=\"all\"", "code=\"OK\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_requests_total",
                        {"method=\"Forward\"", "model=\"-\"", "device=\"none\"", "code=\"NOT_FOUND\""}),
            1);
  EXPECT_EQ(MetricValue(text, "tp_request_latency_seconds_count", {"method=\"Forward\"", gpu}), 2);
}

TEST(ServerMetrics, DeletedModel_ItsSeriesGoWithIt) {
  auto server = TestServer::Start();
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  CreateFromCase(*client, "kept", c);
  ASSERT_TRUE(client->Forward(ForwardFor("m", c)).ok());
  ASSERT_TRUE(client->Backward(AccumulateFor("m", c)).ok());
  ASSERT_TRUE(client->Forward(ForwardFor("kept", c)).ok());
  std::string text = server->metrics().Serialize();
  ASSERT_TRUE(absl::StrContains(text, "model=\"m\""));
  ASSERT_TRUE(client->DeleteModel("m").ok());
  text = server->metrics().Serialize();
  EXPECT_FALSE(absl::StrContains(text, "model=\"m\"")) << "series of the deleted model stay";
  EXPECT_EQ(MetricValue(text, "tp_batch_size_count", {"model=\"kept\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"Forward\"", "model=\"kept\"", "code=\"OK\""}), 1);
  // A model created again under the name starts from nothing.
  CreateFromCase(*client, "m", c);
  ASSERT_TRUE(client->Forward(ForwardFor("m", c)).ok());
  text = server->metrics().Serialize();
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"Forward\"", "model=\"m\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_batch_size_count", {"model=\"m\""}), 1);
}

}  // namespace
}  // namespace tpserve::testing
