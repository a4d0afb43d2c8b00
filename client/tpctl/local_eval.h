// The local `tpctl eval` and `tpctl bench`: run a tensor product on a backend of this machine.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/npy.h"
#include "kernels/core/backend.h"

namespace tpserve {

struct EvalInputs {
  std::string irreps_in1, irreps_in2, irreps_out;
  NpyArray weights, x1, x2;
  std::optional<NpyArray> grad_out;  // vector-Jacobian product from this grad_out
  std::optional<Loss> loss;          // or the gradient of a loss (weights only)
  Precision precision = Precision::kFp32;
};

struct EvalOutputs {
  NpyArray out;
  std::optional<NpyArray> grad_weight, grad_x1, grad_x2;
};

// Checks shapes against the plan (one-line INVALID_ARGUMENT naming the expected shape), copies
// the inputs into the backend's memory, runs, and copies back. Outputs keep the inputs' dtype;
// a backend without float64 computes in float32 and converts back.
absl::StatusOr<EvalOutputs> EvalOnBackend(Backend& backend, const EvalInputs& inputs);

}  // namespace tpserve
