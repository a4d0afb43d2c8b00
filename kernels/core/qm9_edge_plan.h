// The QM9 network's edge tensor product (issue 19; e3nn's Convolution as in e3nn-jax's
// examples/qm9.py) as a plan, for tp-bench --qm9_edge and the kernel tests: x1 = node features
// mul x (0e + 0o + ... + lmax e + lmax o), x2 = spherical harmonics 1x0e + 1x1o (+ 1x2e ...), one
// 'uvu' instruction per (i, j, ir_out) with ir_out in ir1 x ir2 and l_out <= lmax, each into its own
// mul x ir_out output block; weights per edge (per sample).
#pragma once

#include "absl/status/statusor.h"
#include "kernels/core/plan.h"

namespace tpserve {

absl::StatusOr<TensorProductPlan> MakeQm9EdgePlan(int lmax, int mul);

}  // namespace tpserve
