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
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::server {

grpc::Status ToGrpcStatus(const absl::Status& status);
// "OK", "INVALID_ARGUMENT", ... (the label of tp_requests_total).
const char* StatusCodeName(grpc::StatusCode code);

void ToProto(const ModelInfo& info, tp::v1::ModelInfo* out);
ModelSpec FromProto(const tp::v1::ModelSpec& spec);

absl::StatusOr<InferenceRequest> FromProto(const tp::v1::ForwardRequest& request);
absl::StatusOr<InferenceRequest> FromProto(const tp::v1::BackwardRequest& request);

// The dtype results are sent in: output_dtype, or that of x1.
tp::v1::DType ResultDType(tp::v1::DType output_dtype, const tp::v1::Tensor& x1);

void ToProto(const InferenceResult& result, tp::v1::DType dtype, tp::v1::ForwardResponse* out);
// grad_weight (if any) inline; BackwardChunked streams it separately.
void ToProto(const InferenceResult& result, tp::v1::DType dtype, bool inline_grad_weight,
             tp::v1::BackwardResponse* out);

// Runs a request on the core within the RPC's deadline, giving up (and cancelling the queued
// request) when the client cancels or the deadline passes.
absl::StatusOr<InferenceResult> RunForRpc(InferenceCore& core, InferenceRequest request,
                                          grpc::ServerContext* context);

}  // namespace tpserve::server
