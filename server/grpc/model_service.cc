#include "server/grpc/model_service.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"
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

grpc::Status ModelServiceImpl::CreateModel(grpc::ServerContext* context,
                                           grpc::ServerReader<tp::v1::CreateModelRequest>* reader,
                                           tp::v1::ModelInfo* response) {
  RpcScope scope(env_, "CreateModel", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  tp::v1::CreateModelRequest message;
  if (!reader->Read(&message) || !message.has_header()) {
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
    while (reader->Read(&message)) {
      if (!message.has_chunk()) {
        return scope.Finish(absl::InvalidArgumentError("CreateModel: only weight chunks may follow the header"));
      }
      absl::StatusOr<std::vector<float>> values =
          wire::BytesToFloats(message.chunk().dtype(), message.chunk().data(), "weights chunk");
      if (!values.ok()) return scope.Finish(values.status());
      if (auto s = assembler.Append(message.chunk().offset(), *std::move(values)); !s.ok()) return scope.Finish(s);
    }
    absl::StatusOr<std::vector<float>> assembled = std::move(assembler).Finish();
    if (!assembled.ok()) return scope.Finish(assembled.status());
    weights = *std::move(assembled);
  } else if (reader->Read(&message)) {
    return scope.Finish(absl::InvalidArgumentError("CreateModel: chunks sent, but the header did not set upload"));
  }
  absl::StatusOr<ModelInfo> info = env_.core->CreateModel(header.name(), spec, std::move(weights), header.seed());
  if (!info.ok()) return scope.Finish(info.status());
  scope.set_model(info->name);
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
  return scope.Finish(env_.core->DeleteModel(request->name()));
}

grpc::Status ModelServiceImpl::UploadWeights(grpc::ServerContext* context,
                                             grpc::ServerReader<tp::v1::UploadWeightsRequest>* reader,
                                             tp::v1::ModelInfo* response) {
  RpcScope scope(env_, "UploadWeights", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  tp::v1::UploadWeightsRequest message;
  if (!reader->Read(&message)) {
    return scope.Finish(absl::InvalidArgumentError("UploadWeights: empty stream; expected the model name and chunks"));
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
  } while (reader->Read(&message));
  if (context->IsCancelled()) {
    return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled; weights unchanged"));
  }
  absl::StatusOr<std::vector<float>> weights = std::move(assembler).Finish();
  if (!weights.ok()) return scope.Finish(weights.status());
  absl::StatusOr<ModelInfo> info = env_.core->ReplaceWeights(name, *std::move(weights), expected_version);
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
  return scope.Finish(StreamVector(*gradient, ChunkElements(env_, request->chunk_elements()), writer));
}

grpc::Status ModelServiceImpl::ZeroGradient(grpc::ServerContext* context, const tp::v1::ZeroGradientRequest* request,
                                            tp::v1::ZeroGradientResponse*) {
  RpcScope scope(env_, "ZeroGradient", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  return scope.Finish(env_.core->ZeroGradient(request->model()));
}

grpc::Status ModelServiceImpl::SgdStep(grpc::ServerContext* context, const tp::v1::SgdStepRequest* request,
                                       tp::v1::ModelInfo* response) {
  RpcScope scope(env_, "SgdStep", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  absl::StatusOr<ModelInfo> info =
      env_.core->SgdStep(request->model(), request->learning_rate(), request->zero_gradient());
  if (!info.ok()) return scope.Finish(info.status());
  ToProto(*info, response);
  return scope.Finish(grpc::Status::OK);
}

}  // namespace tpserve::server
