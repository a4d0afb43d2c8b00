#include "server/grpc/convert.h"


#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc/rpc_scope.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), StatusMessageForWire(status.message()));
}

std::string StatusMessageForWire(absl::string_view message) {
  if (message.size() <= kMaxStatusMessageBytes) return std::string(message);
  std::string cut(message.substr(0, kMaxStatusMessageBytes - 40));
  absl::StrAppend(&cut, "... (message cut from ", message.size(), " bytes)");
  return cut;
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

void ToProto(const ModelInfo& info, tp::v1::ModelInfo* out) {
  out->set_name(info.name);
  out->mutable_spec()->set_irreps_in1(info.spec.irreps_in1);
  out->mutable_spec()->set_irreps_in2(info.spec.irreps_in2);
  out->mutable_spec()->set_irreps_out(info.spec.irreps_out);
  out->set_weight_numel(info.weight_numel);
  out->set_dim_in1(info.dim_in1);
  out->set_dim_in2(info.dim_in2);
  out->set_dim_out(info.dim_out);
  out->set_num_paths(info.num_paths);
  out->set_version(info.version);
  out->set_weights_fnv1a64(info.weights_fnv1a64);
  out->set_kind(info.kind);
  if (info.kind == kQm9Kind) {
    tp::v1::Qm9Spec* qm9 = out->mutable_qm9();
    qm9->set_lmax(info.network.lmax);
    qm9->set_mul(info.network.mul);
    qm9->set_layers(info.network.layers);
    qm9->set_num_elements(info.network.num_elements);
    qm9->set_num_targets(info.network.num_targets);
    out->set_device(info.device);
    out->set_saved_version(info.saved_version);
  }
}

ModelSpec FromProto(const tp::v1::ModelSpec& spec) {
  return {spec.irreps_in1(), spec.irreps_in2(), spec.irreps_out()};
}

namespace {

absl::StatusOr<Precision> FromProto(tp::v1::Precision precision) {
  switch (precision) {
    case tp::v1::PRECISION_UNSPECIFIED:
    case tp::v1::PRECISION_FP32: return Precision::kFp32;
    case tp::v1::PRECISION_TF32: return Precision::kTf32;
    case tp::v1::PRECISION_BF16: return Precision::kBf16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("precision ", static_cast<int>(precision), ": expected FP32, TF32 or BF16"));
  }
}

absl::Status CheckOutputDType(tp::v1::DType dtype) {
  if (dtype != tp::v1::DTYPE_UNSPECIFIED && wire::DTypeSize(dtype) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("output_dtype ", static_cast<int>(dtype),
                                                   ": expected float32, float64, float16 or bfloat16"));
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// The fields Forward and Backward requests share: model, output dtype, x1, x2, precision.
template <typename Request>
absl::StatusOr<InferenceRequest> FromProtoCommon(const Request& request, Op op, wire::Decode mode) {
  InferenceRequest r;
  r.model = request.model();
  r.op = op;
  if (auto s = CheckOutputDType(request.output_dtype()); !s.ok()) return s;
  absl::StatusOr<HostTensor> x1 = wire::DecodeTensor(request.x1(), "x1", mode);
  if (!x1.ok()) return x1.status();
  absl::StatusOr<HostTensor> x2 = wire::DecodeTensor(request.x2(), "x2", mode);
  if (!x2.ok()) return x2.status();
  absl::StatusOr<Precision> precision = FromProto(request.precision());
  if (!precision.ok()) return precision.status();
  r.x1 = *std::move(x1);
  r.x2 = *std::move(x2);
  r.precision = *precision;
  return r;
}

}  // namespace

absl::StatusOr<InferenceRequest> FromProto(const tp::v1::ForwardRequest& request, wire::Decode mode) {
  return FromProtoCommon(request, Op::kForward, mode);
}

absl::StatusOr<InferenceRequest> FromProto(const tp::v1::ForwardRequest& header, HostTensor x1, HostTensor x2) {
  InferenceRequest r;
  r.model = header.model();
  r.op = Op::kForward;
  if (auto s = CheckOutputDType(header.output_dtype()); !s.ok()) return s;
  absl::StatusOr<Precision> precision = FromProto(header.precision());
  if (!precision.ok()) return precision.status();
  r.x1 = std::move(x1);
  r.x2 = std::move(x2);
  r.precision = *precision;
  return r;
}

absl::StatusOr<InferenceRequest> FromProto(const tp::v1::BackwardRequest& request, wire::Decode mode) {
  absl::StatusOr<InferenceRequest> common = FromProtoCommon(request, Op::kBackward, mode);
  if (!common.ok()) return common.status();
  InferenceRequest r = *std::move(common);
  switch (request.cotangent_case()) {
    case tp::v1::BackwardRequest::kGradOut: {
      absl::StatusOr<HostTensor> grad_out = wire::DecodeTensor(request.grad_out(), "grad_out", mode);
      if (!grad_out.ok()) return grad_out.status();
      r.grad_out = *std::move(grad_out);
      break;
    }
    case tp::v1::BackwardRequest::kLoss:
      if (request.loss() == tp::v1::LOSS_SUM) {
        r.loss = Loss::kSum;
      } else if (request.loss() == tp::v1::LOSS_SUM_TANH) {
        r.loss = Loss::kSumTanh;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("loss ", static_cast<int>(request.loss()), ": expected LOSS_SUM or LOSS_SUM_TANH"));
      }
      break;
    default:
      return absl::InvalidArgumentError("backward: expected grad_out [batch, dim_out] or a loss (sum, sum_tanh)");
  }
  r.want_grad_x1 = request.want_grad_x1();
  r.want_grad_x2 = request.want_grad_x2();
  r.want_out = request.want_out();
  switch (request.weight_grad()) {
    case tp::v1::WEIGHT_GRAD_NONE: r.weight_grad = WeightGradMode::kNone; break;
    case tp::v1::WEIGHT_GRAD_RETURN: r.weight_grad = WeightGradMode::kReturn; break;
    case tp::v1::WEIGHT_GRAD_ACCUMULATE: r.weight_grad = WeightGradMode::kAccumulate; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("weight_grad ", static_cast<int>(request.weight_grad()),
                                                     ": expected NONE, RETURN or ACCUMULATE"));
  }
  return r;
}

tp::v1::DType ResultDType(tp::v1::DType output_dtype, const tp::v1::Tensor& x1) {
  if (wire::DTypeSize(output_dtype) != 0) return output_dtype;
  return wire::DTypeSize(x1.dtype()) != 0 ? x1.dtype() : tp::v1::DTYPE_FLOAT32;
}

void ToProto(const InferenceResult& result, tp::v1::DType dtype, tp::v1::ForwardResponse* out) {
  wire::EncodeTensor(result.out, dtype, out->mutable_out());
  out->set_model_version(result.model_version);
  out->set_executed_batch(result.executed_batch);
  out->set_device(result.device);
}

void ToProto(const InferenceResult& result, tp::v1::DType dtype, bool inline_grad_weight,
             tp::v1::BackwardResponse* out) {
  if (result.out.present()) wire::EncodeTensor(result.out, dtype, out->mutable_out());
  if (result.grad_x1.present()) wire::EncodeTensor(result.grad_x1, dtype, out->mutable_grad_x1());
  if (result.grad_x2.present()) wire::EncodeTensor(result.grad_x2, dtype, out->mutable_grad_x2());
  if (inline_grad_weight && result.grad_weight.present()) {
    wire::EncodeTensor(result.grad_weight, dtype, out->mutable_grad_weight());
  }
  out->set_model_version(result.model_version);
  out->set_executed_batch(result.executed_batch);
  out->set_device(result.device);
}

InferenceCore::CallerWatch WatchOf(grpc::ServerContext* context) {
  InferenceCore::CallerWatch watch;
  const auto deadline = context->deadline();
  // No deadline reads as a time far in the future.
  if (deadline < std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    watch.deadline = absl::FromChrono(deadline);
  }
  watch.gave_up = [context] { return context->IsCancelled(); };
  return watch;
}

}  // namespace tpserve::server
