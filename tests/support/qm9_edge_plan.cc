#include "tests/support/qm9_edge_plan.h"

#include "gtest/gtest.h"
#include "kernels/core/qm9_edge_plan.h"

namespace tpserve::testing {

TensorProductPlan Qm9EdgePlan(int lmax, int mul) {
  absl::StatusOr<TensorProductPlan> plan = MakeQm9EdgePlan(lmax, mul);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return *std::move(plan);
}

}  // namespace tpserve::testing
