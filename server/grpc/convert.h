// Conversions between tp.v1 messages and the core's types, and between absl::Status and
// grpc::Status: what the handlers share (the Triton-style "grpc_utils"). Tensor bytes go through
// tensor_codec.h.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/core/inference_core.h"
#include "server/grpc/tensor_codec.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::server {

// The message is cut to kMaxStatusMessageBytes (StatusMessageForWire).
grpc::Status ToGrpcStatus(const absl::Status& status);
std::string StatusMessageForWire(absl::string_view message);
// "OK", "INVALID_ARGUMENT", ... (the label of tp_requests_total).
const char* StatusCodeName(grpc::StatusCode code);

void ToProto(const ModelInfo& info, tp::v1::ModelInfo* out);
ModelSpec FromProto(const tp::v1::ModelSpec& spec);

// Decode::kBorrow: the request's float32 tensors point into `request`, which must then outlive
// the core's result callback (InferenceCore::Run waits for it).
absl::StatusOr<InferenceRequest> FromProto(const tp::v1::ForwardRequest& request,
                                           wire::Decode mode = wire::Decode::kCopy);
absl::StatusOr<InferenceRequest> FromProto(const tp::v1::BackwardRequest& request,
                                           wire::Decode mode = wire::Decode::kCopy);
// A Forward request from its fields other than the tensors' bytes (`header`: x1.data and x2.data
// empty), with x1 and x2 decoded by the caller (see forward_wire.h).
absl::StatusOr<InferenceRequest> FromProto(const tp::v1::ForwardRequest& header, HostTensor x1, HostTensor x2);

// The dtype results are sent in: output_dtype, or that of x1.
tp::v1::DType ResultDType(tp::v1::DType output_dtype, const tp::v1::Tensor& x1);

void ToProto(const InferenceResult& result, tp::v1::DType dtype, tp::v1::ForwardResponse* out);
// grad_weight (if any) inline; BackwardChunked streams it separately.
void ToProto(const InferenceResult& result, tp::v1::DType dtype, bool inline_grad_weight,
             tp::v1::BackwardResponse* out);

// What the core's Run watches while this RPC waits for its result: the call's deadline, and
// whether the client cancelled.
InferenceCore::CallerWatch WatchOf(grpc::ServerContext* context);

}  // namespace tpserve::server
