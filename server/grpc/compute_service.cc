#include "server/grpc/compute_service.h"

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"
#include "server/grpc/stream_reactor.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::server {
namespace {

// RESOURCE_EXHAUSTED when a unary Backward would return a weight gradient above the inline limit.
absl::Status CheckInlineGradient(const ServiceEnv& env, const tp::v1::BackwardRequest& request,
                                 tp::v1::DType dtype) {
  if (request.weight_grad() != tp::v1::WEIGHT_GRAD_RETURN) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<Model>> model = env.core->FindModel(request.model());
  if (!model.ok()) return model.status();
  int64_t bytes = (*model)->plan().weight_numel() * static_cast<int64_t>(wire::DTypeSize(dtype));
  if (bytes > env.core->config().max_inline_grad_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("weight gradient of '", request.model(), "' is ", bytes,
                                                     " bytes, over the inline limit of ",
                                                     env.core->config().max_inline_grad_bytes,
                                                     "; use BackwardChunked or WEIGHT_GRAD_ACCUMULATE"));
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status ComputeServiceImpl::Forward(grpc::ServerContext* context, const tp::v1::ForwardRequest* request,
                                         tp::v1::ForwardResponse* response) {
  RpcScope scope(env_, "Forward", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  absl::StatusOr<InferenceRequest> converted = FromProto(*request, wire::Decode::kBorrow);
  if (!converted.ok()) return scope.Finish(converted.status());
  absl::StatusOr<InferenceResult> result = RunForRpc(*env_.core, *std::move(converted), context);
  if (!result.ok()) return scope.Finish(result.status());
  scope.set_device(result->device);
  ToProto(*result, ResultDType(request->output_dtype(), request->x1()), response);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ComputeServiceImpl::Backward(grpc::ServerContext* context, const tp::v1::BackwardRequest* request,
                                          tp::v1::BackwardResponse* response) {
  RpcScope scope(env_, "Backward", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  tp::v1::DType dtype = ResultDType(request->output_dtype(), request->x1());
  if (auto s = CheckInlineGradient(env_, *request, dtype); !s.ok()) return scope.Finish(s);
  absl::StatusOr<InferenceRequest> converted = FromProto(*request, wire::Decode::kBorrow);
  if (!converted.ok()) return scope.Finish(converted.status());
  absl::StatusOr<InferenceResult> result = RunForRpc(*env_.core, *std::move(converted), context);
  if (!result.ok()) return scope.Finish(result.status());
  scope.set_device(result->device);
  ToProto(*result, dtype, /*inline_grad_weight=*/true, response);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ComputeServiceImpl::BackwardChunked(grpc::ServerContext* context, const tp::v1::BackwardRequest* request,
                                                 grpc::ServerWriter<tp::v1::BackwardResponse>* writer) {
  RpcScope scope(env_, "BackwardChunked", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  tp::v1::DType dtype = ResultDType(request->output_dtype(), request->x1());
  absl::StatusOr<InferenceRequest> converted = FromProto(*request, wire::Decode::kBorrow);
  if (!converted.ok()) return scope.Finish(converted.status());
  absl::StatusOr<InferenceResult> result = RunForRpc(*env_.core, *std::move(converted), context);
  if (!result.ok()) return scope.Finish(result.status());
  scope.set_device(result->device);
  tp::v1::BackwardResponse first;
  ToProto(*result, dtype, /*inline_grad_weight=*/false, &first);
  if (!writer->Write(first)) return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
  if (result->grad_weight.present()) {
    tp::v1::BackwardResponse message;
    bool ok = wire::ForEachChunk(result->grad_weight.data.data(), result->grad_weight.numel(), env_.chunk_elements,
                                 [&](const tp::v1::WeightsChunk& chunk) {
                                   *message.mutable_grad_weight_chunk() = chunk;
                                   return writer->Write(message);
                                 });
    if (!ok) return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
  }
  return scope.Finish(grpc::Status::OK);
}

grpc::ServerBidiReactor<tp::v1::StreamRequest, tp::v1::StreamResponse>* ComputeServiceImpl::Stream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(env_, context);
}

grpc::Status ComputeServiceImpl::Echo(grpc::ServerContext* context, const tp::v1::EchoRequest* request,
                                      tp::v1::EchoResponse* response) {
  RpcScope scope(env_, "Echo", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  if (request->response_bytes() > 0) {
    if (request->response_bytes() > (int64_t{1} << 30)) {
      return scope.Finish(absl::InvalidArgumentError("response_bytes: expected at most 1 GiB"));
    }
    response->mutable_payload()->assign(static_cast<size_t>(request->response_bytes()), '\0');
  } else {
    *response->mutable_payload() = request->payload();
  }
  return scope.Finish(grpc::Status::OK);
}

}  // namespace tpserve::server
