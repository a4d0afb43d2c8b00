#include "client/lib/service_config.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace tpserve::client {
namespace {

// The calls that may be retried: they read, or compute without changing the model.
constexpr std::pair<const char*, const char*> kIdempotentMethods[] = {
    {"tp.v1.TensorProductService", "Forward"},
    {"tp.v1.ModelService", "GetModel"},
    {"tp.v1.ModelService", "ListModels"},
    {"tp.v1.ModelService", "DownloadWeights"},
};

std::string Duration(double seconds) { return absl::StrFormat("\"%.3fs\"", std::max(seconds, 0.001)); }

}  // namespace

std::string ServiceConfigJson(const ChannelPolicy& policy) {
  std::vector<std::string> parts;
  parts.push_back(absl::StrFormat("\"loadBalancingConfig\": [{\"%s\": {}}]", policy.load_balancing));
  if (!policy.health_service.empty()) {
    parts.push_back(absl::StrFormat("\"healthCheckConfig\": {\"serviceName\": \"%s\"}", policy.health_service));
  }
  if (policy.max_attempts > 1) {
    std::vector<std::string> names;
    for (const auto& [service, method] : kIdempotentMethods) {
      names.push_back(absl::StrFormat("{\"service\": \"%s\", \"method\": \"%s\"}", service, method));
    }
    // gRPC caps maxAttempts at 5.
    parts.push_back(absl::StrFormat(
        "\"methodConfig\": [{\"name\": [%s], \"retryPolicy\": {\"maxAttempts\": %d, \"initialBackoff\": %s, "
        "\"maxBackoff\": %s, \"backoffMultiplier\": 2, \"retryableStatusCodes\": [\"UNAVAILABLE\"]}}]",
        absl::StrJoin(names, ", "), std::min(policy.max_attempts, 5), Duration(policy.initial_backoff_s),
        Duration(policy.max_backoff_s)));
  }
  return "{" + absl::StrJoin(parts, ", ") + "}";
}

}  // namespace tpserve::client
