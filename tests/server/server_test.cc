// The gRPC service end to end on loopback (CPU backend): every RPC, stream ordering, dynamic
// batching seen in the metrics, each kind of bad input, auth, TLS, health, restarts.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/grpc/tensor_codec.h"
#include "tests/server/server_test_util.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"

namespace tpserve::testing {
namespace {

using ::tp::v1::BackwardRequest;
using ::tp::v1::ForwardRequest;

constexpr char kSmallIn1[] = "3x0e + 2x1o + 1x2e";
constexpr char kSmallIn2[] = "2x0e + 1x1o + 2x1e";
constexpr char kSmallOut[] = "2x0e + 3x1o + 2x1e + 1x2e + 1x2o + 1x3o";

// A unary Forward sent as raw bytes (a client with another protobuf library, or a broken one).
grpc::Status ForwardBytes(const std::string& target, const std::string& bytes, std::string* response_bytes,
                          grpc_compression_algorithm compression = GRPC_COMPRESS_NONE) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  context.set_compression_algorithm(compression);
  grpc::CompletionQueue cq;
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  auto call = stub.PrepareUnaryCall(&context, "/tp.v1.TensorProductService/Forward", request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  cq.Next(&tag, &ok);
  response_bytes->clear();
  std::vector<grpc::Slice> slices;
  if (status.ok() && response.Dump(&slices).ok()) {
    for (const auto& s : slices) response_bytes->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Waits (up to 10 s) until `n` requests sit in the server's queue, so timing-based tests do not
// depend on how fast a loaded machine delivers the first call.
void WaitForQueueDepth(TestServer& server, double n) {
  for (int i = 0; i < 1000; ++i) {
    if (MetricValue(server.metrics().Serialize(), "tp_queue_depth", {}) >= n) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "the queue never reached " << n << " requests";
}

// Waits (up to 10 s) until the server's metric reaches `value`: the server finishes a call after
// its client saw the end (a client's own deadline or cancel), and only its counters tell what it did.
void WaitForMetric(TestServer& server, const std::string& name, const std::vector<std::string>& labels,
                   double value) {
  for (int i = 0; i < 1000; ++i) {
    if (MetricValue(server.metrics().Serialize(), name, labels) == value) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << name << " never reached " << value << "; now "
                << MetricValue(server.metrics().Serialize(), name, labels);
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = TestServer::Start();
    ASSERT_NE(server_, nullptr);
    client_ = server_->Connect();
    ASSERT_NE(client_, nullptr);
  }
  std::unique_ptr<TestServer> server_;
  std::unique_ptr<client::TpClient> client_;
};

// ---- models ---------------------------------------------------------------------------------

TEST_F(ServerTest, CreateGetListDelete_ManagesModels) {
  auto a = client_->CreateModel("a", Spec(kSmallIn1, kSmallIn2, kSmallOut), nullptr, /*seed=*/7);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->weight_numel(), 84);
  EXPECT_EQ(a->dim_in1(), 3 + 6 + 5);
  EXPECT_EQ(a->version(), 1u);
  EXPECT_EQ(a->spec().irreps_in1(), "3x0e+2x1o+1x2e");
  auto b = client_->CreateModel("b", Spec(kSmallIn1, kSmallIn2, kSmallOut), nullptr, /*seed=*/7);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->weights_fnv1a64(), b->weights_fnv1a64()) << "seeded init must be deterministic";
  auto c = client_->CreateModel("c", Spec(kSmallIn1, kSmallIn2, kSmallOut), nullptr, /*seed=*/8);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->weights_fnv1a64(), c->weights_fnv1a64());

  EXPECT_EQ(client_->CreateModel("a", Spec(kSmallIn1, kSmallIn2, kSmallOut), nullptr).status().code(),
            absl::StatusCode::kAlreadyExists);
  auto list = client_->ListModels();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].name(), "a");
  EXPECT_EQ((*list)[2].name(), "c");
  auto got = client_->GetModel("b");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->weights_fnv1a64(), b->weights_fnv1a64());

  ASSERT_TRUE(client_->DeleteModel("b").ok());
  EXPECT_EQ(client_->GetModel("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->DeleteModel("b").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->ListModels()->size(), 2u);
}

TEST_F(ServerTest, UploadAndDownloadWeights_RoundTripInChunks) {
  ReferenceCase c = LoadCase();
  auto created = client_->CreateModel("m", Spec(c.irreps_in1, c.irreps_in2, c.irreps_out), nullptr, 1);
  ASSERT_TRUE(created.ok());
  std::mt19937_64 rng = FreshRng();
  std::vector<float> weights = ToFloats(RandomNormal(created->weight_numel(), rng));
  auto uploaded = client_->UploadWeights("m", weights);
  ASSERT_TRUE(uploaded.ok()) << uploaded.status();
  EXPECT_EQ(uploaded->version(), 2u);
  uint64_t version = 0;
  auto downloaded = client_->DownloadWeights("m", &version);
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_EQ(*downloaded, weights);
  EXPECT_EQ(version, 2u);
  // Optimistic concurrency.
  EXPECT_EQ(client_->UploadWeights("m", weights, /*expected_version=*/1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(client_->UploadWeights("m", weights, /*expected_version=*/2).ok());
}

TEST(ServerChunks, UploadWithManySmallChunks_AssemblesInOrder) {
  server::TransportConfig transport;
  transport.chunk_elements = 10;
  auto server = TestServer::Start({}, transport);
  client::ClientOptions options = server->ClientOptions();
  options.chunk_elements = 7;  // 84 weights: 12 chunks
  auto client = *client::TpClient::Connect(options);
  ReferenceCase c = LoadCase();
  std::vector<float> weights = ToFloats(c.weight);
  ASSERT_TRUE(client->CreateModel("m", Spec(c.irreps_in1, c.irreps_in2, c.irreps_out), &weights).ok());
  auto downloaded = client->DownloadWeights("m");  // 9 chunks of 10
  ASSERT_TRUE(downloaded.ok());
  EXPECT_EQ(*downloaded, weights);
}

TEST(ServerChunks, WeightsLargerThanTheMessageLimit_MoveInChunks) {
  server::TransportConfig transport;
  transport.max_message_bytes = 64 << 10;  // the weights below are 512 KiB
  auto server = TestServer::Start({}, transport);
  client::ClientOptions options = server->ClientOptions();
  options.chunk_elements = 4096;
  auto client = *client::TpClient::Connect(options);
  std::mt19937_64 rng = FreshRng();
  std::vector<float> weights = ToFloats(RandomNormal(131072, rng));
  auto created = client->CreateModel("big", Spec("32x0e + 32x1o", "32x0e + 32x1o", "32x0e + 32x1o"), &weights);
  ASSERT_TRUE(created.ok()) << created.status();
  auto downloaded = client->DownloadWeights("big");
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_EQ(*downloaded, weights);
  auto gradient = client->GetGradient("big");
  ASSERT_TRUE(gradient.ok()) << gradient.status();
  EXPECT_EQ(gradient->size(), weights.size());
}

TEST(ServerChunks, SeedModelWeights_126MB_RoundTripUnderTheDefaultMessageLimit) {
  auto server = TestServer::Start();  // default limits: 64 MiB messages, 1 MiB chunks
  auto client = server->Connect();
  const char* seed = "128x0e + 128x1e + 128x2e";
  std::vector<float> weights(31457280);
  uint32_t state = 12345;
  for (float& w : weights) {  // cheap distinct values, so a misplaced chunk shows
    state = state * 1664525u + 1013904223u;
    w = static_cast<float>(state >> 8) * (1.0f / 16777216.0f) - 0.5f;
  }
  auto created = client->CreateModel("seed", Spec(seed, seed, seed), &weights);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->weight_numel(), 31457280);
  EXPECT_EQ(created->weights_fnv1a64(), server::Fnv1a64(weights.data(), weights.size() * 4));
  auto downloaded = client->DownloadWeights("seed");
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_TRUE(*downloaded == weights);
}

TEST_F(ServerTest, UploadWeights_RejectsGapsShortStreamsAndUnknownModels) {
  ASSERT_TRUE(client_->CreateModel("m", Spec(kSmallIn1, kSmallIn2, kSmallOut), nullptr).ok());
  std::vector<float> short_weights(50, 1.0f);
  auto status = client_->UploadWeights("m", short_weights).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(status.message(), "50 of 84")) << status;
  EXPECT_EQ(client_->UploadWeights("nope", short_weights).status().code(), absl::StatusCode::kNotFound);
  std::vector<float> nan_weights(84, 1.0f);
  nan_weights[40] = std::nanf("");
  status = client_->UploadWeights("m", nan_weights).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "at [40]")) << status;
  // A chunk with a gap.
  auto context = client_->NewContext();
  tp::v1::ModelInfo info;
  auto writer = client_->models().UploadWeights(context.get(), &info);
  tp::v1::UploadWeightsRequest message;
  message.set_model("m");
  message.mutable_chunk()->set_offset(5);
  message.mutable_chunk()->set_dtype(tp::v1::DTYPE_FLOAT32);
  message.mutable_chunk()->set_data(std::string(16, '\0'));
  writer->Write(message);
  writer->WritesDone();
  grpc::Status gap = writer->Finish();
  EXPECT_EQ(gap.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(gap.error_message(), "expected offset 0")) << gap.error_message();
  EXPECT_EQ(client_->GetModel("m")->version(), 1u) << "failed uploads change nothing";
}

// ---- compute --------------------------------------------------------------------------------

TEST_F(ServerTest, Forward_MatchesE3nnReference) {
  int index = 0;
  for (const char* file : {"ref_mixed_parity.json", "ref_lmax3.json", "ref_unsorted_repeats.json"}) {
    SCOPED_TRACE(file);
    ReferenceCase c = LoadCase(file);
    std::string name = "m" + std::to_string(index++);
    CreateFromCase(*client_, name, c);
    auto response = client_->Forward(ForwardFor(name, c));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->out().dtype(), tp::v1::DTYPE_FLOAT32);
    EXPECT_EQ(response->out().shape(0), c.batch);
    EXPECT_LT(RelativeError(ToDoubles(response->out()), c.out), 1e-5);
    EXPECT_EQ(response->device(), "cpu");
    EXPECT_EQ(response->model_version(), 1u);
  }
}

TEST_F(ServerTest, Forward_AnswersInTheInputDtypeOrTheRequestedOne) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  ForwardRequest request = ForwardFor("m", c);
  *request.mutable_x1() = F64({c.batch, Dim(c.x1, c.batch)}, c.x1);
  *request.mutable_x2() = F64({c.batch, Dim(c.x2, c.batch)}, c.x2);
  auto f64 = client_->Forward(request);
  ASSERT_TRUE(f64.ok()) << f64.status();
  EXPECT_EQ(f64->out().dtype(), tp::v1::DTYPE_FLOAT64);
  EXPECT_LT(RelativeError(ToDoubles(f64->out()), c.out), 1e-5);
  request.set_output_dtype(tp::v1::DTYPE_BFLOAT16);
  auto bf16 = client_->Forward(request);
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(bf16->out().data().size(), c.out.size() * 2);
  EXPECT_LT(RelativeError(ToDoubles(bf16->out()), c.out), 1e-2);
  request.set_output_dtype(tp::v1::DTYPE_FLOAT16);
  auto f16 = client_->Forward(request);
  ASSERT_TRUE(f16.ok());
  EXPECT_LT(RelativeError(ToDoubles(f16->out()), c.out), 2e-3);
}

// Forward reads plain float32 messages from their bytes into page-locked leases and sends `out`
// from one (forward_wire.h); anything else goes through protobuf. Both must give the same answer.
TEST_F(ServerTest, Forward_FromBytesAndThroughProtobuf_GiveTheSameAnswer) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  const ForwardRequest request = ForwardFor("m", c);
  std::string fast_bytes;
  ASSERT_TRUE(ForwardBytes(server_->target(), request.SerializeAsString(), &fast_bytes).ok());
  EXPECT_GT(server_->core().host_pool().pinned_bytes(), 0u) << "the request did not take the leased path";
  const std::string text = server_->metrics().Serialize();
  for (const char* stage : {"read", "core", "write"}) {
    EXPECT_EQ(MetricValue(text, "tp_rpc_stage_seconds_count", {"method=\"Forward\"", std::string("stage=\"") + stage + "\""}),
              1)
        << stage;
  }
  tp::v1::ForwardResponse fast;
  ASSERT_TRUE(fast.ParseFromString(fast_bytes));
  EXPECT_LT(RelativeError(ToDoubles(fast.out()), c.out), 1e-5);
  EXPECT_EQ(fast.out().shape(0), c.batch);
  EXPECT_EQ(fast.device(), "cpu");

  // Compressed on the wire: the handler reads the decompressed bytes (and takes the leased path).
  std::string gzip_bytes;
  ASSERT_TRUE(ForwardBytes(server_->target(), request.SerializeAsString(), &gzip_bytes, GRPC_COMPRESS_GZIP).ok());
  tp::v1::ForwardResponse gzip;
  ASSERT_TRUE(gzip.ParseFromString(gzip_bytes));
  EXPECT_LT(RelativeError(ToDoubles(gzip.out()), c.out), 1e-5);

  // The same request with an unknown field appended, and split so that x1 comes in two parts
  // (shape first, then dtype and data: protobuf merges them): both are protobuf's to read.
  const std::string unknown_field = request.SerializeAsString() + std::string("\xa0\x06\x01", 3);
  ForwardRequest first, second = request;
  first.set_model("m");
  *first.mutable_x1()->mutable_shape() = request.x1().shape();
  second.mutable_x1()->clear_shape();
  second.clear_model();
  const std::string merged = first.SerializeAsString() + second.SerializeAsString();
  for (const std::string& bytes : {unknown_field, merged}) {
    std::string slow_bytes;
    grpc::Status status = ForwardBytes(server_->target(), bytes, &slow_bytes);
    ASSERT_TRUE(status.ok()) << status.error_message();
    tp::v1::ForwardResponse slow;
    ASSERT_TRUE(slow.ParseFromString(slow_bytes));
    // (The CPU backend's threads may sum in another order from call to call: not bit-identical.)
    EXPECT_LT(RelativeError(ToDoubles(slow.out()), ToDoubles(fast.out())), 1e-6);
    EXPECT_LT(RelativeError(ToDoubles(slow.out()), c.out), 1e-5);
    EXPECT_EQ(slow.out().shape(0), c.batch);
  }
}

TEST_F(ServerTest, Forward_GarbageBytes_InvalidArgumentAndTheServerServesOn) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  std::string unused;
  for (const std::string& garbage : {std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11),
                                     std::string("\x12\x7f\x08\x01", 4),
                                     std::string("\x0a\x05" "ab", 4)}) {  // model: 5 bytes announced, 2 sent
    grpc::Status status = ForwardBytes(server_->target(), garbage, &unused);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "not a tp.v1.ForwardRequest")) << status.error_message();
  }
  auto response = client_->Forward(ForwardFor("m", c));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_LT(RelativeError(ToDoubles(response->out()), c.out), 1e-5);
}

TEST_F(ServerTest, Backward_WithGradOutMatchesE3nnReference) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  BackwardRequest request = BackwardFor("m", c);
  request.set_want_grad_x1(true);
  request.set_want_grad_x2(true);
  request.set_weight_grad(tp::v1::WEIGHT_GRAD_RETURN);
  auto response = client_->Backward(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_LT(RelativeError(ToDoubles(response->grad_x1()), c.grad_x1), 1e-5);
  EXPECT_LT(RelativeError(ToDoubles(response->grad_x2()), c.grad_x2), 1e-5);
  EXPECT_LT(RelativeError(ToDoubles(response->grad_weight()), c.grad_weight), 1e-5);
  EXPECT_FALSE(response->has_out());
}

TEST_F(ServerTest, BackwardChunked_ReturnsTheWholeWeightGradient) {
  ReferenceCase c = LoadCase("ref_lmax3.json");
  CreateFromCase(*client_, "m", c);
  BackwardRequest request = BackwardFor("m", c);
  request.set_weight_grad(tp::v1::WEIGHT_GRAD_RETURN);
  request.set_want_grad_x1(true);
  auto response = client_->BackwardChunked(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_LT(RelativeError(ToDoubles(response->grad_weight()), c.grad_weight), 1e-5);
  EXPECT_LT(RelativeError(ToDoubles(response->grad_x1()), c.grad_x1), 1e-5);
}

TEST_F(ServerTest, Backward_SumTanhLossMatchesE3nnReference) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  BackwardRequest request = BackwardFor("m", c);
  request.set_loss(tp::v1::LOSS_SUM_TANH);
  request.set_want_out(true);
  request.set_weight_grad(tp::v1::WEIGHT_GRAD_RETURN);
  auto response = client_->Backward(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_LT(RelativeError(ToDoubles(response->grad_weight()), c.grad_weight_sum_tanh), 1e-5);
  EXPECT_LT(RelativeError(ToDoubles(response->out()), c.out), 1e-5);
}

TEST_F(ServerTest, GradientBuffer_AccumulatesZeroesAndAppliesSgdStep) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  BackwardRequest request = BackwardFor("m", c);
  request.set_weight_grad(tp::v1::WEIGHT_GRAD_ACCUMULATE);
  ASSERT_TRUE(client_->Backward(request).ok());
  ASSERT_TRUE(client_->Backward(request).ok());
  auto gradient = client_->GetGradient("m");
  ASSERT_TRUE(gradient.ok()) << gradient.status();
  std::vector<double> twice(c.grad_weight.size());
  for (size_t i = 0; i < twice.size(); ++i) twice[i] = 2 * c.grad_weight[i];
  EXPECT_LT(RelativeError(ToDoubles(*gradient), twice), 1e-5);

  auto stepped = client_->SgdStep("m", 0.25, /*zero_gradient=*/false);
  ASSERT_TRUE(stepped.ok()) << stepped.status();
  EXPECT_EQ(stepped->version(), 2u);
  std::vector<double> expected(c.weight.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = c.weight[i] - 0.25 * twice[i];
  EXPECT_LT(RelativeError(ToDoubles(*client_->DownloadWeights("m")), expected), 1e-6);

  ASSERT_TRUE(client_->ZeroGradient("m").ok());
  auto zeroed = client_->GetGradient("m");
  ASSERT_TRUE(zeroed.ok());
  ASSERT_EQ(zeroed->size(), c.weight.size());
  for (float g : *zeroed) ASSERT_EQ(g, 0.0f);
  EXPECT_EQ(client_->SgdStep("m", std::nan(""), false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->GetGradient("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, Stream_AnswersEveryRequestInOrderAndSurvivesABadOne) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  auto unary = client_->Forward(ForwardFor("m", c));
  ASSERT_TRUE(unary.ok());
  client::TpClient::Stream stream = client_->OpenStream();
  constexpr int kRequests = 40;
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      tp::v1::StreamRequest request;
      request.set_request_id(1000 + i);
      if (i == 17) {
        *request.mutable_forward() = ForwardFor("no-such-model", c);
      } else if (i == 20) {
        request.mutable_echo()->set_payload("ping");
      } else if (i % 3 == 2) {
        *request.mutable_backward() = BackwardFor("m", c);
        request.mutable_backward()->set_want_grad_x1(true);
      } else {
        *request.mutable_forward() = ForwardFor("m", c);
      }
      ASSERT_TRUE(stream.rpc->Write(request));
    }
    stream.rpc->WritesDone();
  });
  tp::v1::StreamResponse response;
  int received = 0;
  while (stream.rpc->Read(&response)) {
    SCOPED_TRACE(received);
    EXPECT_EQ(response.request_id(), 1000u + received);
    if (received == 17) {
      EXPECT_EQ(response.code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
    } else if (received == 20) {
      EXPECT_EQ(response.echo().payload(), "ping");
    } else if (received % 3 == 2) {
      EXPECT_EQ(response.code(), 0) << response.message();
      EXPECT_LT(RelativeError(ToDoubles(response.backward().grad_x1()), c.grad_x1), 1e-5);
    } else {
      EXPECT_EQ(response.code(), 0) << response.message();
      // Merged launches may round differently from a lone one: equal up to float32 rounding.
      EXPECT_LT(RelativeError(ToDoubles(response.forward().out()), ToDoubles(unary->out())), 1e-6);
    }
    ++received;
  }
  writer.join();
  EXPECT_TRUE(stream.rpc->Finish().ok());
  EXPECT_EQ(received, kRequests);
  // Every request on the stream is counted on its own, with its status code.
  std::string text = server_->metrics().Serialize();
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"Stream/Forward\"", "code=\"NOT_FOUND\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"Stream/Echo\"", "code=\"OK\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_request_latency_seconds_count", {"method=\"Stream/Backward\"", "model=\"m\""}), 11);
}

TEST_F(ServerTest, Stream_ClientCancellingMidStreamLeavesTheServerServing) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  client::TpClient::Stream stream = client_->OpenStream();
  for (int i = 0; i < 10; ++i) {
    tp::v1::StreamRequest request;
    request.set_request_id(i);
    *request.mutable_forward() = ForwardFor("m", c);
    if (!stream.rpc->Write(request)) break;
  }
  tp::v1::StreamResponse response;
  ASSERT_TRUE(stream.rpc->Read(&response));
  stream.context->TryCancel();
  while (stream.rpc->Read(&response)) {
  }
  EXPECT_EQ(stream.rpc->Finish().error_code(), grpc::StatusCode::CANCELLED);
  auto after = client_->Forward(ForwardFor("m", c));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_LT(RelativeError(ToDoubles(after->out()), c.out), 1e-5);
}

TEST(ServerBadInput, InlineWeightGradientOverTheLimitPointsToBackwardChunked) {
  server::CoreConfig core;
  core.max_inline_grad_bytes = 100;  // the model below has 84 weights = 336 bytes
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  BackwardRequest request = BackwardFor("m", c);
  request.set_weight_grad(tp::v1::WEIGHT_GRAD_RETURN);
  auto status = client->Backward(request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(status.message(), "BackwardChunked")) << status;
  auto chunked = client->BackwardChunked(request);
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  EXPECT_LT(RelativeError(ToDoubles(chunked->grad_weight()), c.grad_weight), 1e-5);
}

TEST_F(ServerTest, Echo_ReturnsThePayload) {
  tp::v1::EchoRequest request;
  request.set_payload(std::string(100000, 'x'));
  auto response = client_->Echo(request);
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->payload(), request.payload());
  request.set_response_bytes(10);
  EXPECT_EQ(client_->Echo(request)->payload().size(), 10u);
}

TEST_F(ServerTest, Echo_NegativeResponseBytesIsInvalidArgument_UnaryAndInAStream) {
  tp::v1::EchoRequest request;
  request.set_payload("abc");
  request.set_response_bytes(-1);
  auto unary = client_->Echo(request);
  EXPECT_EQ(unary.status().code(), absl::StatusCode::kInvalidArgument) << unary.status();
  EXPECT_NE(unary.status().message().find("response_bytes"), std::string::npos) << unary.status();
  client::TpClient::Stream stream = client_->OpenStream();
  tp::v1::StreamRequest message;
  message.set_request_id(7);
  *message.mutable_echo() = request;
  ASSERT_TRUE(stream.rpc->Write(message));
  message.set_request_id(8);
  message.mutable_echo()->set_response_bytes(0);
  ASSERT_TRUE(stream.rpc->Write(message));
  stream.rpc->WritesDone();
  tp::v1::StreamResponse response;
  ASSERT_TRUE(stream.rpc->Read(&response));
  EXPECT_EQ(response.request_id(), 7u);
  EXPECT_EQ(response.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << response.message();
  ASSERT_TRUE(stream.rpc->Read(&response));
  EXPECT_EQ(response.code(), 0);
  EXPECT_EQ(response.echo().payload(), "abc");
  EXPECT_TRUE(stream.rpc->Finish().ok());
}

TEST_F(ServerTest, Health_ReportsServing) {
  auto health = client_->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
}

// ---- dynamic batching -------------------------------------------------------------------------

TEST(ServerBatching, ConcurrentRequestsMergeIntoOneLaunch) {
  server::CoreConfig core;
  // The launch happens when all 8 x 4 samples are there (a full batch), however slowly they arrive.
  core.max_queue_delay_us = 10000000;
  core.max_batch_size = 32;
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  constexpr int kClients = 8;  // 8 x batch 4 = 32 samples
  std::vector<std::thread> threads;
  std::atomic<int64_t> max_executed{0};
  std::atomic<int> ok{0}, right{0};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      // Each client's x1 scaled by its own factor (the product is linear in x1), so that an answer
      // with another request's rows in it is wrong.
      const double factor = 1.0 + 0.5 * i;
      std::vector<double> x1 = c.x1, out = c.out;
      for (double& v : x1) v *= factor;
      for (double& v : out) v *= factor;
      ForwardRequest request = ForwardFor("m", c);
      *request.mutable_x1() = F32({c.batch, Dim(c.x1, c.batch)}, x1);
      auto response = client->Forward(request);
      if (!response.ok()) return;
      ++ok;
      if (RelativeError(ToDoubles(response->out()), out) < 1e-5) {
        ++right;
        int64_t seen = max_executed.load();
        while (response->executed_batch() > seen && !max_executed.compare_exchange_weak(seen, response->executed_batch())) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kClients);
  EXPECT_EQ(right.load(), kClients) << "a merged launch answered a request with wrong rows";
  EXPECT_GT(max_executed.load(), c.batch) << "no request was merged with another";
  std::string text = server->metrics().Serialize();
  double launches = MetricValue(text, "tp_batch_size_count", {"model=\"m\""});
  double samples = MetricValue(text, "tp_batch_size_sum", {"model=\"m\""});
  EXPECT_EQ(samples, kClients * c.batch);
  EXPECT_EQ(launches, 1) << "the batch-size histogram must show one merged launch";
  EXPECT_EQ(MetricValue(text, "tp_launch_stage_seconds_count", {"stage=\"device\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_launch_stage_seconds_count", {"stage=\"gather\""}), 1);
  EXPECT_EQ(max_executed.load(), kClients * c.batch);
}

TEST(ServerBatching, FullQueueAnswersResourceExhausted) {
  server::CoreConfig core;
  core.max_queue_delay_us = 1000000;  // the first request waits for company; the test does not
  core.max_queued_requests = 1;
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  std::thread first([&] { EXPECT_TRUE(client->Forward(ForwardFor("m", c)).ok()); });
  WaitForQueueDepth(*server, 1);
  auto second = client->Forward(ForwardFor("m", c));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  first.join();
  EXPECT_GE(MetricValue(server->metrics().Serialize(), "tp_requests_total", {"code=\"RESOURCE_EXHAUSTED\""}), 1);
}

TEST(ServerBatching, DeadlinePassedWhileQueuedIsDeadlineExceeded) {
  server::CoreConfig core;
  core.max_queue_delay_us = 400000;
  auto server = TestServer::Start(core);
  client::ClientOptions options = server->ClientOptions();
  auto client = *client::TpClient::Connect(options);
  ReferenceCase c = LoadCase();
  CreateFromCase(*client, "m", c);
  options.timeout_seconds = 0.05;
  auto hurried = *client::TpClient::Connect(options);
  auto response = hurried->Forward(ForwardFor("m", c));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded) << response.status();
  BackwardRequest accumulate = BackwardFor("m", c);
  accumulate.set_weight_grad(tp::v1::WEIGHT_GRAD_ACCUMULATE);
  EXPECT_EQ(hurried->Backward(accumulate).status().code(), absl::StatusCode::kDeadlineExceeded);
  // The client's own deadline says nothing about the server: its counters must show both calls
  // dropped from the queue without a launch, and the gradient untouched. (The server may see the
  // client's cancel, sent when its deadline fired, before its own copy of the deadline passes.)
  auto gave_up = [&](const std::string& method) {
    std::string text = server->metrics().Serialize();
    double total = 0;
    for (const char* code : {"code=\"DEADLINE_EXCEEDED\"", "code=\"CANCELLED\""}) {
      total += std::max(0.0, MetricValue(text, "tp_requests_total", {"method=\"" + method + "\"", code}));
    }
    return total;
  };
  for (int i = 0; i < 1000 && gave_up("Forward") + gave_up("Backward") < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(gave_up("Forward"), 1);
  EXPECT_EQ(gave_up("Backward"), 1);
  std::string text = server->metrics().Serialize();
  EXPECT_LE(MetricValue(text, "tp_batch_size_count", {}), 0) << "a dropped request was launched";
  EXPECT_EQ(MetricValue(text, "tp_in_flight_requests", {}), 0);
  auto gradient = client->GetGradient("m");
  ASSERT_TRUE(gradient.ok()) << gradient.status();
  ASSERT_EQ(gradient->size(), c.weight.size());
  for (float g : *gradient) ASSERT_EQ(g, 0.0f);
  // The server is still fine afterwards, and this launch holds only this call's samples.
  EXPECT_TRUE(client->Forward(ForwardFor("m", c)).ok());
  text = server->metrics().Serialize();
  EXPECT_EQ(MetricValue(text, "tp_batch_size_count", {}), 1);
  EXPECT_EQ(MetricValue(text, "tp_batch_size_sum", {}), c.batch);
}

// A server whose first request waits 0.3 s for company (so a test can act while it is queued),
// holding model "m" of the default reference case.
struct QueueingServer {
  QueueingServer() {
    server::CoreConfig core;
    core.max_queue_delay_us = 300000;
    server = TestServer::Start(core);
    client = server->Connect();
    c = LoadCase();
    CreateFromCase(*client, "m", c);
  }
  std::unique_ptr<TestServer> server;
  std::unique_ptr<client::TpClient> client;
  ReferenceCase c;
};

// A unary call's inputs are read straight from its request message (no copy), so the handler
// must not return while the core may still read them: a call cancelled while queued ends as
// CANCELLED once the batcher has dropped it, and the server goes on answering correctly.
TEST(ServerBatching, CancelledWhileQueuedIsCancelledAndTheServerGoesOn) {
  QueueingServer q;
  auto& server = q.server;
  auto& client = q.client;
  const ReferenceCase& c = q.c;
  auto stub = tp::v1::TensorProductService::NewStub(
      grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  tp::v1::ForwardResponse response;
  grpc::Status status;
  std::thread call([&] { status = stub->Forward(&context, ForwardFor("m", c), &response); });
  WaitForQueueDepth(*server, 1);
  context.TryCancel();
  call.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  // CANCELLED above is the client's own doing; the server's side: the handler saw the cancel,
  // the batcher dropped the request unlaunched, and the call is no longer in flight.
  WaitForMetric(*server, "tp_requests_total", {"method=\"Forward\"", "code=\"CANCELLED\""}, 1);
  std::string text = server->metrics().Serialize();
  EXPECT_EQ(MetricValue(text, "tp_in_flight_requests", {"method=\"Forward\""}), 0);
  EXPECT_LE(MetricValue(text, "tp_batch_size_count", {}), 0) << "the cancelled request was launched";
  EXPECT_EQ(MetricValue(text, "tp_queue_depth", {}), 0);
  auto after = client->Forward(ForwardFor("m", c));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_LT(RelativeError(ToDoubles(after->out()), c.out), 1e-5);
  EXPECT_EQ(MetricValue(server->metrics().Serialize(), "tp_batch_size_sum", {}), c.batch);
}

TEST(TensorCodec, BorrowReadsFloat32BytesInPlaceAndConvertsOtherDTypes) {
  tp::v1::Tensor f32 = F32({2, 3}, {1, -2, 3.5, 4, 5, 6});
  auto borrowed = wire::DecodeTensor(f32, "x1", wire::Decode::kBorrow);
  ASSERT_TRUE(borrowed.ok()) << borrowed.status();
  EXPECT_EQ(static_cast<const void*>(borrowed->values()), static_cast<const void*>(f32.data().data()));
  EXPECT_TRUE(borrowed->data.empty());
  ASSERT_EQ(borrowed->size(), 6u);
  EXPECT_EQ(borrowed->values()[2], 3.5f);
  auto copied = wire::DecodeTensor(f32, "x1");
  ASSERT_TRUE(copied.ok());
  EXPECT_NE(static_cast<const void*>(copied->values()), static_cast<const void*>(f32.data().data()));
  EXPECT_EQ(copied->data, (std::vector<float>{1, -2, 3.5, 4, 5, 6}));
  // float64 cannot be borrowed as float32: it is converted into owned values.
  tp::v1::Tensor f64 = F64({1, 2}, {0.25, -8});
  auto converted = wire::DecodeTensor(f64, "x2", wire::Decode::kBorrow);
  ASSERT_TRUE(converted.ok());
  EXPECT_EQ(converted->borrowed, nullptr);
  EXPECT_EQ(converted->data, (std::vector<float>{0.25f, -8.0f}));
  // A byte length that disagrees with the shape is refused in either mode.
  f32.mutable_data()->pop_back();
  auto bad = wire::DecodeTensor(f32, "x1", wire::Decode::kBorrow);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "expected 24 bytes")) << bad.status();
}

TEST(ServerShutdown, FinishesCallsInFlight) {
  QueueingServer q;
  auto& server = q.server;
  auto& client = q.client;
  const ReferenceCase& c = q.c;
  absl::StatusOr<tp::v1::ForwardResponse> response = absl::UnknownError("not run");
  std::thread call([&] { response = client->Forward(ForwardFor("m", c)); });
  WaitForQueueDepth(*server, 1);
  server->grpc().Shutdown(absl::Seconds(5));
  server->grpc().Wait();
  call.join();
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_LT(RelativeError(ToDoubles(response->out()), c.out), 1e-5);
}

// ---- bad input ------------------------------------------------------------------------------

TEST_F(ServerTest, BadInput_MalformedIrrepsIsInvalidArgument) {
  auto status = client_->CreateModel("m", Spec("3x0e + 2xq", kSmallIn2, kSmallOut), nullptr).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "irreps_in1")) << status;
  status = client_->CreateModel("m", Spec("1x0e", "1x0e", "1x1o"), nullptr).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "no path")) << status;
  status = client_->CreateModel("../evil", Spec("1x0e", "1x0e", "1x0e"), nullptr).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  std::vector<float> wrong(3, 1.0f);
  status = client_->CreateModel("m", Spec(kSmallIn1, kSmallIn2, kSmallOut), &wrong).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
}

TEST_F(ServerTest, BadInput_AbsurdlyLargeModelsAreRefusedBeforeAnyAllocation) {
  auto status = client_->CreateModel("huge", Spec("100000x0e", "100000x0e", "100000x0e"), nullptr).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "at most 1073741824")) << status;
  status = client_->CreateModel("high-l", Spec("1x40e", "1x40e", "1x0e"), nullptr).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "l <= 8")) << status;
  EXPECT_TRUE(client_->ListModels()->empty());
}

TEST_F(ServerTest, BadInput_ShapeMismatchNamesTheExpectedShape) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  ForwardRequest request = ForwardFor("m", c);
  *request.mutable_x1() = F32({c.batch, 5}, std::vector<double>(c.batch * 5, 1.0));
  auto status = client_->Forward(request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "expected shape [4, 14]")) << status;
  request = ForwardFor("m", c);
  *request.mutable_x2() = F32({c.batch + 1, Dim(c.x2, c.batch)}, std::vector<double>((c.batch + 1) * 11, 1.0));
  status = client_->Forward(request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "x2: expected shape [4, 11]")) << status;
  BackwardRequest backward = BackwardFor("m", c);
  *backward.mutable_grad_out() = F32({c.batch, 3}, std::vector<double>(c.batch * 3, 1.0));
  backward.set_want_grad_x1(true);
  status = client_->Backward(backward).status();
  EXPECT_TRUE(absl::StrContains(status.message(), "grad_out: expected shape [4, ")) << status;
}

TEST_F(ServerTest, BadInput_WrongDtypeOrByteLengthIsInvalidArgument) {
  ReferenceCase c = LoadCase();
  CreateFromCase(*client_, "m", c);
  ForwardRequest request = ForwardFor("m", c);
  request.mutable_x1()->set_dtype(tp::v1::DTYPE_UNSPECIFIED);
  auto status = client_->Forward(request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "x1")) << status;
  request = ForwardFor("m", c);
  request.mutable_x1()->mutable_data()->pop_back();
  status = client_->Forward(request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "expected 224 bytes")) << status;
  request = ForwardFor("m", c);
  request.mutable_x1()->set_shape(0, -4);
  EXPECT_EQ(client_->Forward(request).status().code(), absl::StatusCode::kInvalidArgument);
  request = ForwardFor("m", c);
  request.clear_x2();
  EXPECT_EQ(client_->Forward(request).status().code(), absl::StatusCode::kInvalidArgument);
  BackwardRequest backward = BackwardFor("m", c);  // requests nothing
  EXPECT_EQ(client_->Backward(backward).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServerTest, BadInput_UnknownModelIsNotFound) {
  ReferenceCase c = LoadCase();
  auto status = client_->Forward(ForwardFor("ghost", c)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(status.message(), "ghost")) << status;
}

TEST(ServerBadInput, BatchOverTheLimitIsInvalidArgument) {
  server::CoreConfig core;
  core.max_batch_size = 3;
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  ReferenceCase c = LoadCase();  // batch 4
  CreateFromCase(*client, "m", c);
  auto status = client->Forward(ForwardFor("m", c)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "expected 1 to 3")) << status;
}

TEST(ServerBadInput, NonFiniteValuesAreRejectedOrPassedByConfig) {
  ReferenceCase c = LoadCase();
  std::vector<double> x1 = c.x1;
  x1[5] = std::nan("");
  for (bool reject : {true, false}) {
    SCOPED_TRACE(reject);
    server::CoreConfig core;
    core.reject_non_finite = reject;
    auto server = TestServer::Start(core);
    auto client = server->Connect();
    CreateFromCase(*client, "m", c);
    ForwardRequest request = ForwardFor("m", c);
    *request.mutable_x1() = F32({c.batch, Dim(x1, c.batch)}, x1);
    auto response = client->Forward(request);
    if (reject) {
      EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StrContains(response.status().message(), "x1: non-finite")) << response.status();
    } else {
      ASSERT_TRUE(response.ok()) << response.status();
      std::vector<double> out = ToDoubles(response->out());
      EXPECT_TRUE(std::any_of(out.begin(), out.end(), [](double v) { return std::isnan(v); }));
    }
  }
}

TEST(ServerBadInput, OversizedMessageIsResourceExhaustedAndServerStaysUp) {
  server::TransportConfig transport;
  transport.max_message_bytes = 64 << 10;
  auto server = TestServer::Start({}, transport);
  auto client = server->Connect();
  tp::v1::EchoRequest request;
  request.set_payload(std::string(100 << 10, 'x'));
  EXPECT_EQ(client->Echo(request).status().code(), absl::StatusCode::kResourceExhausted);
  request.set_payload("small");
  EXPECT_TRUE(client->Echo(request).ok());
}

// ---- auth and TLS ---------------------------------------------------------------------------

// Any method called with raw bytes: `messages` are written (then the client half-closes), every
// response is read, and the status returned. Works for unary and streaming methods alike.
grpc::Status CallWithBytes(std::shared_ptr<grpc::Channel> channel, const std::string& method, const std::string& token,
                           const std::vector<std::string>& messages) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  grpc::CompletionQueue cq;
  void* tag;
  bool ok;
  auto call = stub.PrepareCall(&context, method, &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  for (const std::string& bytes : messages) {
    if (!ok) break;
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    cq.Next(&tag, &ok);
  }
  call->WritesDone(reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  for (ok = true; ok;) {
    grpc::ByteBuffer response;
    call->Read(&response, reinterpret_cast<void*>(4));
    cq.Next(&tag, &ok);
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// Every method of both tp.v1 services (read from the descriptors, so a new one is covered too),
// unary and streaming: without the token, or with a wrong one, UNAUTHENTICATED and nothing
// changes; with it, the same bytes get past authentication.
TEST(ServerAuth, EveryRpcOfBothServicesRequiresTheToken) {
  server::TransportConfig transport;
  transport.auth_token = "s3cret";
  auto server = TestServer::Start({}, transport);
  client::ClientOptions options = server->ClientOptions();
  options.auth_token = "s3cret";
  auto good = *client::TpClient::Connect(options);
  ASSERT_TRUE(good->CreateModel("keep", Spec("2x0e", "1x0e", "2x0e"), nullptr, 3).ok());
  auto before = good->GetModel("keep");
  ASSERT_TRUE(before.ok());

  // A request naming "keep" for each method, so that an unchecked call would act on it.
  tp::v1::DeleteModelRequest delete_request;
  delete_request.set_name("keep");
  tp::v1::SgdStepRequest sgd_request;
  sgd_request.set_model("keep");
  sgd_request.set_learning_rate(1.0);
  tp::v1::ZeroGradientRequest zero_request;
  zero_request.set_model("keep");
  tp::v1::StreamRequest stream_request;
  stream_request.mutable_echo()->set_payload("x");
  const std::map<std::string, std::vector<std::string>> bodies = {
      {"DeleteModel", {delete_request.SerializeAsString()}},
      {"SgdStep", {sgd_request.SerializeAsString()}},
      {"ZeroGradient", {zero_request.SerializeAsString()}},
      {"Stream", {stream_request.SerializeAsString(), stream_request.SerializeAsString()}},
  };
  auto channel = grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials());
  int methods = 0, streaming = 0;
  const google::protobuf::FileDescriptor* proto = tp::v1::ForwardRequest::descriptor()->file();
  for (const auto* service : {proto->FindServiceByName("ModelService"), proto->FindServiceByName("TensorProductService")}) {
    ASSERT_NE(service, nullptr);
    for (int i = 0; i < service->method_count(); ++i, ++methods) {
      const auto* method = service->method(i);
      const std::string path = absl::StrCat("/", service->full_name(), "/", method->name());
      SCOPED_TRACE(path);
      streaming += method->client_streaming() || method->server_streaming();
      auto body = bodies.find(method->name());
      const std::vector<std::string> messages = body != bodies.end() ? body->second : std::vector<std::string>{""};
      EXPECT_EQ(CallWithBytes(channel, path, "", messages).error_code(), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_EQ(CallWithBytes(channel, path, "s3cret-not", messages).error_code(), grpc::StatusCode::UNAUTHENTICATED);
      if (method->name() != "DeleteModel") {
        EXPECT_NE(CallWithBytes(channel, path, "s3cret", messages).error_code(), grpc::StatusCode::UNAUTHENTICATED);
      }
    }
  }
  EXPECT_EQ(methods, 14);  // 9 + 5 in tensor_product.proto today
  EXPECT_GE(streaming, 6);
  auto after = good->GetModel("keep");
  ASSERT_TRUE(after.ok()) << "an unauthenticated DeleteModel went through: " << after.status();
  EXPECT_GT(after->version(), before->version()) << "the authorized SgdStep should have stepped";
  EXPECT_EQ(MetricValue(server->metrics().Serialize(), "tp_requests_total", {"code=\"UNAUTHENTICATED\""}),
            2 * methods);
  // The client library's streams too.
  options.auth_token = "";
  auto missing = *client::TpClient::Connect(options);
  client::TpClient::Stream stream = missing->OpenStream();
  tp::v1::StreamResponse response;
  EXPECT_FALSE(stream.rpc->Read(&response));
  EXPECT_EQ(stream.rpc->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(missing->DownloadWeights("keep").status().code(), absl::StatusCode::kUnauthenticated);
  std::vector<float> weights(4, 1.0f);
  EXPECT_EQ(missing->UploadWeights("keep", weights).status().code(), absl::StatusCode::kUnauthenticated);
}

// openssl at test time: a CA, and certificates it signs (or self-signed ones) for the server and
// for clients.
class Pki {
 public:
  explicit Pki(const std::string& dir) : dir_(dir) {}
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  // name.pem + name.key, self-signed CA.
  bool MakeCa(const std::string& name) {
    return Run("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=" + name + " -keyout " +
               Path(name + ".key") + " -out " + Path(name + ".pem"));
  }
  // name.pem + name.key signed by `ca`, valid for localhost and 127.0.0.1.
  bool MakeSigned(const std::string& name, const std::string& ca) {
    const std::string ext = Path(name + ".ext");
    std::ofstream(ext) << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    return Run("openssl req -newkey rsa:2048 -nodes -subj /CN=" + name + " -keyout " + Path(name + ".key") +
               " -out " + Path(name + ".csr")) &&
           Run("openssl x509 -req -days 1 -in " + Path(name + ".csr") + " -CA " + Path(ca + ".pem") + " -CAkey " +
               Path(ca + ".key") + " -CAcreateserial -extfile " + ext + " -out " + Path(name + ".pem"));
  }

 private:
  static bool Run(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()) == 0; }
  std::string dir_;
};

TEST(ServerTls, ClientCertificateRequired_WithTlsClientCa) {
  TempDir dir;
  Pki pki(dir.path());
  ASSERT_TRUE(pki.MakeCa("server-ca") && pki.MakeSigned("server", "server-ca"));
  ASSERT_TRUE(pki.MakeCa("client-ca") && pki.MakeSigned("client", "client-ca"));
  ASSERT_TRUE(pki.MakeCa("other-ca") && pki.MakeSigned("stranger", "other-ca"));
  server::TransportConfig transport;
  transport.tls_cert_file = pki.Path("server.pem");
  transport.tls_key_file = pki.Path("server.key");
  transport.tls_client_ca_file = pki.Path("client-ca.pem");
  auto server = TestServer::Start({}, transport);
  ASSERT_NE(server, nullptr);
  client::ClientOptions options = server->ClientOptions();
  options.target = "localhost:" + std::to_string(server->port());
  options.tls = true;
  options.tls_ca_file = pki.Path("server-ca.pem");
  options.timeout_seconds = 5;
  EXPECT_FALSE((*client::TpClient::Connect(options))->ListModels().ok()) << "no client certificate";
  options.tls_cert_file = pki.Path("stranger.pem");
  options.tls_key_file = pki.Path("stranger.key");
  EXPECT_FALSE((*client::TpClient::Connect(options))->ListModels().ok()) << "a certificate of another CA";
  options.tls_cert_file = pki.Path("client.pem");
  options.tls_key_file = pki.Path("client.key");
  auto listed = (*client::TpClient::Connect(options))->ListModels();
  EXPECT_TRUE(listed.ok()) << listed.status();
}

TEST(ServerTls, ReloadCertificates_ServesTheNewOneAndRefusesABrokenOne) {
  TempDir dir;
  Pki pki(dir.path());
  ASSERT_TRUE(pki.MakeCa("ca1") && pki.MakeSigned("one", "ca1"));
  ASSERT_TRUE(pki.MakeCa("ca2") && pki.MakeSigned("two", "ca2"));
  const std::string cert = pki.Path("live.pem"), key = pki.Path("live.key");
  std::filesystem::copy_file(pki.Path("one.pem"), cert);
  std::filesystem::copy_file(pki.Path("one.key"), key);
  server::TransportConfig transport;
  transport.tls_cert_file = cert;
  transport.tls_key_file = key;
  transport.tls_reload_seconds = 1;
  auto server = TestServer::Start({}, transport);
  ASSERT_NE(server, nullptr);
  client::ClientOptions options = server->ClientOptions();
  options.target = "localhost:" + std::to_string(server->port());
  options.tls = true;
  options.timeout_seconds = 5;
  auto trusts = [&](const std::string& ca) {
    client::ClientOptions o = options;
    o.tls_ca_file = pki.Path(ca + ".pem");
    return (*client::TpClient::Connect(o))->ListModels().ok();  // a new channel: a new handshake
  };
  EXPECT_TRUE(trusts("ca1"));
  EXPECT_FALSE(trusts("ca2"));
  // A key that is not the certificate's: refused, the served pair stays.
  std::filesystem::copy_file(pki.Path("two.pem"), cert, std::filesystem::copy_options::overwrite_existing);
  absl::Status broken = server->grpc().ReloadCertificates();
  EXPECT_EQ(broken.code(), absl::StatusCode::kInvalidArgument) << broken;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_TRUE(trusts("ca1")) << "a refused reload changed the served certificate";
  std::filesystem::copy_file(pki.Path("two.key"), key, std::filesystem::copy_options::overwrite_existing);
  ASSERT_TRUE(server->grpc().ReloadCertificates().ok());
  bool switched = false;
  for (int i = 0; i < 50 && !switched; ++i) {
    switched = trusts("ca2");
    if (!switched) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(switched) << "the reloaded certificate was not served within 5 s";
  EXPECT_FALSE(trusts("ca1"));
}

TEST(ServerListen, SecondServerOnTheSamePortFailsToBind) {
  auto first = TestServer::Start();
  ASSERT_NE(first, nullptr);
  server::TransportConfig transport;
  transport.listen_address = first->target();
  auto second = server::GrpcServer::Start(transport, &first->core(), &first->metrics());
  ASSERT_FALSE(second.ok()) << "two servers share port " << first->port();
  EXPECT_NE(second.status().message().find("cannot listen on " + first->target()), std::string::npos)
      << second.status();
}

TEST(ServerTls, ServesOverTlsWithACertificateMadeAtTestTime) {
  TempDir dir;
  std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  ASSERT_TRUE(MakeSelfSignedCertificate(cert, key));
  server::TransportConfig transport;
  transport.tls_cert_file = cert;
  transport.tls_key_file = key;
  auto server = TestServer::Start({}, transport);
  ASSERT_NE(server, nullptr);
  client::ClientOptions options = server->ClientOptions();
  options.target = "localhost:" + std::to_string(server->port());
  options.tls = true;
  options.tls_ca_file = cert;
  auto secure = *client::TpClient::Connect(options);
  auto created = secure->CreateModel("m", Spec("2x0e", "1x0e", "2x0e"), nullptr, 3);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(secure->ListModels()->size(), 1u);
  options.tls = false;
  options.timeout_seconds = 2;
  auto plain = *client::TpClient::Connect(options);
  EXPECT_FALSE(plain->ListModels().ok()) << "a plaintext client must not get through";
}

// ---- persistence ----------------------------------------------------------------------------

TEST(ServerRestart, KeepsModelsWeightsAndVersions) {
  TempDir dir;
  server::CoreConfig core;
  core.model_dir = dir.path();
  ReferenceCase c = LoadCase();
  uint64_t fnv = 0;
  {
    auto server = TestServer::Start(core);
    auto client = server->Connect();
    CreateFromCase(*client, "m", c);
    ASSERT_TRUE(client->CreateModel("seeded", Spec("4x0e + 2x1o", "1x0e + 1x1o", "3x0e + 2x1o"), nullptr, 11).ok());
    BackwardRequest request = BackwardFor("m", c);
    request.set_weight_grad(tp::v1::WEIGHT_GRAD_ACCUMULATE);
    ASSERT_TRUE(client->Backward(request).ok());
    auto stepped = client->SgdStep("m", 0.5, true);
    ASSERT_TRUE(stepped.ok());
    fnv = stepped->weights_fnv1a64();
    ASSERT_TRUE(client->CreateModel("gone", Spec("1x0e", "1x0e", "1x0e"), nullptr).ok());
    ASSERT_TRUE(client->DeleteModel("gone").ok());
  }
  auto server = TestServer::Start(core);
  auto client = server->Connect();
  auto list = client->ListModels();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  auto m = client->GetModel("m");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->version(), 2u);
  EXPECT_EQ(m->weights_fnv1a64(), fnv);
  std::vector<double> expected(c.weight.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = c.weight[i] - 0.5 * c.grad_weight[i];
  EXPECT_LT(RelativeError(ToDoubles(*client->DownloadWeights("m")), expected), 1e-6);
  EXPECT_TRUE(client->Forward(ForwardFor("m", c)).ok());
}

}  // namespace
}  // namespace tpserve::testing
