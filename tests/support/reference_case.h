// Loads one of e3nn's reference cases (../shared/reference/ref_*.json, float64) for tests.
// The files are read at test time from TPSERVE_REFERENCE_DIR (env var first, then the path
// CMake compiled in); they are never copied into the repository.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve::testing {

struct ReferenceInstruction {
  int i_in1, i_in2, i_out;
  std::string mode;
  double path_weight;
  std::vector<int> path_shape;
};

struct ReferenceCase {
  std::string name;
  std::string irreps_in1, irreps_in2, irreps_out;              // as given to e3nn
  std::string irreps_in1_e3nn, irreps_in2_e3nn, irreps_out_e3nn;  // e3nn's printing
  int batch = 0;
  int64_t weight_numel = 0;
  std::vector<ReferenceInstruction> instructions;
  // Row-major flat arrays: x1 [batch][dim1], x2 [batch][dim2], out/grad_out [batch][dim_out].
  std::vector<double> weight, x1, x2, out, grad_out, grad_weight, grad_x1, grad_x2, grad_weight_sum_tanh;
};

std::string ReferenceDir();
// Names of every ref_*.json in ReferenceDir(), e.g. "ref_lmax3.json", sorted.
std::vector<std::string> ReferenceCaseFiles();
absl::StatusOr<ReferenceCase> LoadReferenceCase(const std::string& file_name);

// e3nn's o3.wigner_3j values for l <= 3, keyed "l1,l2,l3", each flattened [d1][d2][d3].
absl::StatusOr<std::vector<std::pair<std::string, std::vector<double>>>> LoadReferenceWigner3j();

}  // namespace tpserve::testing
