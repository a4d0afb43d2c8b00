#include "server/grpc/model_service.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"
#include "server/grpc/request_parsing.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::server {
namespace {

int64_t ChunkElements(const ServiceEnv& env, int64_t requested) {
  if (requested <= 0) return env.chunk_elements;
  return std::min<int64_t>(requested, env.max_chunk_elements);
}

grpc::Status StreamVector(const std::vector<float>& values, int64_t chunk_elements,
                          grpc::ServerWriter<tp::v1::WeightsChunk>* writer) {
  bool ok = wire::ForEachChunk(values.data(), static_cast<int64_t>(values.size()), chunk_elements,
                               [&](const tp::v1::WeightsChunk& chunk) { return writer->Write(chunk); });
  if (!ok) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away during the download");
  return grpc::Status::OK;
}

}  // namespace

ModelServiceImpl::ModelServiceImpl(const ServiceEnv& env) : env_(env) {
  using Self = ModelServiceImpl;
  AddMethod(ClientStreamingMethod("/tp.v1.ModelService/CreateModel", this, &Self::CreateModel));
  AddMethod(UnaryMethod("/tp.v1.ModelService/GetModel", this, &env_, &Self::GetModel));
  AddMethod(UnaryMethod("/tp.v1.ModelService/ListModels", this, &env_, &Self::ListModels));
  AddMethod(UnaryMethod("/tp.v1.ModelService/DeleteModel", this, &env_, &Self::DeleteModel));
  AddMethod(ClientStreamingMethod("/tp.v1.ModelService/UploadWeights", this, &Self::UploadWeights));
  AddMethod(ServerStreamingMethod("/tp.v1.ModelService/DownloadWeights", this, &env_, &Self::DownloadWeights));
  AddMethod(ServerStreamingMethod("/tp.v1.ModelService/GetGradient", this, &env_, &Self::GetGradient));
  AddMethod(UnaryMethod("/tp.v1.ModelService/ZeroGradient", this, &env_, &Self::ZeroGradient));
  AddMethod(UnaryMethod("/tp.v1.ModelService/SgdStep", this, &env_, &Self::SgdStep));
}

grpc::Status ModelServiceImpl::CreateModel(grpc::ServerContext* context, grpc::ServerReader<grpc::ByteBuffer>* reader,
                                           tp::v1::ModelInfo* response) {
  RpcScope scope(env_, "CreateModel", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  tp::v1::CreateModelRequest message;
  grpc::Status malformed;
  if (!ReadMessage(reader, &message, &malformed)) {
    return scope.Finish(malformed.ok() ? grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                                      "CreateModel: empty stream; expected the header first")
                                       : malformed);
  }
  if (!message.has_header()) {
    return scope.Finish(absl::InvalidArgumentError("CreateModel: the first message must be the header"));
  }
  const tp::v1::CreateModelHeader header = message.header();
  ModelSpec spec = FromProto(header.spec());
  absl::StatusOr<TensorProductPlan> plan = PlanForSpec(spec);
  if (!plan.ok()) return scope.Finish(plan.status());
  if (auto s = ValidateModelName(header.name()); !s.ok()) return scope.Finish(s);

  std::optional<std::vector<float>> weights;
  if (header.init_case() == tp::v1::CreateModelHeader::kUpload && header.upload()) {
    WeightsAssembler assembler(plan->weight_numel());
    while (ReadMessage(reader, &message, &malformed)) {
      if (!message.has_chunk()) {
        return scope.Finish(absl::InvalidArgumentError("CreateModel: only weight chunks may follow the header"));
      }
      absl::StatusOr<std::vector<float>> values =
          wire::BytesToFloats(message.chunk().dtype(), message.chunk().data(), "weights chunk");
      if (!values.ok()) return scope.Finish(values.status());
      if (auto s = assembler.Append(message.chunk().offset(), *std::move(values)); !s.ok()) return scope.Finish(s);
    }
    if (!malformed.ok()) return scope.Finish(malformed);
    absl::StatusOr<std::vector<float>> assembled = std::move(assembler).Finish();
    if (!assembled.ok()) return scope.Finish(assembled.status());
    weights = *std::move(assembled);
  } else if (ReadMessage(reader, &message, &malformed)) {
    return scope.Finish(absl::InvalidArgumentError("CreateModel: chunks sent, but the header did not set upload"));
  }
  if (!malformed.ok()) return scope.Finish(malformed);
  absl::StatusOr<ModelInfo> info = env_.core->CreateModel(header.name(), spec, std::move(weights), header.seed());
  if (!info.ok()) return scope.Finish(info.status());
  scope.set_model(info->name);
  scope.set_device("all");  // its replicas went to every device
  ToProto(*info, response);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ModelServiceImpl::GetModel(grpc::ServerContext* context, const tp::v1::GetModelRequest* request,
                                        tp::v1::ModelInfo* response) {
  RpcScope scope(env_, "GetModel", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->name());
  absl::StatusOr<ModelInfo> info = env_.core->GetModel(request->name());
  if (!info.ok()) return scope.Finish(info.status());
  ToProto(*info, response);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ModelServiceImpl::ListModels(grpc::ServerContext* context, const tp::v1::ListModelsRequest*,
                                          tp::v1::ListModelsResponse* response) {
  RpcScope scope(env_, "ListModels", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  for (const ModelInfo& info : env_.core->ListModels()) ToProto(info, response->add_models());
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ModelServiceImpl::DeleteModel(grpc::ServerContext* context, const tp::v1::DeleteModelRequest* request,
                                           tp::v1::DeleteModelResponse*) {
  RpcScope scope(env_, "DeleteModel", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  absl::Status deleted = env_.core->DeleteModel(request->name());
  if (deleted.ok()) scope.set_device("all");  // its replicas left every device
  return scope.Finish(deleted);
}

grpc::Status ModelServiceImpl::UploadWeights(grpc::ServerContext* context, grpc::ServerReader<grpc::ByteBuffer>* reader,
                                             tp::v1::ModelInfo* response) {
  RpcScope scope(env_, "UploadWeights", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  tp::v1::UploadWeightsRequest message;
  grpc::Status malformed;
  if (!ReadMessage(reader, &message, &malformed)) {
    return scope.Finish(malformed.ok() ? grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                                      "UploadWeights: empty stream; expected the model name and chunks")
                                       : malformed);
  }
  const std::string name = message.model();
  const uint64_t expected_version = message.expected_version();
  scope.set_model(name);
  absl::StatusOr<std::shared_ptr<Model>> model = env_.core->FindModel(name);
  if (!model.ok()) return scope.Finish(model.status());
  WeightsAssembler assembler((*model)->plan().weight_numel());
  do {
    if (!message.model().empty() && message.model() != name) {
      return scope.Finish(absl::InvalidArgumentError(
          absl::StrCat("UploadWeights: chunk names model '", message.model(), "', stream began with '", name, "'")));
    }
    if (!message.has_chunk()) continue;
    absl::StatusOr<std::vector<float>> values =
        wire::BytesToFloats(message.chunk().dtype(), message.chunk().data(), "weights chunk");
    if (!values.ok()) return scope.Finish(values.status());
    if (auto s = assembler.Append(message.chunk().offset(), *std::move(values)); !s.ok()) return scope.Finish(s);
  } while (ReadMessage(reader, &message, &malformed));
  if (!malformed.ok()) return scope.Finish(malformed);
  if (context->IsCancelled()) {
    return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled; weights unchanged"));
  }
  absl::StatusOr<std::vector<float>> weights = std::move(assembler).Finish();
  if (!weights.ok()) return scope.Finish(weights.status());
  // To the model the upload began on: NOT_FOUND if it was deleted meanwhile, even when a model of
  // the same name was created since (the upload was meant for the old one).
  absl::StatusOr<ModelInfo> info = env_.core->ReplaceWeights(*model, *std::move(weights), expected_version);
  if (!info.ok()) return scope.Finish(info.status());
  ToProto(*info, response);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ModelServiceImpl::DownloadWeights(grpc::ServerContext* context,
                                               const tp::v1::DownloadWeightsRequest* request,
                                               grpc::ServerWriter<tp::v1::WeightsChunk>* writer) {
  RpcScope scope(env_, "DownloadWeights", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  absl::StatusOr<WeightsSnapshot> snapshot = env_.core->GetWeights(request->model());
  if (!snapshot.ok()) return scope.Finish(snapshot.status());
  // The version travels in initial metadata, so a client can tell which weights it got.
  context->AddInitialMetadata("tp-model-version", std::to_string(snapshot->version));
  return scope.Finish(
      StreamVector(*snapshot->weights, ChunkElements(env_, request->chunk_elements()), writer));
}

grpc::Status ModelServiceImpl::GetGradient(grpc::ServerContext* context, const tp::v1::GetGradientRequest* request,
                                           grpc::ServerWriter<tp::v1::WeightsChunk>* writer) {
  RpcScope scope(env_, "GetGradient", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  absl::StatusOr<std::vector<float>> gradient = env_.core->GetGradient(request->model());
  if (!gradient.ok()) return scope.Finish(gradient.status());
  scope.set_device("all");
  return scope.Finish(StreamVector(*gradient, ChunkElements(env_, request->chunk_elements()), writer));
}

grpc::Status ModelServiceImpl::ZeroGradient(grpc::ServerContext* context, const tp::v1::ZeroGradientRequest* request,
                                            tp::v1::ZeroGradientResponse*) {
  RpcScope scope(env_, "ZeroGradient", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  absl::Status zeroed = env_.core->ZeroGradient(request->model());
  if (zeroed.ok()) scope.set_device("all");
  return scope.Finish(zeroed);
}

grpc::Status ModelServiceImpl::SgdStep(grpc::ServerContext* context, const tp::v1::SgdStepRequest* request,
                                       tp::v1::ModelInfo* response) {
  RpcScope scope(env_, "SgdStep", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  absl::StatusOr<ModelInfo> info =
      env_.core->SgdStep(request->model(), request->learning_rate(), request->zero_gradient());
  if (!info.ok()) return scope.Finish(info.status());
  scope.set_device("all");  // the gradient parts of every device
  ToProto(*info, response);
  return scope.Finish(grpc::Status::OK);
}

}  // namespace tpserve::server
