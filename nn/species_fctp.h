// e3nn's FullyConnectedTensorProduct(x, attr -> out) where attr is a one-hot of the species times
// a constant (num_elements x 0e), computed as what it is: a linear map of x chosen by the species.
//
// With attr = a * e_s, path p's output is a * sum_{u,w} W_p[u, s, w] x[u] C_p * c_p: only the weight
// slice of species s takes part. So the nodes are grouped by species and each group goes through
// FCTP(x, 1x0e -> out) with the slice W_p[:, s, :] and x2 = a * c_p / c'_p (c: the path weights of
// the two plans; the ratio is the same for every path, and a * ratio = 1 for a = sqrt(num_elements)).
// 1/num_elements of the dense product's multiply-adds, the same weights and layout; the dense
// product (x2 = attr) stays available for checking.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "kernels/core/irreps.h"
#include "kernels/core/plan.h"

namespace tpserve::nn {

// Node indices of each species: nodes_by_species[s] lists the nodes with species s, ascending.
using NodesBySpecies = std::vector<std::vector<int32_t>>;

// Prepares `plan` on `backend`; backend == nullptr keeps the plan unprepared (describe-only).
absl::StatusOr<std::shared_ptr<const PreparedPlan>> PreparePlanOn(Backend* backend,
                                                                  absl::StatusOr<TensorProductPlan> plan);

class SpeciesFctp {
 public:
  // attr_value: the nonzero entry of the one-hot attributes (sqrt(num_elements) in the network).
  static absl::StatusOr<SpeciesFctp> Create(const Irreps& irreps_in, int num_elements, const Irreps& irreps_out,
                                            double attr_value, Backend* backend);

  // The dense e3nn product: the weight layout ([mul1][num_elements][mul_out] per path) and FLOPs.
  const TensorProductPlan& plan() const { return dense_->plan(); }

  // out = FCTP(weights; x, attr), x: [rows, dim_in]. by_species != nullptr: the per-species
  // computation (attr is then not read); nullptr: the dense product with attr [rows, num_elements].
  template <class T>
  absl::Status Forward(Backend* backend, const T* weights, const T* x, const T* attr,
                       const NodesBySpecies* by_species, int64_t rows, T* out) const;
  // grad_weights += and grad_x = (when not null) for grad_out [rows, dim_out].
  template <class T>
  absl::Status Backward(Backend* backend, const T* weights, const T* x, const T* attr,
                        const NodesBySpecies* by_species, int64_t rows, const T* grad_out, T* grad_weights,
                        T* grad_x) const;

 private:
  struct PathSlice {  // where path p's weights live in the dense and the per-species layouts
    int64_t dense_offset, species_offset;
    int mul_in, mul_out;
  };
  template <class T>
  std::vector<T> SpeciesWeights(const T* weights, int species) const;

  std::shared_ptr<const PreparedPlan> dense_, species_;
  std::vector<PathSlice> slices_;
  int num_elements_ = 0;
  double x2_value_ = 1.0;  // the constant second input of the per-species product
};

}  // namespace tpserve::nn
