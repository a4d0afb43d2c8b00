#include "kernels/core/backend.h"

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tpserve {

const char* PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return "fp32";
    case Precision::kTf32: return "tf32";
    case Precision::kBf16: return "bf16";
  }
  return "?";
}

absl::StatusOr<Precision> ParsePrecision(absl::string_view name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "tf32") return Precision::kTf32;
  if (name == "bf16") return Precision::kBf16;
  return absl::InvalidArgumentError(absl::StrCat("precision '", name, "': expected fp32, tf32 or bf16"));
}

const char* LossName(Loss loss) { return loss == Loss::kSum ? "sum" : "sum_tanh"; }

absl::StatusOr<Loss> ParseLoss(absl::string_view name) {
  if (name == "sum") return Loss::kSum;
  if (name == "sum_tanh") return Loss::kSumTanh;
  return absl::InvalidArgumentError(absl::StrCat("loss '", name, "': expected sum or sum_tanh"));
}

absl::Status Backend::FillZero(void* dst, size_t bytes, const ExecutionContext& ctx) {
  const std::vector<char> zeros(bytes, 0);
  RETURN_IF_ERROR(CopyFromHost(dst, zeros.data(), bytes, ctx));
  return Synchronize(ctx);  // `zeros` goes away on return
}

const char* CopyPathName(CopyPath path) { return path == CopyPath::kPeer ? "peer" : "host"; }

absl::StatusOr<CopyPath> CopyAcrossBackends(Backend& to, void* dst, const ExecutionContext& to_ctx, Backend& from,
                                            const void* src, const ExecutionContext& from_ctx, size_t bytes,
                                            std::vector<char>& host_staging) {
  absl::Status direct = to.CopyFromPeer(dst, from, src, bytes, from_ctx);
  if (direct.ok()) {
    RETURN_IF_ERROR(from.Synchronize(from_ctx));
    return CopyPath::kPeer;
  }
  if (!absl::IsUnimplemented(direct)) return direct;
  if (host_staging.size() < bytes) host_staging.resize(bytes);
  RETURN_IF_ERROR(from.CopyToHost(host_staging.data(), src, bytes, from_ctx));
  RETURN_IF_ERROR(from.Synchronize(from_ctx));
  RETURN_IF_ERROR(to.CopyFromHost(dst, host_staging.data(), bytes, to_ctx));
  RETURN_IF_ERROR(to.Synchronize(to_ctx));
  return CopyPath::kHost;
}

std::vector<int64_t> WeightShape(const TensorProductPlan& plan, int64_t batch) {
  if (plan.weight_sharing() == WeightSharing::kPerSample) return {batch, plan.weight_numel()};
  return {plan.weight_numel()};
}

namespace {

absl::Status ValidateInputs(const TensorProductPlan& plan, const ConstTensorView& weight, const ConstTensorView& x1,
                            const ConstTensorView& x2) {
  if (!x1.present() || x1.shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("x1: expected a [batch, ", plan.dim_in1(), "] tensor, got shape ", ShapeString(x1.shape)));
  }
  const int64_t batch = x1.shape[0];
  const DType dtype = x1.dtype;
  RETURN_IF_ERROR(CheckTensor(x1, "x1", dtype, {batch, plan.dim_in1()}));
  RETURN_IF_ERROR(CheckTensor(x2, "x2", dtype, {batch, plan.dim_in2()}));
  RETURN_IF_ERROR(CheckTensor(weight, "weight", dtype, WeightShape(plan, batch)));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateForward(const TensorProductPlan& plan, const ConstTensorView& weight, const ConstTensorView& x1,
                             const ConstTensorView& x2, const TensorView& out) {
  RETURN_IF_ERROR(ValidateInputs(plan, weight, x1, x2));
  return CheckTensor(out, "out", x1.dtype, {x1.shape[0], plan.dim_out()});
}

absl::Status ValidateGradients(const TensorProductPlan& plan, const ConstTensorView& weight,
                               const ConstTensorView& x1, const ConstTensorView& x2, const GradientOutputs& grads) {
  RETURN_IF_ERROR(ValidateInputs(plan, weight, x1, x2));
  const int64_t batch = x1.shape[0];
  if (grads.grad_weight.present())
    RETURN_IF_ERROR(CheckTensor(grads.grad_weight, "grad_weight", x1.dtype, WeightShape(plan, batch)));
  if (grads.grad_x1.present())
    RETURN_IF_ERROR(CheckTensor(grads.grad_x1, "grad_x1", x1.dtype, {batch, plan.dim_in1()}));
  if (grads.grad_x2.present())
    RETURN_IF_ERROR(CheckTensor(grads.grad_x2, "grad_x2", x1.dtype, {batch, plan.dim_in2()}));
  return absl::OkStatus();
}

}  // namespace tpserve
