#include "server/grpc/compute_service.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"
#include "server/grpc/echo.h"
#include "server/grpc/forward_wire.h"
#include "server/grpc/request_parsing.h"
#include "server/grpc/stream_handler.h"
#include "server/grpc/sync_methods.h"
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

// The tensor's elements when it is a well-formed float32 array of `data_bytes` bytes, else -1
// (the caller then lets protobuf and DecodeTensor produce the answer, errors included).
int64_t Float32Elements(const tp::v1::Tensor& header, size_t data_bytes) {
  if (header.dtype() != tp::v1::DTYPE_FLOAT32 || header.shape().empty()) return -1;
  const int64_t numel = wire::ShapeElements(header);
  return numel >= 0 && data_bytes == static_cast<size_t>(numel) * sizeof(float) ? numel : -1;
}

// A tensor's shape alone (its values are read into the core's leased buffers afterwards).
HostTensor ShapeOnly(const tp::v1::Tensor& tensor) {
  HostTensor t;
  t.shape.assign(tensor.shape().begin(), tensor.shape().end());
  return t;
}

}  // namespace

ComputeServiceImpl::ComputeServiceImpl(const ServiceEnv& env) : env_(env) {
  using Self = ComputeServiceImpl;
  using Generated = tp::v1::TensorProductService;
  AddMethod(RawUnaryMethod(MethodPath<Generated>("Forward"), this, &Self::Forward));
  AddMethod(UnaryMethod(MethodPath<Generated>("Backward"), this, &env_, &Self::Backward));
  AddMethod(ServerStreamingMethod(MethodPath<Generated>("BackwardChunked"), this, &env_, &Self::BackwardChunked));
  AddMethod(BidiStreamingMethod(MethodPath<Generated>("Stream"), this, &Self::Stream));
  AddMethod(UnaryMethod(MethodPath<Generated>("Echo"), this, &env_, &Self::Echo));
}

grpc::Status ComputeServiceImpl::Forward(grpc::ServerContext* context, const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) {
  RpcScope scope(env_, "Forward", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);

  // The usual message (float32 tensors, plain encoding): x1 and x2 go from gRPC's buffer straight
  // into page-locked buffers that the core leases, which the worker copies to the device.
  std::vector<grpc::Slice> slices;
  std::vector<absl::string_view> pieces;
  if (request->Dump(&slices).ok()) {
    pieces.reserve(slices.size());
    for (const grpc::Slice& slice : slices) {
      pieces.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  wire::ForwardRequestView view;
  absl::StatusOr<InferenceRequest> converted = absl::UnknownError("not converted");
  const tp::v1::ForwardRequest* header = &view.header;
  tp::v1::ForwardRequest message;  // anything else: protobuf parses it, as the generated handler would
  const bool raw_float32 = wire::ParseForwardRequest(pieces, &view) &&
                           Float32Elements(view.header.x1(), view.x1_data.size) >= 0 &&
                           Float32Elements(view.header.x2(), view.x2_data.size) >= 0;
  if (raw_float32) {
    // The shapes now; the values once the core has leased where they go.
    converted = FromProto(view.header, ShapeOnly(view.header.x1()), ShapeOnly(view.header.x2()));
  } else {
    grpc::ByteBuffer copy(*request);  // Deserialize consumes its buffer; this one shares the bytes
    if (grpc::Status parsed = ParseRequest(&copy, &message); !parsed.ok()) return scope.Finish(parsed);
    header = &message;
    converted = FromProto(message, wire::Decode::kBorrow);
  }
  scope.set_model(header->model());
  if (!converted.ok()) return scope.Finish(converted.status());

  // A float32 result is written by the device into a leased buffer that the response is sent from.
  const tp::v1::DType dtype = ResultDType(header->output_dtype(), header->x1());
  const unsigned parts = (raw_float32 ? InferenceCore::kLeaseInputs : 0u) |
                         (dtype == tp::v1::DTYPE_FLOAT32 ? InferenceCore::kLeaseOut : 0u);
  CallBuffers buffers;  // outlives the core's use of the request (Run returns after its callback)
  if (auto s = env_.core->LeaseBuffers(*converted, parts, &buffers); !s.ok()) return scope.Finish(s);
  scope.set_model(buffers.model());
  if (raw_float32) {
    wire::CopyWireBytes(pieces, view.x1_data, reinterpret_cast<char*>(buffers.x1()));
    wire::CopyWireBytes(pieces, view.x2_data, reinterpret_cast<char*>(buffers.x2()));
  }
  scope.MarkStage("read");
  const InferenceCore::CallerWatch watch = WatchOf(context);
  absl::StatusOr<InferenceResult> result =
      env_.core->Run(*std::move(converted), InferenceCore::Dispatch::kCallerMayRun, &watch);
  scope.MarkStage("core");
  if (!result.ok()) return scope.Finish(result.status());
  scope.set_device(result->device);

  tp::v1::ForwardResponse fields;
  fields.set_model_version(result->model_version);
  fields.set_executed_batch(result->executed_batch);
  fields.set_device(result->device);
  if (buffers.out() != nullptr && result->out.values() == buffers.out()) {
    for (int64_t extent : result->out.shape) fields.mutable_out()->add_shape(extent);
    fields.mutable_out()->set_dtype(tp::v1::DTYPE_FLOAT32);
    const size_t bytes = result->out.size() * sizeof(float);
    HostLease* lease = buffers.TakeOutLease().release();  // gRPC frees the slice, and with it the lease, once sent
    grpc::Slice parts[2] = {
        grpc::Slice(wire::EncodeForwardResponseHead(fields, bytes)),
        grpc::Slice(lease->data(), bytes, [](void* p) { delete static_cast<HostLease*>(p); }, lease)};
    *response = grpc::ByteBuffer(parts, 2);
  } else {
    ToProto(*result, dtype, &fields);
    bool own_buffer = false;
    grpc::Status serialized =
        grpc::SerializationTraits<tp::v1::ForwardResponse>::Serialize(fields, response, &own_buffer);
    if (!serialized.ok()) return scope.Finish(serialized);
  }
  scope.MarkStage("write");
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
  const InferenceCore::CallerWatch watch = WatchOf(context);
  absl::StatusOr<InferenceResult> result =
      env_.core->Run(*std::move(converted), InferenceCore::Dispatch::kCallerMayRun, &watch);
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
  const InferenceCore::CallerWatch watch = WatchOf(context);
  absl::StatusOr<InferenceResult> result =
      env_.core->Run(*std::move(converted), InferenceCore::Dispatch::kCallerMayRun, &watch);
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

grpc::Status ComputeServiceImpl::Stream(grpc::ServerContext* context,
                                        grpc::ServerReaderWriter<tp::v1::StreamResponse, grpc::ByteBuffer>* stream) {
  return StreamHandler(env_, &open_streams_, context, stream).Run();
}

grpc::Status ComputeServiceImpl::Echo(grpc::ServerContext* context, const tp::v1::EchoRequest* request,
                                      tp::v1::EchoResponse* response) {
  RpcScope scope(env_, "Echo", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  if (request->response_bytes() < 0) return scope.Finish(absl::InvalidArgumentError(kNegativeResponseBytes));
  // The generated handler hands us a const request; its payload is copied as before.
  tp::v1::EchoRequest sized;
  sized.set_response_bytes(request->response_bytes());
  if (request->response_bytes() <= 0) *sized.mutable_payload() = request->payload();
  MemoryBudget::Reservation memory;
  return scope.Finish(AnswerEcho(env_, &sized, response, &memory));
}

}  // namespace tpserve::server
