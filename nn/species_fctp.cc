#include "nn/species_fctp.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "nn/typed_views.h"

namespace tpserve::nn {
namespace {

// A plan that no backend prepared: lets a layer be described (sizes, FLOPs) without a backend.
class UnpreparedPlan final : public PreparedPlan {
 public:
  explicit UnpreparedPlan(TensorProductPlan plan) : PreparedPlan(std::move(plan)) {}
};

template <class T>
std::vector<T> GatherRows(const T* source, const std::vector<int32_t>& rows, int64_t width) {
  std::vector<T> out(rows.size() * width);
  for (size_t r = 0; r < rows.size(); ++r) std::copy_n(source + int64_t{rows[r]} * width, width, &out[r * width]);
  return out;
}

template <class T>
void ScatterRows(const std::vector<T>& source, const std::vector<int32_t>& rows, int64_t width, T* out) {
  for (size_t r = 0; r < rows.size(); ++r) std::copy_n(&source[r * width], width, out + int64_t{rows[r]} * width);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const PreparedPlan>> PreparePlanOn(Backend* backend,
                                                                  absl::StatusOr<TensorProductPlan> plan) {
  if (!plan.ok()) return plan.status();
  if (backend == nullptr) return std::shared_ptr<const PreparedPlan>(new UnpreparedPlan(*std::move(plan)));
  ASSIGN_OR_RETURN(std::unique_ptr<PreparedPlan> prepared, backend->Prepare(*plan));
  return std::shared_ptr<const PreparedPlan>(std::move(prepared));
}

absl::StatusOr<SpeciesFctp> SpeciesFctp::Create(const Irreps& irreps_in, int num_elements, const Irreps& irreps_out,
                                                double attr_value, Backend* backend) {
  SpeciesFctp fctp;
  fctp.num_elements_ = num_elements;
  const Irreps attr({{num_elements, Irrep{0, 1}}}), one({{1, Irrep{0, 1}}});
  ASSIGN_OR_RETURN(fctp.dense_,
                   PreparePlanOn(backend, TensorProductPlan::FullyConnected(irreps_in, attr, irreps_out)));
  ASSIGN_OR_RETURN(fctp.species_,
                   PreparePlanOn(backend, TensorProductPlan::FullyConnected(irreps_in, one, irreps_out)));
  const std::vector<PathPlan>& dense = fctp.dense_->plan().paths();
  const std::vector<PathPlan>& species = fctp.species_->plan().paths();
  if (dense.size() != species.size()) {
    return absl::InternalError(absl::StrCat("SpeciesFctp: ", dense.size(), " dense paths but ", species.size(),
                                            " per-species paths"));
  }
  double ratio = 0;
  for (size_t p = 0; p < dense.size(); ++p) {
    const double r = dense[p].path_weight / species[p].path_weight;
    if (dense[p].i_in1 != species[p].i_in1 || dense[p].i_out != species[p].i_out ||
        (p > 0 && std::abs(r - ratio) > 1e-12 * ratio)) {
      return absl::InternalError(absl::StrCat("SpeciesFctp: path ", p, " differs between the two plans"));
    }
    ratio = r;
    fctp.slices_.push_back({dense[p].weight_offset, species[p].weight_offset, dense[p].mul_in1, dense[p].mul_out});
  }
  fctp.x2_value_ = attr_value * ratio;
  return fctp;
}

template <class T>
std::vector<T> SpeciesFctp::SpeciesWeights(const T* weights, int species) const {
  std::vector<T> slice(species_->plan().weight_numel());
  for (const PathSlice& path : slices_) {
    for (int u = 0; u < path.mul_in; ++u) {
      // dense block [mul_in][num_elements][mul_out] -> species block [mul_in][1][mul_out]
      const T* from = weights + path.dense_offset + (int64_t{u} * num_elements_ + species) * path.mul_out;
      std::copy_n(from, path.mul_out, &slice[path.species_offset + int64_t{u} * path.mul_out]);
    }
  }
  return slice;
}

template <class T>
absl::Status SpeciesFctp::Forward(Backend* backend, const T* weights, const T* x, const T* attr,
                                  const NodesBySpecies* by_species, int64_t rows, T* out) const {
  const TensorProductPlan& dense = dense_->plan();
  std::fill_n(out, rows * dense.dim_out(), T(0));
  if (dense.weight_numel() == 0 || rows == 0) return absl::OkStatus();
  if (by_species == nullptr) {
    return backend->Forward(*dense_, InView(weights, {dense.weight_numel()}), InView(x, {rows, dense.dim_in1()}),
                            InView(attr, {rows, dense.dim_in2()}), OutView(out, {rows, dense.dim_out()}), {});
  }
  for (int s = 0; s < num_elements_; ++s) {
    const std::vector<int32_t>& nodes = (*by_species)[s];
    const int64_t n = static_cast<int64_t>(nodes.size());
    if (n == 0) continue;
    const std::vector<T> xs = GatherRows(x, nodes, dense.dim_in1());
    const std::vector<T> x2(n, static_cast<T>(x2_value_));
    const std::vector<T> ws = SpeciesWeights(weights, s);
    std::vector<T> outs(n * dense.dim_out());
    RETURN_IF_ERROR(backend->Forward(*species_, InView(ws.data(), {species_->plan().weight_numel()}),
                                     InView(xs.data(), {n, dense.dim_in1()}), InView(x2.data(), {n, 1}),
                                     OutView(outs.data(), {n, dense.dim_out()}), {}));
    ScatterRows(outs, nodes, dense.dim_out(), out);
  }
  return absl::OkStatus();
}

template <class T>
absl::Status SpeciesFctp::Backward(Backend* backend, const T* weights, const T* x, const T* attr,
                                   const NodesBySpecies* by_species, int64_t rows, const T* grad_out,
                                   T* grad_weights, T* grad_x) const {
  const TensorProductPlan& dense = dense_->plan();
  if (grad_x) std::fill_n(grad_x, rows * dense.dim_in1(), T(0));
  if (dense.weight_numel() == 0 || rows == 0) return absl::OkStatus();
  if (by_species == nullptr) {
    GradientOutputs grads;
    grads.grad_weight = OutView(grad_weights, {dense.weight_numel()});
    grads.accumulate_grad_weight = true;
    if (grad_x) grads.grad_x1 = OutView(grad_x, {rows, dense.dim_in1()});
    return backend->Backward(*dense_, InView(weights, {dense.weight_numel()}), InView(x, {rows, dense.dim_in1()}),
                             InView(attr, {rows, dense.dim_in2()}), InView(grad_out, {rows, dense.dim_out()}),
                             grads, {});
  }
  const int64_t species_numel = species_->plan().weight_numel();
  for (int s = 0; s < num_elements_; ++s) {
    const std::vector<int32_t>& nodes = (*by_species)[s];
    const int64_t n = static_cast<int64_t>(nodes.size());
    if (n == 0) continue;
    const std::vector<T> xs = GatherRows(x, nodes, dense.dim_in1());
    const std::vector<T> gs = GatherRows(grad_out, nodes, dense.dim_out());
    const std::vector<T> x2(n, static_cast<T>(x2_value_));
    const std::vector<T> ws = SpeciesWeights(weights, s);
    std::vector<T> grad_ws(species_numel), grad_xs(grad_x ? n * dense.dim_in1() : 0);
    GradientOutputs grads;
    grads.grad_weight = OutView(grad_ws.data(), {species_numel});
    if (grad_x) grads.grad_x1 = OutView(grad_xs.data(), {n, dense.dim_in1()});
    RETURN_IF_ERROR(backend->Backward(*species_, InView(ws.data(), {species_numel}),
                                      InView(xs.data(), {n, dense.dim_in1()}), InView(x2.data(), {n, 1}),
                                      InView(gs.data(), {n, dense.dim_out()}), grads, {}));
    for (const PathSlice& path : slices_) {
      for (int u = 0; u < path.mul_in; ++u) {
        T* to = grad_weights + path.dense_offset + (int64_t{u} * num_elements_ + s) * path.mul_out;
        const T* from = &grad_ws[path.species_offset + int64_t{u} * path.mul_out];
        for (int w = 0; w < path.mul_out; ++w) to[w] += from[w];
      }
    }
    if (grad_x) ScatterRows(grad_xs, nodes, dense.dim_in1(), grad_x);
  }
  return absl::OkStatus();
}

template absl::Status SpeciesFctp::Forward<float>(Backend*, const float*, const float*, const float*,
                                                  const NodesBySpecies*, int64_t, float*) const;
template absl::Status SpeciesFctp::Forward<double>(Backend*, const double*, const double*, const double*,
                                                   const NodesBySpecies*, int64_t, double*) const;
template absl::Status SpeciesFctp::Backward<float>(Backend*, const float*, const float*, const float*,
                                                   const NodesBySpecies*, int64_t, const float*, float*,
                                                   float*) const;
template absl::Status SpeciesFctp::Backward<double>(Backend*, const double*, const double*, const double*,
                                                    const NodesBySpecies*, int64_t, const double*, double*,
                                                    double*) const;

}  // namespace tpserve::nn
