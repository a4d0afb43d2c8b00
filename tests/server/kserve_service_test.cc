// inference.GRPCInferenceService (the Open Inference Protocol) end to end on loopback, CPU backend:
// both tensor encodings, every datatype, requested outputs, gradients through ModelInfer against
// tp.v1's Forward and Backward on the same server, errors with their codes, auth, metrics,
// metadata, config and repository calls, and ModelStreamInfer.
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <tuple>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "server/grpc/forward_wire.h"
#include "server/grpc/tensor_codec.h"
#include "tests/server/server_test_util.h"
#include "tests/support/random.h"

namespace tpserve::testing {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;

constexpr char kIn1[] = "3x0e + 2x1o + 1x2e";  // dim 14
constexpr char kIn2[] = "2x0e + 1x1o + 2x1e";  // dim 11
constexpr char kOut[] = "2x0e + 3x1o + 2x1e + 1x2e + 1x2o + 1x3o";
constexpr int64_t kBatch = 3;

// Bytes of `values` in `dtype` (the codec tp.v1 uses too).
std::string Bytes(const std::vector<double>& values, tp::v1::DType dtype) {
  std::vector<float> floats = ToFloats(values);
  std::string out;
  wire::FloatsToBytes(floats.data(), floats.size(), dtype, &out);
  return out;
}

std::vector<double> FromBytes(const std::string& bytes, tp::v1::DType dtype) {
  auto floats = wire::BytesToFloats(dtype, bytes, "test");
  EXPECT_TRUE(floats.ok()) << floats.status();
  return floats.ok() ? ToDoubles(*floats) : std::vector<double>{};
}

class KserveTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }

  void Start(server::TransportConfig transport) {
    server_ = TestServer::Start({}, transport);
    ASSERT_NE(server_, nullptr);
    client_ = server_->Connect();
    ASSERT_NE(client_, nullptr);
    auto info = client_->CreateModel("small", Spec(kIn1, kIn2, kOut), nullptr, /*seed=*/7);
    ASSERT_TRUE(info.ok()) << info.status();
    info_ = *info;
    stub_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
    rng_ = FreshRng();
    x1_ = RandomNormal(kBatch * info_.dim_in1(), rng_);
    x2_ = RandomNormal(kBatch * info_.dim_in2(), rng_);
    grad_out_ = RandomNormal(kBatch * info_.dim_out(), rng_);
  }

  std::unique_ptr<grpc::ClientContext> Context(const std::string& token = "") {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    return context;
  }

  // An input in raw bytes (raw_input_contents) or in typed contents (FP32/FP64 only).
  void AddInput(ModelInferRequest* request, const std::string& name, int64_t dim, const std::vector<double>& values,
                const std::string& datatype, bool raw) {
    auto* input = request->add_inputs();
    input->set_name(name);
    input->set_datatype(datatype);
    input->add_shape(kBatch);
    input->add_shape(dim);
    const tp::v1::DType dtype = datatype == "FP64"   ? tp::v1::DTYPE_FLOAT64
                                : datatype == "FP16" ? tp::v1::DTYPE_FLOAT16
                                : datatype == "BF16" ? tp::v1::DTYPE_BFLOAT16
                                                     : tp::v1::DTYPE_FLOAT32;
    if (raw) {
      request->add_raw_input_contents(Bytes(values, dtype));
    } else if (datatype == "FP64") {
      for (double v : values) input->mutable_contents()->add_fp64_contents(v);
    } else {
      for (double v : values) input->mutable_contents()->add_fp32_contents(static_cast<float>(v));
    }
  }

  ModelInferRequest Infer(const std::string& datatype = "FP32", bool raw = true) {
    ModelInferRequest request;
    request.set_model_name("small");
    request.set_id("req-42");
    AddInput(&request, "x1", info_.dim_in1(), x1_, datatype, raw);
    AddInput(&request, "x2", info_.dim_in2(), x2_, datatype, raw);
    return request;
  }

  grpc::Status Call(const ModelInferRequest& request, ModelInferResponse* response, const std::string& token = "") {
    return stub_->ModelInfer(Context(token).get(), request, response);
  }

  // tp.v1 Forward on the same server: the reference for ModelInfer.
  std::vector<double> TpForward() {
    tp::v1::ForwardRequest request;
    request.set_model("small");
    *request.mutable_x1() = F32({kBatch, info_.dim_in1()}, x1_);
    *request.mutable_x2() = F32({kBatch, info_.dim_in2()}, x2_);
    auto response = client_->Forward(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? ToDoubles(response->out()) : std::vector<double>{};
  }

  // The values of output `name` in whichever encoding the response used.
  static std::vector<double> Output(const ModelInferResponse& response, const std::string& name) {
    for (int i = 0; i < response.outputs_size(); ++i) {
      const auto& output = response.outputs(i);
      if (output.name() != name) continue;
      if (response.raw_output_contents_size() > 0) {
        const tp::v1::DType dtype = output.datatype() == "FP64"   ? tp::v1::DTYPE_FLOAT64
                                    : output.datatype() == "FP16" ? tp::v1::DTYPE_FLOAT16
                                    : output.datatype() == "BF16" ? tp::v1::DTYPE_BFLOAT16
                                                                  : tp::v1::DTYPE_FLOAT32;
        return FromBytes(response.raw_output_contents(i), dtype);
      }
      if (output.datatype() == "FP64") return {output.contents().fp64_contents().begin(), output.contents().fp64_contents().end()};
      return {output.contents().fp32_contents().begin(), output.contents().fp32_contents().end()};
    }
    ADD_FAILURE() << "no output " << name;
    return {};
  }

  std::unique_ptr<TestServer> server_;
  std::unique_ptr<client::TpClient> client_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
  tp::v1::ModelInfo info_;
  std::mt19937_64 rng_;
  std::vector<double> x1_, x2_, grad_out_;
};

// ---- inference ---------------------------------------------------------------------------------

TEST_F(KserveTest, ModelInfer_RawFp32_EqualsTpV1ForwardAndEchoesTheId) {
  ModelInferResponse response;
  ASSERT_TRUE(Call(Infer("FP32", /*raw=*/true), &response).ok());
  EXPECT_EQ(response.id(), "req-42");
  EXPECT_EQ(response.model_name(), "small");
  EXPECT_EQ(response.model_version(), std::to_string(info_.version()));
  ASSERT_EQ(response.outputs_size(), 1);
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "out");
  EXPECT_EQ(response.outputs(0).datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(response.outputs(0).shape().begin(), response.outputs(0).shape().end()),
            (std::vector<int64_t>{kBatch, info_.dim_out()}));
  EXPECT_FALSE(response.outputs(0).has_contents());
  EXPECT_LT(MaxRelativeError(Output(response, "out"), TpForward()), 1e-6);
  EXPECT_GE(response.parameters().at("executed_batch").int64_param(), kBatch);
  EXPECT_EQ(response.parameters().at("device").string_param(), "cpu");
}

TEST_F(KserveTest, ModelInfer_TypedContents_AnswerInTypedContentsOfX1sDatatype) {
  for (const char* datatype : {"FP32", "FP64"}) {
    SCOPED_TRACE(datatype);
    ModelInferResponse response;
    ASSERT_TRUE(Call(Infer(datatype, /*raw=*/false), &response).ok());
    EXPECT_EQ(response.raw_output_contents_size(), 0);
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).datatype(), datatype);
    const auto& contents = response.outputs(0).contents();
    EXPECT_EQ(std::string(datatype) == "FP64" ? contents.fp64_contents_size() : contents.fp32_contents_size(),
              kBatch * info_.dim_out());
    EXPECT_LT(MaxRelativeError(Output(response, "out"), TpForward()), 1e-6);
  }
}

TEST_F(KserveTest, ModelInfer_RawHalfAndBfloat16AndDouble_AnswerInTheirDatatype) {
  for (const char* datatype : {"FP16", "BF16", "FP64"}) {
    SCOPED_TRACE(datatype);
    // Inputs rounded to the datatype first, so tp.v1 and ModelInfer see the same values.
    const tp::v1::DType dtype = std::string(datatype) == "FP16"   ? tp::v1::DTYPE_FLOAT16
                                : std::string(datatype) == "BF16" ? tp::v1::DTYPE_BFLOAT16
                                                                  : tp::v1::DTYPE_FLOAT64;
    x1_ = FromBytes(Bytes(x1_, dtype), dtype);
    x2_ = FromBytes(Bytes(x2_, dtype), dtype);
    ModelInferResponse response;
    ASSERT_TRUE(Call(Infer(datatype, /*raw=*/true), &response).ok());
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).datatype(), datatype);
    EXPECT_EQ(response.raw_output_contents(0).size(),
              static_cast<size_t>(kBatch * info_.dim_out()) * wire::DTypeSize(dtype));
    const double tolerance = dtype == tp::v1::DTYPE_FLOAT64 ? 1e-6 : dtype == tp::v1::DTYPE_FLOAT16 ? 2e-3 : 1e-2;
    EXPECT_LT(MaxRelativeError(Output(response, "out"), TpForward()), tolerance);
  }
}

TEST_F(KserveTest, ModelInfer_GradOut_GivesTpV1BackwardsGradientsAndOnlyTheRequestedOutputs) {
  tp::v1::BackwardRequest backward;
  backward.set_model("small");
  *backward.mutable_x1() = F32({kBatch, info_.dim_in1()}, x1_);
  *backward.mutable_x2() = F32({kBatch, info_.dim_in2()}, x2_);
  *backward.mutable_grad_out() = F32({kBatch, info_.dim_out()}, grad_out_);
  backward.set_want_grad_x1(true);
  backward.set_want_grad_x2(true);
  backward.set_weight_grad(tp::v1::WEIGHT_GRAD_RETURN);
  auto want = client_->Backward(backward);
  ASSERT_TRUE(want.ok()) << want.status();

  ModelInferRequest request = Infer();
  AddInput(&request, "grad_out", info_.dim_out(), grad_out_, "FP32", true);
  ModelInferResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  ASSERT_EQ(response.outputs_size(), 2);  // default: grad_x1, grad_x2 (no out with grad_out, no grad_weight)
  EXPECT_EQ(response.outputs(0).name(), "grad_x1");
  EXPECT_EQ(response.outputs(1).name(), "grad_x2");
  EXPECT_LT(MaxRelativeError(Output(response, "grad_x1"), ToDoubles(want->grad_x1())), 1e-6);
  EXPECT_LT(MaxRelativeError(Output(response, "grad_x2"), ToDoubles(want->grad_x2())), 1e-6);

  request.add_outputs()->set_name("grad_weight");
  request.add_outputs()->set_name("grad_x2");
  response.Clear();
  ASSERT_TRUE(Call(request, &response).ok());
  ASSERT_EQ(response.outputs_size(), 2);
  EXPECT_EQ(response.outputs(0).name(), "grad_weight");
  EXPECT_EQ(response.outputs(0).shape(0), info_.weight_numel());
  EXPECT_EQ(response.outputs(1).name(), "grad_x2");
  EXPECT_LT(MaxRelativeError(Output(response, "grad_weight"), ToDoubles(want->grad_weight())), 1e-5);
}

TEST_F(KserveTest, ModelInfer_LossParameter_ReturnsOutAndAccumulatesTheWeightGradient) {
  ModelInferRequest request = Infer("FP32", /*raw=*/false);
  (*request.mutable_parameters())["loss"].set_string_param("sum_tanh");
  (*request.mutable_parameters())["weight_grad"].set_string_param("accumulate");
  ModelInferResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  ASSERT_EQ(response.outputs_size(), 3);  // out, grad_x1, grad_x2
  EXPECT_EQ(response.outputs(0).name(), "out");
  EXPECT_LT(MaxRelativeError(Output(response, "out"), TpForward()), 1e-6);

  tp::v1::BackwardRequest backward;
  backward.set_model("small");
  *backward.mutable_x1() = F32({kBatch, info_.dim_in1()}, x1_);
  *backward.mutable_x2() = F32({kBatch, info_.dim_in2()}, x2_);
  backward.set_loss(tp::v1::LOSS_SUM_TANH);
  backward.set_want_grad_x1(true);
  backward.set_weight_grad(tp::v1::WEIGHT_GRAD_RETURN);
  auto want = client_->Backward(backward);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_LT(MaxRelativeError(Output(response, "grad_x1"), ToDoubles(want->grad_x1())), 1e-6);
  auto accumulated = client_->GetGradient("small");
  ASSERT_TRUE(accumulated.ok()) << accumulated.status();
  EXPECT_LT(MaxRelativeError(ToDoubles(*accumulated), ToDoubles(want->grad_weight())), 1e-5);
}

// Every bad request answers INVALID_ARGUMENT (or NOT_FOUND) with a message naming what was expected.
TEST_F(KserveTest, ModelInfer_BadRequests_AnswerTheProtocolsCodesNamingWhatWasExpected) {
  struct Case {
    const char* what;
    std::function<void(ModelInferRequest*)> damage;
    grpc::StatusCode code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"unknown input", [](auto* r) { r->mutable_inputs(1)->set_name("y"); }, grpc::INVALID_ARGUMENT,
       "expected x1, x2 or grad_out"},
      {"missing x2", [](auto* r) { r->mutable_inputs()->RemoveLast(); r->mutable_raw_input_contents()->RemoveLast(); },
       grpc::INVALID_ARGUMENT, "'x2' is missing"},
      {"integer datatype", [](auto* r) { r->mutable_inputs(0)->set_datatype("INT32"); }, grpc::INVALID_ARGUMENT,
       "expected FP32, FP64, FP16 or BF16"},
      {"short raw bytes", [](auto* r) { r->mutable_raw_input_contents(0)->resize(8); }, grpc::INVALID_ARGUMENT,
       "x1"},
      {"raw and typed mixed", [](auto* r) { r->mutable_inputs(0)->mutable_contents()->add_fp32_contents(1); },
       grpc::INVALID_ARGUMENT, "one encoding"},
      {"raw count", [](auto* r) { r->add_raw_input_contents("x"); }, grpc::INVALID_ARGUMENT, "one per input"},
      {"wrong dim", [](auto* r) {
         r->mutable_inputs(0)->set_shape(1, 13);
         r->mutable_raw_input_contents(0)->resize(kBatch * 13 * 4);
       }, grpc::INVALID_ARGUMENT, "x1: expected shape [3, 14]"},
      {"gradient output on a forward", [](auto* r) { r->add_outputs()->set_name("grad_x1"); },
       grpc::INVALID_ARGUMENT, "needs an input grad_out or the parameter loss"},
      {"unknown output", [](auto* r) { r->add_outputs()->set_name("logits"); }, grpc::INVALID_ARGUMENT,
       "this call produces out"},
      {"bad loss", [](auto* r) { (*r->mutable_parameters())["loss"].set_string_param("mse"); },
       grpc::INVALID_ARGUMENT, "expected sum or sum_tanh"},
      {"loss as int", [](auto* r) { (*r->mutable_parameters())["loss"].set_int64_param(1); },
       grpc::INVALID_ARGUMENT, "expected a string_param"},
      {"unknown model", [](auto* r) { r->set_model_name("nope"); }, grpc::NOT_FOUND, "model 'nope' not found"},
      {"other version", [](auto* r) { r->set_model_version("999"); }, grpc::NOT_FOUND, "version 999"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ModelInferRequest request = Infer();
    c.damage(&request);
    ModelInferResponse response;
    grpc::Status status = Call(request, &response);
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), c.message)) << status.error_message();
  }
  ModelInferResponse response;  // and the server serves on
  EXPECT_TRUE(Call(Infer(), &response).ok());
}

TEST_F(KserveTest, ModelInfer_Fp16InTypedContents_PointsToRawInputContents) {
  ModelInferRequest request = Infer("FP32", /*raw=*/false);
  request.mutable_inputs(0)->set_datatype("FP16");
  ModelInferResponse response;
  grpc::Status status = Call(request, &response);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "raw_input_contents")) << status.error_message();
}

TEST_F(KserveTest, ModelInfer_CountsInTheMetricsAsModelInferPerDevice) {
  ModelInferResponse response;
  ASSERT_TRUE(Call(Infer(), &response).ok());
  ModelInferRequest bad = Infer();
  bad.set_model_name("nope");
  EXPECT_FALSE(Call(bad, &response).ok());
  const std::string text = server_->metrics().Serialize();
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"ModelInfer\"", "code=\"OK\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"method=\"ModelInfer\"", "code=\"NOT_FOUND\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_request_latency_seconds_count",
                        {"method=\"ModelInfer\"", "model=\"small\"", "device=\"cpu\""}),
            1);
}

TEST_F(KserveTest, ModelStreamInfer_AnswersInOrderAndABadRequestAlone) {
  auto context = Context();
  auto stream = stub_->ModelStreamInfer(context.get());
  ModelInferRequest good = Infer(), bad = Infer();
  bad.set_id("bad");
  bad.mutable_inputs(0)->set_datatype("INT8");
  ASSERT_TRUE(stream->Write(good));
  ASSERT_TRUE(stream->Write(bad));
  ASSERT_TRUE(stream->Write(good));
  stream->WritesDone();
  inference::ModelStreamInferResponse answer;
  std::vector<std::string> ids, errors;
  while (stream->Read(&answer)) {
    ids.push_back(answer.infer_response().id());
    errors.push_back(answer.error_message());
    if (answer.error_message().empty()) {
      EXPECT_LT(MaxRelativeError(Output(answer.infer_response(), "out"), TpForward()), 1e-6);
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ids, (std::vector<std::string>{"req-42", "bad", "req-42"}));
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_TRUE(errors[0].empty() && errors[2].empty());
  EXPECT_TRUE(absl::StrContains(errors[1], "INT8")) << errors[1];
}

// ---- health, metadata, config, repository ----------------------------------------------------------

TEST_F(KserveTest, HealthAndMetadata_DescribeTheServerAndTheModel) {
  inference::ServerLiveResponse live;
  ASSERT_TRUE(stub_->ServerLive(Context().get(), {}, &live).ok());
  EXPECT_TRUE(live.live());
  inference::ServerReadyResponse ready;
  ASSERT_TRUE(stub_->ServerReady(Context().get(), {}, &ready).ok());
  EXPECT_TRUE(ready.ready());

  // grpc.health.v1 knows the service by name, as it knows tp.v1's.
  auto health = client_->Health("inference.GRPCInferenceService");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);

  inference::ModelReadyRequest model_ready;
  inference::ModelReadyResponse model_ready_response;
  model_ready.set_name("small");
  ASSERT_TRUE(stub_->ModelReady(Context().get(), model_ready, &model_ready_response).ok());
  EXPECT_TRUE(model_ready_response.ready());
  model_ready.set_name("nope");
  ASSERT_TRUE(stub_->ModelReady(Context().get(), model_ready, &model_ready_response).ok());
  EXPECT_FALSE(model_ready_response.ready());

  inference::ServerMetadataResponse server_metadata;
  ASSERT_TRUE(stub_->ServerMetadata(Context().get(), {}, &server_metadata).ok());
  EXPECT_EQ(server_metadata.name(), "tpserve");

  inference::ModelMetadataRequest metadata_request;
  metadata_request.set_name("small");
  inference::ModelMetadataResponse metadata;
  ASSERT_TRUE(stub_->ModelMetadata(Context().get(), metadata_request, &metadata).ok());
  EXPECT_EQ(metadata.name(), "small");
  ASSERT_EQ(metadata.versions_size(), 1);
  EXPECT_EQ(metadata.versions(0), std::to_string(info_.version()));
  ASSERT_EQ(metadata.inputs_size(), 2);
  ASSERT_EQ(metadata.outputs_size(), 1);
  auto shape = [](const auto& t) { return std::vector<int64_t>(t.shape().begin(), t.shape().end()); };
  EXPECT_EQ(metadata.inputs(0).name(), "x1");
  EXPECT_EQ(shape(metadata.inputs(0)), (std::vector<int64_t>{-1, info_.dim_in1()}));
  EXPECT_EQ(metadata.inputs(1).name(), "x2");
  EXPECT_EQ(shape(metadata.inputs(1)), (std::vector<int64_t>{-1, info_.dim_in2()}));
  EXPECT_EQ(metadata.outputs(0).name(), "out");
  EXPECT_EQ(shape(metadata.outputs(0)), (std::vector<int64_t>{-1, info_.dim_out()}));
  EXPECT_EQ(metadata.inputs(0).datatype(), "FP32");
  metadata_request.set_name("nope");
  EXPECT_EQ(stub_->ModelMetadata(Context().get(), metadata_request, &metadata).error_code(), grpc::NOT_FOUND);
}

TEST_F(KserveTest, ModelConfigAndRepository_MapOntoTpserveModels) {
  inference::ModelConfigRequest config_request;
  config_request.set_name("small");
  inference::ModelConfigResponse config;
  ASSERT_TRUE(stub_->ModelConfig(Context().get(), config_request, &config).ok());
  EXPECT_EQ(config.config().name(), "small");
  EXPECT_EQ(config.config().max_batch_size(), server_->core().config().max_batch_size);
  ASSERT_EQ(config.config().input_size(), 3);
  EXPECT_EQ(config.config().input(2).name(), "grad_out");
  EXPECT_TRUE(config.config().input(2).optional());
  EXPECT_EQ(config.config().input(0).dims(0), info_.dim_in1());
  EXPECT_EQ(config.config().input(0).data_type(), inference::TYPE_FP32);
  EXPECT_EQ(config.config().parameters().at("irreps_in1").string_value(), info_.spec().irreps_in1());

  inference::RepositoryIndexResponse index;
  ASSERT_TRUE(stub_->RepositoryIndex(Context().get(), {}, &index).ok());
  ASSERT_EQ(index.models_size(), 1);
  EXPECT_EQ(index.models(0).name(), "small");
  EXPECT_EQ(index.models(0).state(), "READY");

  inference::RepositoryModelLoadRequest load;
  inference::RepositoryModelLoadResponse loaded;
  load.set_model_name("small");
  EXPECT_TRUE(stub_->RepositoryModelLoad(Context().get(), load, &loaded).ok());
  load.set_model_name("nope");
  EXPECT_EQ(stub_->RepositoryModelLoad(Context().get(), load, &loaded).error_code(), grpc::NOT_FOUND);

  inference::RepositoryModelUnloadRequest unload;
  inference::RepositoryModelUnloadResponse unloaded;
  unload.set_model_name("small");
  grpc::Status status = stub_->RepositoryModelUnload(Context().get(), unload, &unloaded);
  EXPECT_EQ(status.error_code(), grpc::UNIMPLEMENTED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "DeleteModel")) << status.error_message();
  EXPECT_TRUE(client_->GetModel("small").ok());  // still there
}

TEST_F(KserveTest, ServerReady_TurnsFalseAtShutdown) {
  server_->grpc().Shutdown(absl::Seconds(5));
  inference::ServerReadyResponse ready;
  grpc::Status status = stub_->ServerReady(Context().get(), {}, &ready);
  // Either refused (the server no longer takes calls) or answered "not ready".
  EXPECT_TRUE(!status.ok() || !ready.ready());
}

// ---- auth ----------------------------------------------------------------------------------------

TEST_F(KserveTest, Auth_ModelInferNeedsTheTokenAndTheLivenessProbesDoNot) {
  server::TransportConfig transport;
  transport.auth_token = "s3cret";
  Start(transport);
  ModelInferResponse response;
  grpc::Status status = Call(Infer(), &response);
  EXPECT_EQ(status.error_code(), grpc::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "authorization: Bearer")) << status.error_message();
  EXPECT_EQ(Call(Infer(), &response, "wrong").error_code(), grpc::UNAUTHENTICATED);
  EXPECT_TRUE(Call(Infer(), &response, "s3cret").ok());
  inference::ModelMetadataRequest metadata_request;
  metadata_request.set_name("small");
  inference::ModelMetadataResponse metadata;
  EXPECT_EQ(stub_->ModelMetadata(Context().get(), metadata_request, &metadata).error_code(), grpc::UNAUTHENTICATED);
  inference::ServerLiveResponse live;
  EXPECT_TRUE(stub_->ServerLive(Context().get(), {}, &live).ok());
  inference::ServerReadyResponse ready;
  EXPECT_TRUE(stub_->ServerReady(Context().get(), {}, &ready).ok());
}

// ---- ModelInfer's bytes (raw inputs read from gRPC's buffer into page-locked memory) --------------

// SplitOutField against protobuf: for any split of the bytes into pieces, the rest parses as the
// message without raw_input_contents and the located bytes are its entries.
TEST(KserveWire, SplitOutField_AgreesWithProtobufForAnySplit) {
  ModelInferRequest request;
  request.set_model_name("m");
  request.set_id("id-1");
  (*request.mutable_parameters())["loss"].set_string_param("sum");
  for (const char* name : {"x1", "x2"}) {
    auto* input = request.add_inputs();
    input->set_name(name);
    input->set_datatype("FP32");
    input->add_shape(2);
    input->add_shape(3);
  }
  request.add_raw_input_contents(std::string(24, 'a'));
  request.add_raw_input_contents(std::string(24, 'b'));
  const std::string bytes = request.SerializeAsString();
  ModelInferRequest without_raw = request;
  without_raw.clear_raw_input_contents();
  for (size_t cut1 = 0; cut1 <= bytes.size(); cut1 += 7) {
    for (size_t cut2 = cut1; cut2 <= bytes.size(); cut2 += 11) {
      const absl::string_view all(bytes);
      const absl::string_view pieces[3] = {all.substr(0, cut1), all.substr(cut1, cut2 - cut1), all.substr(cut2)};
      std::string rest;
      std::vector<wire::WireBytes> located;
      ASSERT_TRUE(wire::SplitOutField(pieces, 7, &rest, &located));
      ModelInferRequest parsed;
      ASSERT_TRUE(parsed.ParseFromString(rest));
      EXPECT_EQ(parsed.SerializeAsString(), without_raw.SerializeAsString());
      ASSERT_EQ(located.size(), 2u);
      for (int i = 0; i < 2; ++i) {
        std::string got(located[i].size, '\0');
        wire::CopyWireBytes(pieces, located[i], got.data());
        EXPECT_EQ(got, request.raw_input_contents(i));
      }
    }
  }
  // Truncated messages and a raw_input_contents with another wire type are refused.
  std::string rest;
  std::vector<wire::WireBytes> located;
  for (size_t cut : {bytes.size() - 1, bytes.size() - 30, size_t{1}}) {
    const absl::string_view piece(bytes.data(), cut);
    EXPECT_FALSE(wire::SplitOutField({&piece, 1}, 7, &rest, &located)) << cut;
  }
  const std::string varint_seven("\x38\x01", 2);  // field 7 as a varint
  const absl::string_view piece(varint_seven);
  EXPECT_FALSE(wire::SplitOutField({&piece, 1}, 7, &rest, &located));
}

TEST_F(KserveTest, ModelInfer_RawInputsInAnyOrderAndFieldOrder_GiveTheSameAnswer) {
  const std::vector<double> want = TpForward();
  // x2 before x1.
  ModelInferRequest reversed;
  reversed.set_model_name("small");
  AddInput(&reversed, "x2", info_.dim_in2(), x2_, "FP32", true);
  AddInput(&reversed, "x1", info_.dim_in1(), x1_, "FP32", true);
  ModelInferResponse response;
  ASSERT_TRUE(Call(reversed, &response).ok());
  EXPECT_LT(MaxRelativeError(Output(response, "out"), want), 1e-6);

  // raw_input_contents before inputs on the wire (protobuf merges concatenated messages).
  ModelInferRequest contents_only, header_only = Infer();
  *contents_only.mutable_raw_input_contents() = header_only.raw_input_contents();
  header_only.clear_raw_input_contents();
  const std::string bytes = contents_only.SerializeAsString() + header_only.SerializeAsString();
  auto channel = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::CompletionQueue cq;
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), reply;
  auto call = generic.PrepareUnaryCall(&context, "/inference.GRPCInferenceService/ModelInfer", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&reply, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string reply_bytes;
  for (const auto& s : slices) reply_bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  ModelInferResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(reply_bytes));
  EXPECT_EQ(parsed.id(), "req-42");
  EXPECT_LT(MaxRelativeError(Output(parsed, "out"), want), 1e-6);

  // Bytes that are no ModelInferRequest: INVALID_ARGUMENT, and the server serves on.
  grpc::ClientContext garbage_context;
  garbage_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Slice garbage(std::string("\x3a\xff\xff\x01xyz", 7));
  grpc::ByteBuffer garbage_request(&garbage, 1);
  auto garbage_call = generic.PrepareUnaryCall(&garbage_context, "/inference.GRPCInferenceService/ModelInfer",
                                               garbage_request, &cq);
  garbage_call->StartCall();
  garbage_call->Finish(&reply, &status, reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "not an inference.ModelInferRequest")) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  response.Clear();
  EXPECT_TRUE(Call(Infer(), &response).ok());
}

// ModelInfer and tp.v1 Forward share the core's queue: concurrent calls merge into one launch.
TEST(KserveBatching, ModelInferAndTpV1ForwardMergeIntoOneLaunch) {
  server::CoreConfig core;
  core.max_queue_delay_us = 10000000;  // the launch waits for a full batch: both calls
  core.max_batch_size = 2 * kBatch;
  auto server = TestServer::Start(core);
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  auto info = client->CreateModel("m", Spec(kIn1, kIn2, kOut), nullptr, 5);
  ASSERT_TRUE(info.ok()) << info.status();
  std::mt19937_64 rng = FreshRng();
  std::vector<double> x1 = RandomNormal(kBatch * info->dim_in1(), rng), x2 = RandomNormal(kBatch * info->dim_in2(), rng);
  std::vector<double> x1_twice = x1;
  for (double& v : x1_twice) v *= 2;  // the product is linear in x1: ModelInfer's out must be 2x Forward's
  ModelInferRequest request;
  request.set_model_name("m");
  for (auto [name, values, dim] : {std::make_tuple("x1", &x1_twice, info->dim_in1()),
                                   std::make_tuple("x2", &x2, info->dim_in2())}) {
    auto* input = request.add_inputs();
    input->set_name(name);
    input->set_datatype("FP32");
    input->add_shape(kBatch);
    input->add_shape(dim);
    request.add_raw_input_contents(Bytes(*values, tp::v1::DTYPE_FLOAT32));
  }
  ModelInferResponse infer_response;
  grpc::Status infer_status;
  std::thread infer_thread([&] {
    auto stub = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    infer_status = stub->ModelInfer(&context, request, &infer_response);
  });
  tp::v1::ForwardRequest forward;
  forward.set_model("m");
  *forward.mutable_x1() = F32({kBatch, info->dim_in1()}, x1);
  *forward.mutable_x2() = F32({kBatch, info->dim_in2()}, x2);
  auto forward_response = client->Forward(forward);
  infer_thread.join();
  ASSERT_TRUE(forward_response.ok()) << forward_response.status();
  ASSERT_TRUE(infer_status.ok()) << infer_status.error_message();
  EXPECT_EQ(forward_response->executed_batch(), 2 * kBatch);
  EXPECT_EQ(infer_response.parameters().at("executed_batch").int64_param(), 2 * kBatch);
  std::vector<double> twice = ToDoubles(forward_response->out());
  for (double& v : twice) v *= 2;
  EXPECT_LT(MaxRelativeError(FromBytes(infer_response.raw_output_contents(0), tp::v1::DTYPE_FLOAT32), twice), 1e-5);
  EXPECT_EQ(MetricValue(server->metrics().Serialize(), "tp_batch_size_count", {"model=\"m\""}), 1);
}

// TLS is the port's: the protocol's clients use the same secure channel as tp.v1's.
TEST(KserveTls, ModelInferOverTheServersTlsPort) {
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
  auto secure = client::TpClient::Connect(options);
  ASSERT_TRUE(secure.ok()) << secure.status();
  ASSERT_TRUE((*secure)->CreateModel("m", Spec("2x0e", "1x0e", "2x0e"), nullptr, 3).ok());
  auto stub = inference::GRPCInferenceService::NewStub((*secure)->channel());
  ModelInferRequest request;
  request.set_model_name("m");
  for (auto [name, dim] : {std::pair<const char*, int>{"x1", 2}, {"x2", 1}}) {
    auto* input = request.add_inputs();
    input->set_name(name);
    input->set_datatype("FP32");
    input->add_shape(1);
    input->add_shape(dim);
    for (int i = 0; i < dim; ++i) input->mutable_contents()->add_fp32_contents(0.5f + i);
  }
  ModelInferResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Status status = stub->ModelInfer(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.outputs(0).contents().fp32_contents_size(), 2);

  auto plain = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(options.target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext plain_context;
  plain_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  EXPECT_FALSE(plain->ModelInfer(&plain_context, request, &response).ok()) << "a plaintext client got through";
}

}  // namespace
}  // namespace tpserve::testing
