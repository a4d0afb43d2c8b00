#include "tests/support/qm9_reference_case.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tests/support/random.h"

namespace tpserve::testing {
namespace {

using nlohmann::json;

nn::Qm9NetworkConfig ConfigFrom(const json& j) {
  nn::Qm9NetworkConfig config;
  config.lmax = j.at("lmax");
  config.mul = j.at("mul");
  config.layers = j.at("layers");
  config.num_elements = j.at("num_elements");
  config.num_targets = j.at("num_targets");
  config.num_basis = j.at("num_basis");
  config.max_radius = j.at("max_radius");
  config.radial_hidden = j.at("radial_hidden");
  config.radial_layers = j.at("radial_layers");
  config.num_neighbors = j.at("num_neighbors");
  return config;
}

nn::GraphBatch BatchFrom(const json& j) {
  nn::GraphBatch batch;
  batch.species = j.at("species").get<std::vector<int32_t>>();
  batch.positions = j.at("positions").get<std::vector<double>>();
  batch.edge_src = j.at("edge_src").get<std::vector<int32_t>>();
  batch.edge_dst = j.at("edge_dst").get<std::vector<int32_t>>();
  batch.graph_index = j.at("graph_index").get<std::vector<int32_t>>();
  batch.num_graphs = j.at("num_graphs");
  return batch;
}

}  // namespace

std::filesystem::path Qm9ReferenceDir() {
  if (const char* env = std::getenv("TPSERVE_QM9_DATA_DIR"); env != nullptr && *env != '\0') return env;
  return TPSERVE_QM9_DATA_DIR;
}

std::vector<std::filesystem::path> Qm9ReferenceCaseFiles() {
  std::vector<std::filesystem::path> files;
  const std::filesystem::path dir = Qm9ReferenceDir();
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<Qm9ReferenceCase> LoadQm9ReferenceCase(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return absl::NotFoundError(absl::StrCat(file.string(), ": cannot be read"));
  Qm9ReferenceCase c;
  try {
    c.json = json::parse(in);
    const std::string format = c.json.at("format").get<std::string>();
    if (format != "tpserve-qm9-reference-1") {
      return absl::InvalidArgumentError(
          absl::StrCat(file.string(), ": expected format tpserve-qm9-reference-1, got ", format));
    }
    c.name = c.json.at("name").get<std::string>();
    c.dtype = c.json.at("dtype").get<std::string>();
    c.device = c.json.at("device").get<std::string>();
    c.config = ConfigFrom(c.json.at("config"));
    c.batch = BatchFrom(c.json.at("graphs"));
    c.params = c.json.at("params").get<std::vector<double>>();
    c.targets = c.json.at("targets").get<std::vector<double>>();
    c.predictions = c.json.at("predictions").get<std::vector<double>>();
    c.gradient = c.json.at("gradient").get<std::vector<double>>();
    c.loss = c.json.at("loss").get<double>();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": ", e.what()));
  }
  return c;
}

std::vector<BlockError> GradientBlockErrors(const std::vector<nn::ParameterBlock>& layout,
                                            const std::vector<double>& got, const std::vector<double>& want) {
  std::vector<BlockError> errors;
  for (const nn::ParameterBlock& block : layout) {
    const int64_t end = block.offset + block.numel;
    if (block.offset < 0 || end > static_cast<int64_t>(got.size()) || end > static_cast<int64_t>(want.size())) {
      errors.push_back({block.name, INFINITY});  // a short gradient fails every check
      continue;
    }
    const std::vector<double> a(got.begin() + block.offset, got.begin() + end);
    const std::vector<double> b(want.begin() + block.offset, want.begin() + end);
    errors.push_back({block.name, RelativeError(a, b)});
  }
  return errors;
}

}  // namespace tpserve::testing
