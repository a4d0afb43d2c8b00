#include "server/core/model.h"

#include <atomic>
#include <random>

#include "absl/strings/str_cat.h"
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
        absl::StrCat("model name '", name, "': expected 1 to 128 of [A-Za-z0-9_.-], not starting with '.'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorProductPlan> PlanForSpec(const ModelSpec& spec) {
  const std::pair<const char*, const std::string*> fields[] = {
      {"irreps_in1", &spec.irreps_in1}, {"irreps_in2", &spec.irreps_in2}, {"irreps_out", &spec.irreps_out}};
  Irreps parsed[3];
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Irreps> irreps = Irreps::Parse(*fields[i].second);
    if (!irreps.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(fields[i].first, " '", *fields[i].second,
                                                     "': ", irreps.status().message()));
    }
    if (irreps->dim() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(fields[i].first, " is empty; expected irreps such as \"8x0e + 8x1o\""));
    }
    parsed[i] = *std::move(irreps);
  }
  // Serving limits, checked before anything is allocated: a request must never be able to ask the
  // server for terabytes (weights) or hours (3j blocks of huge l).
  for (int i = 0; i < 3; ++i) {
    if (parsed[i].max_l() > kMaxServedL || parsed[i].dim() > kMaxServedDim || parsed[i].size() > 256) {
      return absl::InvalidArgumentError(absl::StrCat(fields[i].first, " '", parsed[i].ToString(),
                                                     "': the server takes l <= ", kMaxServedL, ", dim <= ",
                                                     kMaxServedDim, " and at most 256 terms"));
    }
  }
  double weight_numel = 0;  // in double: mul1 * mul2 * mul_out can exceed int64
  for (const MulIrrep& a : parsed[0].entries()) {
    for (const MulIrrep& b : parsed[1].entries()) {
      for (const MulIrrep& o : parsed[2].entries()) {
        if (IsInProduct(a.ir, b.ir, o.ir)) weight_numel += double(a.mul) * double(b.mul) * double(o.mul);
      }
    }
  }
  if (weight_numel > double(kMaxServedWeightNumel)) {
    return absl::InvalidArgumentError(absl::StrCat("this product has ", weight_numel, " weights; the server takes at most ",
                                                   kMaxServedWeightNumel, " (4 GiB of float32)"));
  }
  absl::StatusOr<TensorProductPlan> plan = TensorProductPlan::FullyConnected(parsed[0], parsed[1], parsed[2]);
  if (!plan.ok()) return absl::InvalidArgumentError(plan.status().message());
  if (plan->paths().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no path: no irrep of irreps_out '", parsed[2].ToString(),
                                                   "' is in the product of '", parsed[0].ToString(), "' and '",
                                                   parsed[1].ToString(), "'"));
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
