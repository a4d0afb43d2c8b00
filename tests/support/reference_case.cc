#include "tests/support/reference_case.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tpserve::testing {
namespace {

void Flatten(const nlohmann::json& value, std::vector<double>* out) {
  if (value.is_array()) {
    for (const auto& item : value) Flatten(item, out);
  } else {
    out->push_back(value.get<double>());
  }
}

std::vector<double> Flat(const nlohmann::json& value) {
  std::vector<double> out;
  Flatten(value, &out);
  return out;
}

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path, " (set TPSERVE_REFERENCE_DIR)"));
  nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::DataLossError(absl::StrCat(path, ": not valid JSON"));
  return json;
}

}  // namespace

std::string ReferenceDir() {
  if (const char* env = std::getenv("TPSERVE_REFERENCE_DIR"); env != nullptr && *env != '\0') return env;
  return TPSERVE_REFERENCE_DIR;
}

std::vector<std::string> ReferenceCaseFiles() {
  std::vector<std::string> files;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(ReferenceDir(), error)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, "ref_") && absl::EndsWith(name, ".json")) files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<ReferenceCase> LoadReferenceCase(const std::string& file_name) {
  absl::StatusOr<nlohmann::json> json_or = ReadJson(ReferenceDir() + "/" + file_name);
  if (!json_or.ok()) return json_or.status();
  const nlohmann::json& j = *json_or;
  ReferenceCase c;
  c.name = j.at("name").get<std::string>();
  c.irreps_in1 = j.at("irreps_in1").get<std::string>();
  c.irreps_in2 = j.at("irreps_in2").get<std::string>();
  c.irreps_out = j.at("irreps_out").get<std::string>();
  c.irreps_in1_e3nn = j.at("irreps_in1_e3nn").get<std::string>();
  c.irreps_in2_e3nn = j.at("irreps_in2_e3nn").get<std::string>();
  c.irreps_out_e3nn = j.at("irreps_out_e3nn").get<std::string>();
  c.batch = j.at("batch").get<int>();
  c.weight_numel = j.at("weight_numel").get<int64_t>();
  for (const auto& ins : j.at("instructions")) {
    c.instructions.push_back({ins.at("i_in1").get<int>(), ins.at("i_in2").get<int>(), ins.at("i_out").get<int>(),
                              ins.at("mode").get<std::string>(), ins.at("path_weight").get<double>(),
                              ins.at("path_shape").get<std::vector<int>>()});
  }
  c.weight = Flat(j.at("weight"));
  c.x1 = Flat(j.at("x1"));
  c.x2 = Flat(j.at("x2"));
  c.out = Flat(j.at("out"));
  c.grad_out = Flat(j.at("grad_out"));
  c.grad_weight = Flat(j.at("grad_weight"));
  c.grad_x1 = Flat(j.at("grad_x1"));
  c.grad_x2 = Flat(j.at("grad_x2"));
  c.grad_weight_sum_tanh = Flat(j.at("grad_weight_sum_tanh"));
  return c;
}

absl::StatusOr<std::vector<std::pair<std::string, std::vector<double>>>> LoadReferenceWigner3j() {
  absl::StatusOr<nlohmann::json> json_or = ReadJson(ReferenceDir() + "/wigner3j_l3.json");
  if (!json_or.ok()) return json_or.status();
  std::vector<std::pair<std::string, std::vector<double>>> blocks;
  for (const auto& [key, value] : json_or->items()) blocks.emplace_back(key, Flat(value));
  return blocks;
}

}  // namespace tpserve::testing
