#include "client/lib/tp_client.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "client/lib/borrowed_wire.h"
#include "client/lib/channel_target.h"
#include "grpc/impl/codegen/grpc_types.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/generic/generic_stub.h"
#include "wire/channel_tuning.h"
#include "wire/tensor_bytes.h"

namespace tpserve::client {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

namespace {

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const ClientOptions& options,
                                                                      grpc::ChannelArguments& args) {
  if (!options.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    std::ifstream in(options.tls_ca_file);
    if (!in) return absl::NotFoundError(absl::StrCat("TLS CA file ", options.tls_ca_file, ": cannot read"));
    std::stringstream text;
    text << in.rdbuf();
    ssl.pem_root_certs = text.str();
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("a client certificate needs both its certificate and its key file");
  }
  for (auto [path, field] : {std::pair{&options.tls_cert_file, &ssl.pem_cert_chain},
                             std::pair{&options.tls_key_file, &ssl.pem_private_key}}) {
    if (path->empty()) continue;
    std::ifstream in(*path);
    if (!in) return absl::NotFoundError(absl::StrCat("TLS client certificate file ", *path, ": cannot read"));
    std::stringstream text;
    text << in.rdbuf();
    *field = text.str();
  }
  if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  return grpc::SslCredentials(ssl);
}

grpc::ChannelArguments BaseArguments(const ClientOptions& options) {
  grpc::ChannelArguments args;
  const int max_bytes = static_cast<int>(std::min<int64_t>(options.max_message_bytes, INT32_MAX));
  args.SetMaxReceiveMessageSize(max_bytes);
  args.SetMaxSendMessageSize(max_bytes);
  for (const auto& [name, value] : transport::kTensorChannelArgs) args.SetInt(name, value);
  return args;
}

bool WantsHealthChecking(const ClientOptions& options) {
  switch (options.health_checking) {
    case ClientOptions::HealthChecking::kOn: return true;
    case ClientOptions::HealthChecking::kOff: return false;
    case ClientOptions::HealthChecking::kAuto: break;
  }
  return ListedAddresses(options.target).size() != 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TpClient>> TpClient::Connect(const ClientOptions& options) {
  absl::StatusOr<std::string> target = ChannelTarget(options.target);
  if (!target.ok()) return target.status();
  std::unique_ptr<TpClient> client(new TpClient(options));
  client->channel_target_ = *target;
  grpc::ChannelArguments args = BaseArguments(options);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = Credentials(options, args);
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments health_args = args;
  ChannelPolicy policy = options.policy;
  if (!WantsHealthChecking(options)) policy.health_service.clear();
  client->service_config_json_ = ServiceConfigJson(policy);
  args.SetServiceConfigJSON(client->service_config_json_);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 1);
  // A request is retried from a copy gRPC keeps until the call commits; a request larger than this
  // buffer commits at once and is never retried, so it must hold the largest message.
  args.SetInt(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE,
              static_cast<int>(std::min<int64_t>(options.max_message_bytes, INT32_MAX)));
  client->channel_ = grpc::CreateCustomChannel(*target, *credentials, args);
  ChannelPolicy plain;
  plain.load_balancing = "pick_first";
  plain.health_service.clear();
  plain.max_attempts = 1;
  health_args.SetServiceConfigJSON(ServiceConfigJson(plain));
  client->health_channel_ = grpc::CreateCustomChannel(*target, *credentials, health_args);
  client->models_ = tp::v1::ModelService::NewStub(client->channel_);
  client->compute_ = tp::v1::TensorProductService::NewStub(client->channel_);
  client->health_ = grpc::health::v1::Health::NewStub(client->health_channel_);
  // The paths from the generated code (its service name, its descriptor's method names).
  const google::protobuf::ServiceDescriptor* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      tp::v1::TensorProductService::service_full_name());
  auto path = [service](const char* method) {
    const google::protobuf::MethodDescriptor* found = service != nullptr ? service->FindMethodByName(method) : nullptr;
    return found != nullptr ? absl::StrCat("/", service->full_name(), "/", found->name()) : std::string();
  };
  client->forward_path_ = path("Forward");
  client->echo_path_ = path("Echo");
  if (client->forward_path_.empty() || client->echo_path_.empty()) {
    return absl::InternalError("tp.v1.TensorProductService's generated descriptor lacks Forward or Echo");
  }
  return client;
}

template <class Response>
absl::StatusOr<Response> TpClient::CallEncoded(const std::string& method, const grpc::ByteBuffer& request) {
  auto context = NewContext();
  // A blocking call as a generated stub makes it: started, then waited for on a completion queue
  // of its own on this thread; gRPC parses the response into Response.
  grpc::TemplatedGenericStub<grpc::ByteBuffer, Response> stub(channel_);
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> call =
      stub.PrepareUnaryCall(context.get(), method, request, &cq);
  if (call == nullptr) return absl::InternalError(absl::StrCat("gRPC could not start a call of ", method));
  call->StartCall();
  Response response;
  grpc::Status status;
  call->Finish(&response, &status, /*tag=*/&response);
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);  // the call's one event: finished
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (absl::Status s = FromGrpc(status); !s.ok()) return s;
  return response;
}

std::unique_ptr<grpc::ClientContext> TpClient::NewContext(double timeout_seconds) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options_.auth_token.empty()) context->AddMetadata("authorization", "Bearer " + options_.auth_token);
  if (timeout_seconds > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::microseconds(static_cast<int64_t>(timeout_seconds * 1e6)));
  }
  return context;
}

absl::StatusOr<tp::v1::ModelInfo> TpClient::CreateModel(const std::string& name, const tp::v1::ModelSpec& spec,
                                                        const std::vector<float>* weights, uint64_t seed) {
  auto context = NewContext();
  tp::v1::ModelInfo info;
  std::unique_ptr<grpc::ClientWriter<tp::v1::CreateModelRequest>> writer = models_->CreateModel(context.get(), &info);
  tp::v1::CreateModelRequest message;
  message.mutable_header()->set_name(name);
  *message.mutable_header()->mutable_spec() = spec;
  if (weights != nullptr) {
    message.mutable_header()->set_upload(true);
  } else {
    message.mutable_header()->set_seed(seed);
  }
  bool ok = writer->Write(message);
  if (ok && weights != nullptr) {
    wire::ForEachChunk(weights->data(), static_cast<int64_t>(weights->size()), options_.chunk_elements,
                       [&](const tp::v1::WeightsChunk& chunk) {
                         tp::v1::CreateModelRequest part;
                         *part.mutable_chunk() = chunk;
                         return ok = writer->Write(part);
                       });
  }
  writer->WritesDone();
  absl::Status status = FromGrpc(writer->Finish());
  if (!status.ok()) return status;
  return info;
}

absl::StatusOr<tp::v1::ModelInfo> TpClient::GetModel(const std::string& name) {
  auto context = NewContext();
  tp::v1::GetModelRequest request;
  request.set_name(name);
  tp::v1::ModelInfo info;
  absl::Status status = FromGrpc(models_->GetModel(context.get(), request, &info));
  if (!status.ok()) return status;
  return info;
}

absl::StatusOr<std::vector<tp::v1::ModelInfo>> TpClient::ListModels() {
  auto context = NewContext();
  tp::v1::ListModelsResponse response;
  absl::Status status = FromGrpc(models_->ListModels(context.get(), {}, &response));
  if (!status.ok()) return status;
  return std::vector<tp::v1::ModelInfo>(response.models().begin(), response.models().end());
}

absl::Status TpClient::DeleteModel(const std::string& name) {
  auto context = NewContext();
  tp::v1::DeleteModelRequest request;
  request.set_name(name);
  tp::v1::DeleteModelResponse response;
  return FromGrpc(models_->DeleteModel(context.get(), request, &response));
}

absl::StatusOr<tp::v1::ModelInfo> TpClient::UploadWeights(const std::string& name, const std::vector<float>& weights,
                                                          uint64_t expected_version,
                                                          const std::function<void(int64_t)>& after_chunk) {
  auto context = NewContext();
  tp::v1::ModelInfo info;
  auto writer = models_->UploadWeights(context.get(), &info);
  tp::v1::UploadWeightsRequest message;
  message.set_model(name);
  message.set_expected_version(expected_version);
  int64_t sent = 0;
  wire::ForEachChunk(weights.data(), static_cast<int64_t>(weights.size()), options_.chunk_elements,
                     [&](const tp::v1::WeightsChunk& chunk) {
                       *message.mutable_chunk() = chunk;
                       if (!writer->Write(message)) return false;
                       message.Clear();
                       sent += static_cast<int64_t>(chunk.data().size() / 4);
                       if (after_chunk) after_chunk(sent);
                       return true;
                     });
  writer->WritesDone();
  absl::Status status = FromGrpc(writer->Finish());
  if (!status.ok()) return status;
  return info;
}

absl::StatusOr<std::vector<float>> TpClient::ReadChunks(grpc::ClientReader<tp::v1::WeightsChunk>& reader,
                                                        grpc::ClientContext& context, const char* what) {
  std::vector<float> values;
  tp::v1::WeightsChunk chunk;
  while (reader.Read(&chunk)) {
    if (chunk.offset() != static_cast<int64_t>(values.size())) {
      context.TryCancel();
      reader.Finish();
      return absl::DataLossError(absl::StrCat(what, ": chunk at offset ", chunk.offset(), ", expected ", values.size()));
    }
    absl::StatusOr<std::vector<float>> part = wire::BytesToFloats(chunk.dtype(), chunk.data(), what);
    if (!part.ok()) return part.status();
    values.insert(values.end(), part->begin(), part->end());
  }
  absl::Status status = FromGrpc(reader.Finish());
  if (!status.ok()) return status;
  return values;
}

absl::StatusOr<std::vector<float>> TpClient::DownloadWeights(const std::string& name, uint64_t* version) {
  auto context = NewContext();
  tp::v1::DownloadWeightsRequest request;
  request.set_model(name);
  auto reader = models_->DownloadWeights(context.get(), request);
  absl::StatusOr<std::vector<float>> weights = ReadChunks(*reader, *context, "weights");
  if (weights.ok() && version != nullptr) {
    auto it = context->GetServerInitialMetadata().find("tp-model-version");
    *version = it == context->GetServerInitialMetadata().end()
                   ? 0
                   : std::stoull(std::string(it->second.data(), it->second.size()));
  }
  return weights;
}

absl::StatusOr<tp::v1::ForwardResponse> TpClient::Forward(const tp::v1::ForwardRequest& request) {
  SliceLoans loans;  // waits, when it goes, for gRPC to release every slice of `request`
  return CallEncoded<tp::v1::ForwardResponse>(forward_path_, EncodeForwardRequest(request, loans));
}

absl::StatusOr<tp::v1::BackwardResponse> TpClient::Backward(const tp::v1::BackwardRequest& request) {
  auto context = NewContext();
  tp::v1::BackwardResponse response;
  absl::Status status = FromGrpc(compute_->Backward(context.get(), request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<tp::v1::BackwardResponse> TpClient::BackwardChunked(const tp::v1::BackwardRequest& request) {
  auto context = NewContext();
  auto reader = compute_->BackwardChunked(context.get(), request);
  tp::v1::BackwardResponse first, message;
  bool have_first = false;
  std::string grad_bytes;
  int64_t grad_elements = 0;
  while (reader->Read(&message)) {
    if (!have_first) {
      first = message;
      have_first = true;
      continue;
    }
    const tp::v1::WeightsChunk& chunk = message.grad_weight_chunk();
    if (chunk.offset() != grad_elements || chunk.dtype() != tp::v1::DTYPE_FLOAT32) {
      context->TryCancel();
      reader->Finish();
      return absl::DataLossError(absl::StrCat("grad_weight chunk at offset ", chunk.offset(), ", expected ",
                                              grad_elements, " (float32)"));
    }
    grad_bytes += chunk.data();
    grad_elements += static_cast<int64_t>(chunk.data().size() / 4);
  }
  absl::Status status = FromGrpc(reader->Finish());
  if (!status.ok()) return status;
  if (request.weight_grad() == tp::v1::WEIGHT_GRAD_RETURN) {
    tp::v1::Tensor* grad = first.mutable_grad_weight();
    grad->add_shape(grad_elements);
    grad->set_dtype(tp::v1::DTYPE_FLOAT32);
    grad->set_data(std::move(grad_bytes));
  }
  return first;
}

absl::StatusOr<tp::v1::EchoResponse> TpClient::Echo(const tp::v1::EchoRequest& request) {
  SliceLoans loans;
  return CallEncoded<tp::v1::EchoResponse>(echo_path_, EncodeEchoRequest(request, loans));
}

TpClient::Stream TpClient::OpenStream() {
  Stream stream;
  stream.context = NewContext(options_.stream_timeout_seconds);
  stream.rpc = compute_->Stream(stream.context.get());
  return stream;
}

absl::StatusOr<std::vector<float>> TpClient::GetGradient(const std::string& name) {
  auto context = NewContext();
  tp::v1::GetGradientRequest request;
  request.set_model(name);
  auto reader = models_->GetGradient(context.get(), request);
  return ReadChunks(*reader, *context, "gradient");
}

absl::Status TpClient::ZeroGradient(const std::string& name) {
  auto context = NewContext();
  tp::v1::ZeroGradientRequest request;
  request.set_model(name);
  tp::v1::ZeroGradientResponse response;
  return FromGrpc(models_->ZeroGradient(context.get(), request, &response));
}

absl::StatusOr<tp::v1::ModelInfo> TpClient::SgdStep(const std::string& name, double learning_rate,
                                                    bool zero_gradient) {
  auto context = NewContext();
  tp::v1::SgdStepRequest request;
  request.set_model(name);
  request.set_learning_rate(learning_rate);
  request.set_zero_gradient(zero_gradient);
  tp::v1::ModelInfo info;
  absl::Status status = FromGrpc(models_->SgdStep(context.get(), request, &info));
  if (!status.ok()) return status;
  return info;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> TpClient::Health(const std::string& service) {
  auto context = NewContext();
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  absl::Status status = FromGrpc(health_->Check(context.get(), request, &response));
  if (!status.ok()) return status;
  return response.status();
}

}  // namespace tpserve::client
