#include "server/core/model.h"

#include <algorithm>
#include <atomic>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/core/status_macros.h"

namespace tpserve::server {

absl::Status ValidateModelName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 128 && name[0] != '.';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                c == '-' || c == '.');
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("model name '", QuoteForError(name), "': expected 1 to 128 of [A-Za-z0-9_.-], not starting with '.'"));
  }
  return absl::OkStatus();
}

std::string QuoteForError(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  return absl::StrCat(text.substr(0, max_bytes), "... (", text.size(), " bytes)");
}

absl::StatusOr<TensorProductPlan> PlanForSpec(const ModelSpec& spec, const PlanLimits& limits) {
  const std::pair<const char*, const std::string*> fields[] = {
      {"irreps_in1", &spec.irreps_in1}, {"irreps_in2", &spec.irreps_in2}, {"irreps_out", &spec.irreps_out}};
  Irreps parsed[3];
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Irreps> irreps = Irreps::Parse(*fields[i].second);
    if (!irreps.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(fields[i].first, ": ", QuoteForError(irreps.status().message(), 256)));
    }
    if (irreps->dim() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(fields[i].first, " is empty; expected irreps such as \"8x0e + 8x1o\""));
    }
    parsed[i] = *std::move(irreps);
  }
  // Serving limits, checked before anything is allocated: a request must never be able to ask the
  // server for terabytes (weights) or hours (3j blocks of huge l, or millions of paths).
  for (int i = 0; i < 3; ++i) {
    if (parsed[i].max_l() > kMaxServedL || parsed[i].dim() > kMaxServedDim || parsed[i].size() > 256) {
      return absl::InvalidArgumentError(absl::StrCat(fields[i].first, " '", QuoteForError(parsed[i].ToString()),
                                                     "': the server takes l <= ", kMaxServedL, ", dim <= ",
                                                     kMaxServedDim, " and at most 256 terms"));
    }
  }
  // Paths and weights from the terms grouped by irrep: a path per (term1, term2, term_out) whose
  // irreps couple, so per coupling irrep triple it is (terms1 x terms2 x terms_out) paths and
  // (sum mul1 x sum mul2 x sum mul_out) weights. l <= 8 leaves at most 18 irreps per side.
  struct Group {
    Irrep ir;
    double terms = 0, muls = 0;
  };
  auto group = [](const Irreps& irreps) {
    std::vector<Group> groups;
    for (const MulIrrep& term : irreps.entries()) {
      auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.ir == term.ir; });
      if (it == groups.end()) it = groups.insert(groups.end(), Group{term.ir});
      it->terms += 1;
      it->muls += term.mul;
    }
    return groups;
  };
  double paths = 0, weight_numel = 0;  // in double: mul1 * mul2 * mul_out can exceed int64
  for (const Group& a : group(parsed[0])) {
    for (const Group& b : group(parsed[1])) {
      for (const Group& o : group(parsed[2])) {
        if (!IsInProduct(a.ir, b.ir, o.ir)) continue;
        paths += a.terms * b.terms * o.terms;
        weight_numel += a.muls * b.muls * o.muls;
      }
    }
  }
  if (limits.max_paths > 0 && paths > static_cast<double>(limits.max_paths)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "this product has %.0f paths; the server takes at most %d (its --max_paths): merge repeated terms "
        "(\"2x0e + 3x0e\" is \"5x0e\" with fewer paths)",
        paths, limits.max_paths));
  }
  if (weight_numel > double(kMaxServedWeightNumel)) {
    return absl::InvalidArgumentError(absl::StrCat("this product has ", weight_numel, " weights; the server takes at most ",
                                                   kMaxServedWeightNumel, " (4 GiB of float32)"));
  }
  if (paths == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no path: no irrep of irreps_out '", QuoteForError(parsed[2].ToString()), "' is in the product of '",
        QuoteForError(parsed[0].ToString()), "' and '", QuoteForError(parsed[1].ToString()), "'"));
  }
  TensorProductOptions options;
  options.should_stop = limits.should_stop;
  absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FullyConnected(parsed[0], parsed[1], parsed[2], options);
  if (!plan.ok()) {
    if (absl::IsCancelled(plan.status())) return plan.status();
    return absl::InvalidArgumentError(plan.status().message());
  }
  return plan;
}

ModelSpec NormalizedSpec(const TensorProductPlan& plan) {
  return {plan.irreps_in1().ToString(), plan.irreps_in2().ToString(), plan.irreps_out().ToString()};
}

uint64_t Fnv1a64(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t hash = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

std::vector<float> SeededWeights(int64_t weight_numel, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> weights(static_cast<size_t>(weight_numel));
  for (float& w : weights) w = normal(rng);
  return weights;
}

namespace {
std::atomic<uint64_t> next_instance_id{1};
}  // namespace

Model::Model(std::string name, TensorProductPlan plan, WeightsSnapshot weights)
    : name_(std::move(name)),
      plan_(std::move(plan)),
      spec_(NormalizedSpec(plan_)),
      instance_id_(next_instance_id.fetch_add(1)),
      weights_(std::move(weights)) {}

WeightsSnapshot Model::weights() const {
  std::lock_guard<std::mutex> lock(mu_);
  return weights_;
}

void Model::SetWeights(WeightsSnapshot weights) {
  std::lock_guard<std::mutex> lock(mu_);
  weights_ = std::move(weights);
}

ModelInfo Model::Info() const {
  WeightsSnapshot snapshot = weights();
  ModelInfo info;
  info.name = name_;
  info.spec = spec_;
  info.weight_numel = plan_.weight_numel();
  info.dim_in1 = plan_.dim_in1();
  info.dim_in2 = plan_.dim_in2();
  info.dim_out = plan_.dim_out();
  info.num_paths = static_cast<int>(plan_.paths().size());
  info.version = snapshot.version;
  info.weights_fnv1a64 = snapshot.fnv1a64;
  return info;
}

}  // namespace tpserve::server
