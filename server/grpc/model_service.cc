#include "server/grpc/model_service.h"

#include <chrono>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "server/grpc/convert.h"
#include "server/grpc/request_parsing.h"
#include "server/grpc/sync_methods.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::server {
namespace {

int64_t ChunkElements(const ServiceEnv& env, int64_t requested) {
  if (requested <= 0) return env.chunk_elements;
  return std::min<int64_t>(requested, env.max_chunk_elements);
}

// True once the client cancelled or the call's deadline passed: long work stops there.
std::function<bool()> CallEnded(grpc::ServerContext* context) {
  return [context] { return context->IsCancelled() || std::chrono::system_clock::now() > context->deadline(); };
}

// Reads weight chunks (after the first message, already read) into `assembler`, watched by the
// housekeeper: a stream that sends nothing for --upload_idle_seconds is cancelled.
template <typename Message, typename Reader>
absl::Status ReadChunks(const ServiceEnv& env, grpc::ServerContext* context, Reader* reader, Message* message,
                        WeightsAssembler* assembler, const std::function<absl::Status(const Message&)>& check) {
  std::unique_ptr<Housekeeper::Upload> watch;
  if (env.housekeeper != nullptr) watch = env.housekeeper->WatchUpload(context);
  for (;;) {
    if (auto s = check(*message); !s.ok()) return s;
    if (message->has_chunk()) {
      absl::StatusOr<std::vector<float>> values =
          wire::BytesToFloats(message->chunk().dtype(), message->chunk().data(), "weights chunk");
      if (!values.ok()) return values.status();
      RETURN_IF_ERROR(assembler->Append(message->chunk().offset(), *std::move(values)));
    }
    grpc::Status malformed;
    if (!ReadMessage(reader, message, &malformed)) {
      if (!malformed.ok()) return absl::InvalidArgumentError(malformed.error_message());
      break;
    }
    if (watch != nullptr) watch->Progress();
  }
  if (watch != nullptr && watch->dropped()) {
    return absl::DeadlineExceededError(absl::StrCat("upload dropped: no chunk for ", env.housekeeper->upload_idle_seconds(),
                                                    " s (the server's --upload_idle_seconds); weights unchanged"));
  }
  return absl::OkStatus();
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
  AddMethod(ClientStreamingMethod(MethodPath<tp::v1::ModelService>("CreateModel"), this, &Self::CreateModel));
  AddMethod(UnaryMethod(MethodPath<tp::v1::ModelService>("GetModel"), this, &env_, &Self::GetModel));
  AddMethod(UnaryMethod(MethodPath<tp::v1::ModelService>("ListModels"), this, &env_, &Self::ListModels));
  AddMethod(UnaryMethod(MethodPath<tp::v1::ModelService>("DeleteModel"), this, &env_, &Self::DeleteModel));
  AddMethod(ClientStreamingMethod(MethodPath<tp::v1::ModelService>("UploadWeights"), this, &Self::UploadWeights));
  AddMethod(ServerStreamingMethod(MethodPath<tp::v1::ModelService>("DownloadWeights"), this, &env_, &Self::DownloadWeights));
  AddMethod(ServerStreamingMethod(MethodPath<tp::v1::ModelService>("GetGradient"), this, &env_, &Self::GetGradient));
  AddMethod(UnaryMethod(MethodPath<tp::v1::ModelService>("ZeroGradient"), this, &env_, &Self::ZeroGradient));
  AddMethod(UnaryMethod(MethodPath<tp::v1::ModelService>("SgdStep"), this, &env_, &Self::SgdStep));
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
  if (auto s = ValidateModelName(header.name()); !s.ok()) return scope.Finish(s);
  if (header.has_qm9()) return scope.Finish(CreateNetworkModel(header, reader, &scope, response));
  // Built once, here (the core takes it as is); the build stops when the client goes away.
  absl::StatusOr<TensorProductPlan> plan = env_.core->BuildPlan(FromProto(header.spec()), CallEnded(context));
  if (!plan.ok()) return scope.Finish(plan.status());

  std::optional<std::vector<float>> weights;
  MemoryBudget::Reservation upload_memory;
  if (header.init_case() == tp::v1::CreateModelHeader::kUpload && header.upload()) {
    const int64_t weight_numel = plan->weight_numel();
    absl::StatusOr<MemoryBudget::Reservation> reserved = env_.core->memory_budget().Reserve(
        weight_numel * int64_t{sizeof(float)}, absl::StrCat("the upload of model '", QuoteForError(header.name()), "'"));
    if (!reserved.ok()) return scope.Finish(reserved.status());
    upload_memory = *std::move(reserved);
    WeightsAssembler assembler(weight_numel);
    if (!ReadMessage(reader, &message, &malformed)) {
      if (!malformed.ok()) return scope.Finish(malformed);
      return scope.Finish(absl::FailedPreconditionError(
          absl::StrCat("weights upload ended after 0 of ", weight_numel, " elements")));
    }
    absl::Status read = ReadChunks<tp::v1::CreateModelRequest>(
        env_, context, reader, &message, &assembler, [](const tp::v1::CreateModelRequest& m) {
          return m.has_chunk() ? absl::OkStatus()
                               : absl::InvalidArgumentError("CreateModel: only weight chunks may follow the header");
        });
    if (!read.ok()) return scope.Finish(read);
    absl::StatusOr<std::vector<float>> assembled = std::move(assembler).Finish();
    if (!assembled.ok()) return scope.Finish(assembled.status());
    weights = *std::move(assembled);
  } else if (ReadMessage(reader, &message, &malformed)) {
    return scope.Finish(absl::InvalidArgumentError("CreateModel: chunks sent, but the header did not set upload"));
  }
  if (!malformed.ok()) return scope.Finish(malformed);
  absl::StatusOr<ModelInfo> info =
      env_.core->CreateModel(header.name(), *std::move(plan), std::move(weights), header.seed());
  if (!info.ok()) return scope.Finish(info.status());
  scope.set_model(info->name);
  scope.set_device("all");  // its replicas went to every device
  ToProto(*info, response);
  return scope.Finish(grpc::Status::OK);
}

// A network model (kind "qm9"): seeded parameters only; nothing may follow the header.
absl::Status ModelServiceImpl::CreateNetworkModel(const tp::v1::CreateModelHeader& header,
                                                  grpc::ServerReader<grpc::ByteBuffer>* reader, RpcScope* scope,
                                                  tp::v1::ModelInfo* response) {
  const tp::v1::ModelSpec& irreps = header.spec();
  if (!irreps.irreps_in1().empty() || !irreps.irreps_in2().empty() || !irreps.irreps_out().empty()) {
    return absl::InvalidArgumentError("CreateModel: set either spec (a tensor-product model) or qm9 (a network model)");
  }
  if (header.init_case() == tp::v1::CreateModelHeader::kUpload) {
    return absl::InvalidArgumentError("CreateModel: a qm9 network model starts from seeded parameters (upload is "
                                      "for tensor-product weights)");
  }
  tp::v1::CreateModelRequest extra;
  grpc::Status malformed;
  if (ReadMessage(reader, &extra, &malformed)) {
    return absl::InvalidArgumentError("CreateModel: nothing may follow the header of a qm9 network model");
  }
  if (!malformed.ok()) return absl::InvalidArgumentError(malformed.error_message());
  NetworkSpec spec;
  spec.lmax = header.qm9().lmax();
  spec.mul = header.qm9().mul();
  if (header.qm9().layers() != 0) spec.layers = header.qm9().layers();
  if (header.qm9().num_elements() != 0) spec.num_elements = header.qm9().num_elements();
  if (header.qm9().num_targets() != 0) spec.num_targets = header.qm9().num_targets();
  absl::StatusOr<ModelInfo> info = env_.core->CreateNetworkModel(header.name(), spec, header.seed());
  if (!info.ok()) return info.status();
  scope->set_model(info->name);
  scope->set_device("cpu");
  ToProto(*info, response);
  return absl::OkStatus();
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
  const int64_t weight_numel = (*model)->plan().weight_numel();
  // The whole upload is reserved before its first chunk is kept.
  absl::StatusOr<MemoryBudget::Reservation> upload_memory = env_.core->memory_budget().Reserve(
      weight_numel * int64_t{sizeof(float)}, absl::StrCat("the upload of model '", name, "'"));
  if (!upload_memory.ok()) return scope.Finish(upload_memory.status());
  WeightsAssembler assembler(weight_numel);
  absl::Status read = ReadChunks<tp::v1::UploadWeightsRequest>(
      env_, context, reader, &message, &assembler, [&name](const tp::v1::UploadWeightsRequest& m) {
        if (!m.model().empty() && m.model() != name) {
          return absl::InvalidArgumentError(absl::StrCat("UploadWeights: chunk names model '", QuoteForError(m.model()),
                                                         "', stream began with '", name, "'"));
        }
        return absl::OkStatus();
      });
  if (!read.ok()) return scope.Finish(read);
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
  // The snapshot stays alive while it is sent, even when newer weights replace it meanwhile.
  absl::StatusOr<MemoryBudget::Reservation> memory = env_.core->memory_budget().Reserve(
      static_cast<int64_t>(snapshot->weights->size() * sizeof(float)),
      absl::StrCat("the download of model '", request->model(), "'"));
  if (!memory.ok()) return scope.Finish(memory.status());
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
  absl::StatusOr<std::shared_ptr<Model>> model = env_.core->FindModel(request->model());
  if (!model.ok()) return scope.Finish(model.status());
  // The summed gradient, held while it is sent (the core reserves its own temporaries).
  absl::StatusOr<MemoryBudget::Reservation> memory = env_.core->memory_budget().Reserve(
      (*model)->plan().weight_numel() * int64_t{sizeof(float)},
      absl::StrCat("the gradient of model '", request->model(), "'"));
  if (!memory.ok()) return scope.Finish(memory.status());
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
