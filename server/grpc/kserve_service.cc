#include "server/grpc/kserve_service.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"
#include "server/grpc/forward_wire.h"
#include "server/grpc/kserve_convert.h"
#include "server/grpc/sync_methods.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::server {

// A request's raw FP32 inputs where gRPC received them: their bytes are copied once, into the
// buffers the core leases for the call (Infer).
struct RawInputs {
  std::vector<grpc::Slice> slices;
  std::vector<absl::string_view> pieces;
  std::vector<wire::WireBytes> bytes;  // one per input, in order
  std::vector<HostTensor> shapes;      // each input's shape, no values yet
};

namespace {

constexpr char kServerName[] = "tpserve";
constexpr char kServerVersion[] = "1";  // the version of tpserve's contract (tp.v1)
constexpr char kPlatform[] = "tpserve_tensor_product";
// What ServerMetadata announces, in the protocol's (Triton's) extension names.
constexpr const char* kExtensions[] = {"model_repository", "model_configuration", "parameters"};

std::string VersionString(uint64_t version) { return std::to_string(version); }

// NOT_FOUND unless `requested` is empty or names the version the model holds now.
absl::Status CheckVersion(const ModelInfo& info, const std::string& requested) {
  if (requested.empty() || requested == VersionString(info.version)) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("model '", info.name, "' version ", requested,
                                          " is not available; the server holds version ", info.version,
                                          " (an empty version means the current one)"));
}

absl::Status WithModelsHint(absl::Status status) {
  if (!absl::IsNotFound(status)) return status;
  return absl::NotFoundError(absl::StrCat(status.message(), "; RepositoryIndex lists the models"));
}

void AddTensorMetadata(const char* name, int64_t dim, inference::ModelMetadataResponse::TensorMetadata* out) {
  out->set_name(name);
  out->set_datatype("FP32");  // FP64, FP16 and BF16 are accepted too (ModelConfig's parameters say so)
  out->add_shape(-1);
  out->add_shape(dim);
}

void SetParameter(inference::ModelConfig* config, const std::string& key, const std::string& value) {
  (*config->mutable_parameters())[key].set_string_value(value);
}

// The field numbers of ModelInferRequest.raw_input_contents and ModelInferResponse.raw_output_contents.
constexpr int kRawInputContentsField = 7;
constexpr int kRawOutputContentsField = 6;

// How ReadModelInfer found the request.
enum class Read { kParsed, kParsedWithRawInputs, kLeftToProtobuf };

// The request from gRPC's buffer: everything but raw_input_contents parsed by protobuf into
// `message`; raw inputs that are all FP32 of their shapes' sizes left where they are, in `raw`.
// kLeftToProtobuf for anything else (other datatypes, sizes that do not match, malformed bytes):
// the caller parses it whole.
Read ReadModelInfer(const grpc::ByteBuffer& request, inference::ModelInferRequest* message, RawInputs* raw) {
  if (!request.Dump(&raw->slices).ok()) return Read::kLeftToProtobuf;
  raw->pieces.reserve(raw->slices.size());
  for (const grpc::Slice& slice : raw->slices) {
    raw->pieces.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  std::string rest;
  if (!wire::SplitOutField(raw->pieces, kRawInputContentsField, &rest, &raw->bytes)) return Read::kLeftToProtobuf;
  if (!message->ParseFromString(rest)) return Read::kLeftToProtobuf;
  if (raw->bytes.empty()) return Read::kParsed;  // typed contents: `rest` was the whole message
  if (static_cast<int>(raw->bytes.size()) != message->inputs_size()) return Read::kLeftToProtobuf;
  raw->shapes.clear();
  for (size_t i = 0; i < raw->bytes.size(); ++i) {
    const auto& input = message->inputs(static_cast<int>(i));
    HostTensor shape;
    shape.shape.assign(input.shape().begin(), input.shape().end());
    const int64_t numel = wire::ShapeElements(shape.shape);
    if (input.datatype() != "FP32" || input.shape().empty() || numel < 0 ||
        raw->bytes[i].size != static_cast<size_t>(numel) * sizeof(float)) {
      return Read::kLeftToProtobuf;
    }
    raw->shapes.push_back(std::move(shape));
  }
  return Read::kParsedWithRawInputs;
}

// Copies each raw input's bytes to where the core leased it (by the input's name).
void CopyRawInputs(const inference::ModelInferRequest& request, const RawInputs& raw, const CallBuffers& buffers) {
  for (size_t i = 0; i < raw.bytes.size(); ++i) {
    const std::string& name = request.inputs(static_cast<int>(i)).name();
    float* into = name == kserve::kInputX1   ? buffers.x1()
                  : name == kserve::kInputX2 ? buffers.x2()
                                             : buffers.grad_out();
    if (into != nullptr) wire::CopyWireBytes(raw.pieces, raw.bytes[i], into);  // else Validate names it
  }
}

}  // namespace

KserveServiceImpl::KserveServiceImpl(const ServiceEnv& env) : env_(env) {
  using Self = KserveServiceImpl;
  auto path = [](const char* method) { return MethodPath<inference::GRPCInferenceService>(method); };
  AddMethod(PlainUnaryMethod(path("ServerLive"), this, &Self::ServerLive));
  AddMethod(PlainUnaryMethod(path("ServerReady"), this, &Self::ServerReady));
  AddMethod(PlainUnaryMethod(path("ModelReady"), this, &Self::ModelReady));
  AddMethod(PlainUnaryMethod(path("ServerMetadata"), this, &Self::ServerMetadata));
  AddMethod(PlainUnaryMethod(path("ModelMetadata"), this, &Self::ModelMetadata));
  AddMethod(RawUnaryMethod(path("ModelInfer"), this, &Self::ModelInfer));
  AddMethod(BidiStreamingMethod(path("ModelStreamInfer"), this, &Self::ModelStreamInfer));
  AddMethod(PlainUnaryMethod(path("ModelConfig"), this, &Self::ModelConfig));
  AddMethod(PlainUnaryMethod(path("RepositoryIndex"), this, &Self::RepositoryIndex));
  AddMethod(PlainUnaryMethod(path("RepositoryModelLoad"), this, &Self::RepositoryModelLoad));
  AddMethod(PlainUnaryMethod(path("RepositoryModelUnload"), this, &Self::RepositoryModelUnload));
}

grpc::Status KserveServiceImpl::ServerLive(grpc::ServerContext* context, const inference::ServerLiveRequest*,
                                           inference::ServerLiveResponse* response) {
  RpcScope scope(env_, "ServerLive", context);
  response->set_live(true);  // it answers: the process serves calls
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KserveServiceImpl::ServerReady(grpc::ServerContext* context, const inference::ServerReadyRequest*,
                                            inference::ServerReadyResponse* response) {
  RpcScope scope(env_, "ServerReady", context);
  response->set_ready(ready_.load() && !env_.core->AllDevicesLost());
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KserveServiceImpl::ModelReady(grpc::ServerContext* context, const inference::ModelReadyRequest* request,
                                           inference::ModelReadyResponse* response) {
  RpcScope scope(env_, "ModelReady", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->name());
  absl::StatusOr<ModelInfo> info = env_.core->GetModel(request->name());
  // An unknown model is "not ready" rather than an error: readiness probes read the flag.
  response->set_ready(info.ok() && CheckVersion(*info, request->version()).ok() && ready_.load() &&
                      !env_.core->AllDevicesLost());
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KserveServiceImpl::ServerMetadata(grpc::ServerContext* context, const inference::ServerMetadataRequest*,
                                               inference::ServerMetadataResponse* response) {
  RpcScope scope(env_, "ServerMetadata", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  response->set_name(kServerName);
  response->set_version(kServerVersion);
  for (const char* extension : kExtensions) response->add_extensions(extension);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KserveServiceImpl::ModelMetadata(grpc::ServerContext* context,
                                              const inference::ModelMetadataRequest* request,
                                              inference::ModelMetadataResponse* response) {
  RpcScope scope(env_, "ModelMetadata", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->name());
  absl::StatusOr<ModelInfo> info = env_.core->GetModel(request->name());
  if (!info.ok()) return scope.Finish(WithModelsHint(info.status()));
  if (auto s = CheckVersion(*info, request->version()); !s.ok()) return scope.Finish(s);
  response->set_name(info->name);
  response->add_versions(VersionString(info->version));
  response->set_platform(kPlatform);
  AddTensorMetadata(kserve::kInputX1, info->dim_in1, response->add_inputs());
  AddTensorMetadata(kserve::kInputX2, info->dim_in2, response->add_inputs());
  AddTensorMetadata(kserve::kOutputOut, info->dim_out, response->add_outputs());
  return scope.Finish(grpc::Status::OK);
}

absl::Status KserveServiceImpl::Infer(grpc::ServerContext* context, const inference::ModelInferRequest& request,
                                      RawInputs* raw, inference::ModelInferResponse* response,
                                      std::string* device, bool lease_out, CallBuffers* buffers, RpcScope* scope) {
  absl::StatusOr<kserve::InferCall> call = raw != nullptr ? kserve::FromProto(request, std::move(raw->shapes))
                                                          : kserve::FromProto(request, wire::Decode::kBorrow);
  if (!call.ok()) return call.status();
  // A float32 forward answered in raw bytes: the device writes `out` straight into the memory the
  // response is sent from (a page-locked lease for unary calls, else the message's bytes).
  const bool raw_float32_out = call->raw_outputs && call->dtype == tp::v1::DTYPE_FLOAT32;
  const unsigned parts = (raw != nullptr ? InferenceCore::kLeaseInputs : 0u) |
                         (lease_out && raw_float32_out ? InferenceCore::kLeaseOut : 0u);
  if (auto s = env_.core->LeaseBuffers(call->request, parts, buffers); !s.ok()) return WithModelsHint(s);
  if (scope != nullptr) scope->set_model(buffers->model());
  const ModelInfo info = buffers->model()->Info();
  if (auto s = CheckVersion(info, request.model_version()); !s.ok()) return s;
  if (call->request.weight_grad == WeightGradMode::kReturn) {  // same inline limit as tp.v1 Backward
    const int64_t bytes = info.weight_numel * static_cast<int64_t>(wire::DTypeSize(call->dtype));
    if (bytes > env_.core->config().max_inline_grad_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "output 'grad_weight' of '", info.name, "' is ", bytes, " bytes, over the inline limit of ",
          env_.core->config().max_inline_grad_bytes,
          "; use the parameter weight_grad = 'accumulate' and tp.v1 ModelService/GetGradient"));
    }
  }
  if (raw != nullptr) CopyRawInputs(request, *raw, *buffers);
  const int64_t batch = call->request.x1.rows();
  const size_t out_floats = static_cast<size_t>(batch * info.dim_out);
  if (raw_float32_out && call->request.op == Op::kForward && buffers->out() == nullptr) {
    std::string* bytes = response->add_raw_output_contents();
    bytes->resize(out_floats * sizeof(float));
    if (reinterpret_cast<uintptr_t>(bytes->data()) % alignof(float) == 0) {
      call->request.out_into = reinterpret_cast<float*>(bytes->data());
      call->request.out_into_size = out_floats;
    }
  }
  if (scope != nullptr) scope->MarkStage("read");
  const InferenceCore::CallerWatch watch = WatchOf(context);
  absl::StatusOr<InferenceResult> result =
      env_.core->Run(std::move(call->request), InferenceCore::Dispatch::kCallerMayRun, &watch);
  if (scope != nullptr) scope->MarkStage("core");
  if (!result.ok()) return result.status();
  *device = result->device;
  if (!request.model_version().empty() && VersionString(result->model_version) != request.model_version()) {
    return absl::AbortedError(absl::StrCat("model '", info.name, "' moved to version ", result->model_version,
                                           " while the call was queued; version ", request.model_version(),
                                           " was requested"));
  }
  response->set_model_name(request.model_name());
  response->set_model_version(VersionString(result->model_version));
  response->set_id(request.id());
  (*response->mutable_parameters())["executed_batch"].set_int64_param(result->executed_batch);
  (*response->mutable_parameters())["device"].set_string_param(result->device);
  if (buffers->out() != nullptr) {
    if (result->out.values() == buffers->out() && result->out.size() == out_floats) {
      // The only output; its bytes follow the message from the lease (see ModelInfer).
      inference::ModelInferResponse::InferOutputTensor* output = response->add_outputs();
      output->set_name(kserve::kOutputOut);
      output->set_datatype(kserve::DTypeToName(call->dtype));
      for (int64_t extent : result->out.shape) output->add_shape(extent);
      return absl::OkStatus();
    }
    // Computed elsewhere (the launch could not use the lease): answered as usual.
    buffers->TakeOutLease().reset();
  }
  kserve::ToProto(*call, *result, response);
  return absl::OkStatus();
}

grpc::Status KserveServiceImpl::ModelInfer(grpc::ServerContext* context, const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) {
  RpcScope scope(env_, "ModelInfer", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  inference::ModelInferRequest message;
  RawInputs raw;
  const Read read = ReadModelInfer(*request, &message, &raw);
  if (read == Read::kLeftToProtobuf) {
    message.Clear();
    grpc::ByteBuffer copy(*request);  // Deserialize consumes its buffer; this one shares the bytes
    if (!grpc::SerializationTraits<inference::ModelInferRequest>::Deserialize(&copy, &message).ok()) {
      return scope.Finish(absl::InvalidArgumentError(
          absl::StrCat("the request's ", request->Length(), " bytes are not an inference.ModelInferRequest")));
    }
  }
  scope.set_model(message.model_name());
  std::string device;
  inference::ModelInferResponse fields;
  CallBuffers buffers;  // the call's page-locked inputs and out, until the response is sent
  absl::Status status = Infer(context, message, read == Read::kParsedWithRawInputs ? &raw : nullptr, &fields,
                              &device, /*lease_out=*/true, &buffers, &scope);
  if (!device.empty()) scope.set_device(device);
  if (!status.ok()) return scope.Finish(status);
  if (buffers.out() != nullptr) {
    // Protobuf appends repeated fields that follow a message: the message's fields, then
    // raw_output_contents[0] as its tag, its length and the lease's bytes.
    const size_t bytes = static_cast<size_t>(fields.outputs(0).shape(0) * fields.outputs(0).shape(1)) * sizeof(float);
    std::string head = fields.SerializeAsString();
    wire::AppendLengthDelimitedTag(kRawOutputContentsField, bytes, &head);
    HostLease* lease = buffers.TakeOutLease().release();  // gRPC frees the slice, and with it the lease, once sent
    grpc::Slice parts[2] = {grpc::Slice(head),
                            grpc::Slice(lease->data(), bytes, [](void* p) { delete static_cast<HostLease*>(p); }, lease)};
    *response = grpc::ByteBuffer(parts, 2);
  } else {
    bool own_buffer = false;
    grpc::Status serialized =
        grpc::SerializationTraits<inference::ModelInferResponse>::Serialize(fields, response, &own_buffer);
    if (!serialized.ok()) return scope.Finish(serialized);
  }
  scope.MarkStage("write");
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KserveServiceImpl::ModelStreamInfer(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>* stream) {
  RpcScope scope(env_, "ModelStreamInfer", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  inference::ModelInferRequest request;
  while (stream->Read(&request)) {
    // Each request is also counted on its own, as tp.v1's Stream counts "Stream/Forward".
    RpcScope each(env_, "ModelStreamInfer/ModelInfer", context);
    each.set_model(request.model_name());
    inference::ModelStreamInferResponse answer;
    std::string device;
    CallBuffers buffers;
    absl::Status status = Infer(context, request, nullptr, answer.mutable_infer_response(), &device,
                                /*lease_out=*/false, &buffers, nullptr);
    if (!device.empty()) each.set_device(device);
    if (!status.ok()) {
      answer.Clear();
      answer.set_error_message(std::string(status.message()));
      answer.mutable_infer_response()->set_model_name(request.model_name());
      answer.mutable_infer_response()->set_id(request.id());
    }
    each.Finish(status);
    if (!stream->Write(answer)) return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    request.Clear();
  }
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KserveServiceImpl::ModelConfig(grpc::ServerContext* context, const inference::ModelConfigRequest* request,
                                            inference::ModelConfigResponse* response) {
  RpcScope scope(env_, "ModelConfig", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->name());
  absl::StatusOr<ModelInfo> info = env_.core->GetModel(request->name());
  if (!info.ok()) return scope.Finish(WithModelsHint(info.status()));
  if (auto s = CheckVersion(*info, request->version()); !s.ok()) return scope.Finish(s);
  inference::ModelConfig* config = response->mutable_config();
  config->set_name(info->name);
  config->set_platform(kPlatform);
  config->set_backend(kServerName);
  config->set_max_batch_size(static_cast<int32_t>(std::min<int64_t>(env_.core->config().max_batch_size, INT32_MAX)));
  auto add_input = [&](const char* name, int64_t dim, bool optional) {
    inference::ModelInput* input = config->add_input();
    input->set_name(name);
    input->set_data_type(inference::TYPE_FP32);
    input->add_dims(dim);
    input->set_optional(optional);
  };
  add_input(kserve::kInputX1, info->dim_in1, false);
  add_input(kserve::kInputX2, info->dim_in2, false);
  add_input(kserve::kInputGradOut, info->dim_out, true);
  auto add_output = [&](const char* name, int64_t dim) {
    inference::ModelOutput* output = config->add_output();
    output->set_name(name);
    output->set_data_type(inference::TYPE_FP32);
    output->add_dims(dim);
  };
  add_output(kserve::kOutputOut, info->dim_out);
  add_output(kserve::kOutputGradX1, info->dim_in1);
  add_output(kserve::kOutputGradX2, info->dim_in2);
  SetParameter(config, "irreps_in1", info->spec.irreps_in1);
  SetParameter(config, "irreps_in2", info->spec.irreps_in2);
  SetParameter(config, "irreps_out", info->spec.irreps_out);
  SetParameter(config, "weight_numel", std::to_string(info->weight_numel));
  SetParameter(config, "version", VersionString(info->version));
  SetParameter(config, "datatypes", "FP32, FP64, FP16, BF16 (outputs in x1's datatype)");
  SetParameter(config, "gradients",
               "input grad_out or parameter loss (sum | sum_tanh) -> outputs grad_x1, grad_x2, out (loss only), "
               "grad_weight [weight_numel] on request; parameter weight_grad = accumulate adds d/dw into the "
               "model's gradient buffer");
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KserveServiceImpl::RepositoryIndex(grpc::ServerContext* context, const inference::RepositoryIndexRequest*,
                                                inference::RepositoryIndexResponse* response) {
  RpcScope scope(env_, "RepositoryIndex", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  for (const ModelInfo& info : env_.core->ListModels()) {  // every model is loaded and ready
    inference::RepositoryIndexResponse::ModelIndex* entry = response->add_models();
    entry->set_name(info.name);
    entry->set_version(VersionString(info.version));
    entry->set_state("READY");
  }
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KserveServiceImpl::RepositoryModelLoad(grpc::ServerContext* context,
                                                    const inference::RepositoryModelLoadRequest* request,
                                                    inference::RepositoryModelLoadResponse*) {
  RpcScope scope(env_, "RepositoryModelLoad", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model_name());
  if (!request->parameters().empty()) {
    return scope.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                     "RepositoryModelLoad parameters (a config or files) are not supported; create "
                                     "models with tp.v1.ModelService/CreateModel"));
  }
  absl::StatusOr<ModelInfo> info = env_.core->GetModel(request->model_name());
  if (!info.ok()) {
    return scope.Finish(absl::NotFoundError(absl::StrCat(
        "model '", request->model_name(),
        "' not found; tpserve loads every model of its --model_dir at start (tp.v1.ModelService/CreateModel adds "
        "one)")));
  }
  return scope.Finish(grpc::Status::OK);  // already loaded
}

grpc::Status KserveServiceImpl::RepositoryModelUnload(grpc::ServerContext* context,
                                                      const inference::RepositoryModelUnloadRequest* request,
                                                      inference::RepositoryModelUnloadResponse*) {
  RpcScope scope(env_, "RepositoryModelUnload", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model_name());
  return scope.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                   "tpserve keeps every model loaded; tp.v1.ModelService/DeleteModel removes one "
                                   "(with its weights) for good"));
}

}  // namespace tpserve::server
