// Backend::EdgeForward / EdgeBackward (backend.h): their checks, and the default for backends whose
// memory is the host's: gather x1 rows per edge, the backend's own Forward / Backward, scatter-sum.
// It is the reference the fused CUDA kernels are tested against.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/backend.h"
#include "kernels/core/status_macros.h"

namespace tpserve {
namespace {

// A 2-D tensor [any rows, dim] of `dtype`.
template <typename View>
absl::Status CheckRows(const View& view, const char* what, DType dtype, int64_t dim) {
  if (!view.present() || view.shape.size() != 2 || view.shape[0] < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a [rows, ", dim, "] tensor, got shape ", ShapeString(view.shape)));
  }
  return CheckTensor(view, what, dtype, {view.shape[0], dim});
}

absl::Status ValidateEdgeInputs(const TensorProductPlan& plan, const ConstTensorView& weight,
                                const ConstTensorView& x1, const ConstTensorView& x2, const EdgeIndex& edges) {
  const int64_t e = edges.num_edges;
  if (e < 0) return absl::InvalidArgumentError(absl::StrCat("edges: num_edges is negative (", e, ")"));
  if (e > 0 && (edges.src == nullptr || edges.dst == nullptr)) {
    return absl::InvalidArgumentError("edges: src and dst indices are required when there are edges");
  }
  RETURN_IF_ERROR(CheckRows(x1, "x1", x1.dtype, plan.dim_in1()));
  RETURN_IF_ERROR(CheckTensor(x2, "x2", x1.dtype, {e, plan.dim_in2()}));
  return CheckTensor(weight, "weight", x1.dtype, WeightShape(plan, e));
}

// Host indices within [0, src_rows) and [0, dst_rows).
absl::Status CheckEdgeIndices(const EdgeIndex& edges, int64_t src_rows, int64_t dst_rows) {
  for (int64_t k = 0; k < edges.num_edges; ++k) {
    if (edges.src[k] < 0 || edges.src[k] >= src_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("edges: src[", k, "] = ", edges.src[k], " is outside the ", src_rows, " rows of x1"));
    }
    if (edges.dst[k] < 0 || edges.dst[k] >= dst_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("edges: dst[", k, "] = ", edges.dst[k], " is outside the ", dst_rows, " output rows"));
    }
  }
  return absl::OkStatus();
}

// rows[k] = table[index[k]] for k < count (rows of `dim` values).
template <typename T>
std::vector<T> Gather(const T* table, const int32_t* index, int64_t count, int64_t dim) {
  std::vector<T> rows(count * dim);
  for (int64_t k = 0; k < count; ++k) std::copy_n(table + int64_t{index[k]} * dim, dim, &rows[k * dim]);
  return rows;
}

// table = 0, then table[index[k]] += rows[k].
template <typename T>
void ScatterSum(const std::vector<T>& rows, const int32_t* index, int64_t count, int64_t dim, T* table,
                int64_t table_rows) {
  std::fill_n(table, table_rows * dim, T(0));
  for (int64_t k = 0; k < count; ++k) {
    T* row = table + int64_t{index[k]} * dim;
    for (int64_t c = 0; c < dim; ++c) row[c] += rows[k * dim + c];
  }
}

template <typename T>
absl::Status HostEdgeForward(Backend& backend, const PreparedPlan& plan, const ConstTensorView& weight,
                             const ConstTensorView& x1, const ConstTensorView& x2, const EdgeIndex& edges,
                             const TensorView& out, const ExecutionContext& ctx) {
  const int64_t e = edges.num_edges, d1 = plan.plan().dim_in1(), dout = plan.plan().dim_out();
  std::vector<T> out_edges(e * dout);
  if (e == 0) {  // nothing to gather (and Forward takes no empty tensors)
    ScatterSum(out_edges, edges.dst, 0, dout, out.typed<T>(), out.shape[0]);
    return absl::OkStatus();
  }
  const std::vector<T> x1_edges = Gather(x1.typed<T>(), edges.src, e, d1);
  RETURN_IF_ERROR(backend.Forward(plan, weight, {x1_edges.data(), x1.dtype, {e, d1}}, x2,
                                  {out_edges.data(), x1.dtype, {e, dout}}, ctx));
  ScatterSum(out_edges, edges.dst, e, dout, out.typed<T>(), out.shape[0]);
  return absl::OkStatus();
}

template <typename T>
absl::Status HostEdgeBackward(Backend& backend, const PreparedPlan& plan, const ConstTensorView& weight,
                              const ConstTensorView& x1, const ConstTensorView& x2, const EdgeIndex& edges,
                              const ConstTensorView& grad_out, const GradientOutputs& grads,
                              const ExecutionContext& ctx) {
  const int64_t e = edges.num_edges, d1 = plan.plan().dim_in1(), dout = plan.plan().dim_out();
  if (e == 0) {  // sums over no edges
    if (grads.grad_x1.present()) std::fill_n(grads.grad_x1.typed<T>(), grads.grad_x1.numel(), T(0));
    if (grads.grad_weight.present() && !grads.accumulate_grad_weight)
      std::fill_n(grads.grad_weight.typed<T>(), grads.grad_weight.numel(), T(0));
    return absl::OkStatus();
  }
  const std::vector<T> x1_edges = Gather(x1.typed<T>(), edges.src, e, d1);
  const std::vector<T> g_edges = Gather(grad_out.typed<T>(), edges.dst, e, dout);
  std::vector<T> dx1_edges(grads.grad_x1.present() ? e * d1 : 0);
  GradientOutputs per_edge = grads;
  if (grads.grad_x1.present()) per_edge.grad_x1 = {dx1_edges.data(), x1.dtype, {e, d1}};
  RETURN_IF_ERROR(backend.Backward(plan, weight, {x1_edges.data(), x1.dtype, {e, d1}}, x2,
                                   {g_edges.data(), x1.dtype, {e, dout}}, per_edge, ctx));
  if (grads.grad_x1.present()) ScatterSum(dx1_edges, edges.src, e, d1, grads.grad_x1.typed<T>(), x1.shape[0]);
  return absl::OkStatus();
}

absl::Status HostOnly(const Backend& backend, const char* method) {
  if (backend.memory_space() == MemorySpace::kHost) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat(backend.name(), ": ", method, " is not implemented"));
}

}  // namespace

absl::Status ValidateEdgeForward(const TensorProductPlan& plan, const ConstTensorView& weight,
                                 const ConstTensorView& x1, const ConstTensorView& x2, const EdgeIndex& edges,
                                 const TensorView& out) {
  RETURN_IF_ERROR(ValidateEdgeInputs(plan, weight, x1, x2, edges));
  return CheckRows(out, "out", x1.dtype, plan.dim_out());
}

absl::Status ValidateEdgeBackward(const TensorProductPlan& plan, const ConstTensorView& weight,
                                  const ConstTensorView& x1, const ConstTensorView& x2, const EdgeIndex& edges,
                                  const ConstTensorView& grad_out, const GradientOutputs& grads) {
  RETURN_IF_ERROR(ValidateEdgeInputs(plan, weight, x1, x2, edges));
  RETURN_IF_ERROR(CheckRows(grad_out, "grad_out", x1.dtype, plan.dim_out()));
  const int64_t e = edges.num_edges;
  if (grads.grad_weight.present())
    RETURN_IF_ERROR(CheckTensor(grads.grad_weight, "grad_weight", x1.dtype, WeightShape(plan, e)));
  if (grads.grad_x1.present())
    RETURN_IF_ERROR(CheckTensor(grads.grad_x1, "grad_x1", x1.dtype, {x1.shape[0], plan.dim_in1()}));
  if (grads.grad_x2.present()) RETURN_IF_ERROR(CheckTensor(grads.grad_x2, "grad_x2", x1.dtype, {e, plan.dim_in2()}));
  return absl::OkStatus();
}

absl::Status Backend::EdgeForward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                  ConstTensorView x2, const EdgeIndex& edges, TensorView out,
                                  const ExecutionContext& ctx) {
  RETURN_IF_ERROR(ValidateEdgeForward(plan.plan(), weight, x1, x2, edges, out));
  RETURN_IF_ERROR(HostOnly(*this, "EdgeForward"));
  RETURN_IF_ERROR(CheckEdgeIndices(edges, x1.shape[0], out.shape[0]));
  if (x1.dtype == DType::kFloat32) return HostEdgeForward<float>(*this, plan, weight, x1, x2, edges, out, ctx);
  return HostEdgeForward<double>(*this, plan, weight, x1, x2, edges, out, ctx);
}

absl::Status Backend::EdgeBackward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                   ConstTensorView x2, const EdgeIndex& edges, ConstTensorView grad_out,
                                   const GradientOutputs& grads, const ExecutionContext& ctx) {
  RETURN_IF_ERROR(ValidateEdgeBackward(plan.plan(), weight, x1, x2, edges, grad_out, grads));
  RETURN_IF_ERROR(HostOnly(*this, "EdgeBackward"));
  RETURN_IF_ERROR(CheckEdgeIndices(edges, x1.shape[0], grad_out.shape[0]));
  if (x1.dtype == DType::kFloat32)
    return HostEdgeBackward<float>(*this, plan, weight, x1, x2, edges, grad_out, grads, ctx);
  return HostEdgeBackward<double>(*this, plan, weight, x1, x2, edges, grad_out, grads, ctx);
}

}  // namespace tpserve
