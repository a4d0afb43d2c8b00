#include "client/tpctl/local_eval.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tpserve {
namespace {

absl::Status CheckInput(const NpyArray& array, const char* what, DType dtype, const std::vector<int64_t>& shape) {
  if (array.dtype != dtype || array.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected ", DTypeName(dtype), " ", ShapeString(shape),
                                                   ", got ", DTypeName(array.dtype), " ",
                                                   ShapeString(array.shape)));
  }
  return absl::OkStatus();
}

// A tensor living in the backend's memory, filled from (or read back into) host arrays.
struct StagedTensor {
  std::unique_ptr<BackendBuffer> buffer;
  DType dtype;
  std::vector<int64_t> shape;
  ConstTensorView cview() const { return {buffer->data(), dtype, shape}; }
  TensorView view() const { return {buffer->data(), dtype, shape}; }
};

absl::StatusOr<StagedTensor> Stage(Backend& backend, const NpyArray* host, DType dtype, std::vector<int64_t> shape,
                                   const ExecutionContext& ctx) {
  StagedTensor staged{nullptr, dtype, std::move(shape)};
  int64_t numel = 1;
  for (int64_t s : staged.shape) numel *= s;
  ASSIGN_OR_RETURN(staged.buffer, backend.Allocate(static_cast<size_t>(numel) * DTypeSize(dtype)));
  if (host != nullptr) {
    const NpyArray converted = ConvertNpy(*host, dtype);
    RETURN_IF_ERROR(backend.CopyFromHost(staged.buffer->data(), converted.bytes.data(), converted.bytes.size(), ctx));
  }
  return staged;
}

absl::StatusOr<NpyArray> Fetch(Backend& backend, const StagedTensor& staged, DType want, const ExecutionContext& ctx) {
  NpyArray host = NpyArray::Zeros(staged.dtype, staged.shape);
  RETURN_IF_ERROR(backend.CopyToHost(host.bytes.data(), staged.buffer->data(), host.bytes.size(), ctx));
  RETURN_IF_ERROR(backend.Synchronize(ctx));
  return ConvertNpy(host, want);
}

}  // namespace

absl::StatusOr<EvalOutputs> EvalOnBackend(Backend& backend, const EvalInputs& in) {
  ASSIGN_OR_RETURN(TensorProductPlan plan,
                   TensorProductPlan::FullyConnected(in.irreps_in1, in.irreps_in2, in.irreps_out));
  const DType dtype = in.x1.dtype;
  if (in.x1.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("x1: expected a 2-d [batch, ", plan.dim_in1(), "] array, got ",
                                                   ShapeString(in.x1.shape)));
  }
  const int64_t batch = in.x1.shape[0];
  RETURN_IF_ERROR(CheckInput(in.x1, "x1", dtype, {batch, plan.dim_in1()}));
  RETURN_IF_ERROR(CheckInput(in.x2, "x2", dtype, {batch, plan.dim_in2()}));
  RETURN_IF_ERROR(CheckInput(in.weights, "weights", dtype, {plan.weight_numel()}));
  if (in.grad_out) RETURN_IF_ERROR(CheckInput(*in.grad_out, "grad_out", dtype, {batch, plan.dim_out()}));

  const DType compute = backend.SupportsDType(dtype) ? dtype : DType::kFloat32;
  ExecutionContext ctx;
  ctx.precision = in.precision;
  ASSIGN_OR_RETURN(std::unique_ptr<PreparedPlan> prepared, backend.Prepare(plan));
  ASSIGN_OR_RETURN(StagedTensor weight, Stage(backend, &in.weights, compute, {plan.weight_numel()}, ctx));
  ASSIGN_OR_RETURN(StagedTensor x1, Stage(backend, &in.x1, compute, {batch, plan.dim_in1()}, ctx));
  ASSIGN_OR_RETURN(StagedTensor x2, Stage(backend, &in.x2, compute, {batch, plan.dim_in2()}, ctx));
  ASSIGN_OR_RETURN(StagedTensor out, Stage(backend, nullptr, compute, {batch, plan.dim_out()}, ctx));

  EvalOutputs result;
  if (in.grad_out || in.loss) {
    ASSIGN_OR_RETURN(StagedTensor grad_weight, Stage(backend, nullptr, compute, {plan.weight_numel()}, ctx));
    GradientOutputs grads;
    grads.grad_weight = grad_weight.view();
    std::optional<StagedTensor> grad_x1, grad_x2;
    if (in.grad_out) {
      ASSIGN_OR_RETURN(grad_x1, Stage(backend, nullptr, compute, {batch, plan.dim_in1()}, ctx));
      ASSIGN_OR_RETURN(grad_x2, Stage(backend, nullptr, compute, {batch, plan.dim_in2()}, ctx));
      grads.grad_x1 = grad_x1->view();
      grads.grad_x2 = grad_x2->view();
      ASSIGN_OR_RETURN(StagedTensor grad_out, Stage(backend, &*in.grad_out, compute, {batch, plan.dim_out()}, ctx));
      RETURN_IF_ERROR(backend.Forward(*prepared, weight.cview(), x1.cview(), x2.cview(), out.view(), ctx));
      RETURN_IF_ERROR(
          backend.Backward(*prepared, weight.cview(), x1.cview(), x2.cview(), grad_out.cview(), grads, ctx));
      ASSIGN_OR_RETURN(result.grad_x1, Fetch(backend, *grad_x1, dtype, ctx));
      ASSIGN_OR_RETURN(result.grad_x2, Fetch(backend, *grad_x2, dtype, ctx));
    } else {
      RETURN_IF_ERROR(backend.LossGradient(*prepared, *in.loss, weight.cview(), x1.cview(), x2.cview(), out.view(),
                                           grads, ctx));
    }
    ASSIGN_OR_RETURN(result.grad_weight, Fetch(backend, grad_weight, dtype, ctx));
  } else {
    RETURN_IF_ERROR(backend.Forward(*prepared, weight.cview(), x1.cview(), x2.cview(), out.view(), ctx));
  }
  ASSIGN_OR_RETURN(result.out, Fetch(backend, out, dtype, ctx));
  return result;
}

}  // namespace tpserve
