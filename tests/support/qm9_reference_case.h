// Loads the e3nn QM9 reference cases (tests/data/qm9/*.json, written by
// tools/qm9_reference/qm9_reference.py) for the CPU and CUDA network tests, and compares a gradient
// with a case's block by block.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "nn/graph_batch.h"
#include "nn/qm9_network.h"

namespace tpserve::testing {

// The folder the cases are read from: $TPSERVE_QM9_DATA_DIR if set (a test binary run away from its
// build tree, e.g. on the GPU machine), else the source tree's tests/data/qm9 (compiled in).
std::filesystem::path Qm9ReferenceDir();
// Every *.json under Qm9ReferenceDir(), sorted; empty when the folder is missing.
std::vector<std::filesystem::path> Qm9ReferenceCaseFiles();

// One case: the parsed JSON (params, targets, predictions, loss, gradient, layout, ...) with its
// network config and graph batch already converted.
struct Qm9ReferenceCase {
  std::string name;
  std::string dtype;   // "float64" or "float32"
  std::string device;  // where e3nn computed it: "cpu" or "cuda"
  nn::Qm9NetworkConfig config;
  nn::GraphBatch batch;
  std::vector<double> params, targets, predictions, gradient;
  double loss = 0;
  nlohmann::json json;  // everything, for the fields above and the structure checks
};

// Reads and parses one case file; an error names the file and what is wrong (unreadable, not
// JSON, another format, a missing field).
absl::StatusOr<Qm9ReferenceCase> LoadQm9ReferenceCase(const std::filesystem::path& file);

// ||got - want|| / ||want|| of each parameter block (Euclidean norms over the block).
struct BlockError {
  std::string name;
  double relative_error = 0;
};
std::vector<BlockError> GradientBlockErrors(const std::vector<nn::ParameterBlock>& layout,
                                            const std::vector<double>& got, const std::vector<double>& want);

}  // namespace tpserve::testing
