// kernels/core/qm9_edge_plan.h's plan for tests: a failure to build it is a test failure.
#pragma once

#include "kernels/core/plan.h"

namespace tpserve::testing {

TensorProductPlan Qm9EdgePlan(int lmax, int mul);

}  // namespace tpserve::testing
