#include "server/server_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace tpserve::server {

std::string ServerConfig::DebugString() const {
  return absl::StrFormat(
      "tpserve config:\n  core: %s\n  transport: %s\n  cuda: %s\n  metrics=%s backend=%s workers_per_gpu=%d demo_model=%s demo_spec=(%s | %s | %s) "
      "demo_seed=%d shutdown_grace_seconds=%g",
      core.DebugString(), transport.DebugString(), DescribeCudaBackendOptions(cuda), metrics_address.empty() ? "off" : metrics_address, backend, workers_per_gpu,
      demo_model.empty() ? "(none)" : demo_model, demo_spec.irreps_in1, demo_spec.irreps_in2, demo_spec.irreps_out,
      demo_seed, shutdown_grace_seconds);
}

absl::Status ApplyConfigFile(const std::string& path, ServerConfig* config) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("config file ", path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": expected a JSON object"));
  }
  try {
    for (const auto& [key, value] : json.items()) {
      if (key == "listen") config->transport.listen_address = value.get<std::string>();
      else if (key == "metrics_address") config->metrics_address = value.get<std::string>();
      else if (key == "model_dir") config->core.model_dir = value.get<std::string>();
      else if (key == "backend") config->backend = value.get<std::string>();
      else if (key == "workers_per_gpu") config->workers_per_gpu = value.get<int>();
      else if (key == "forward_kernel") {
        absl::StatusOr<CudaBackendOptions::ForwardKernel> kernel = ParseForwardKernel(value.get<std::string>());
        if (!kernel.ok()) return absl::InvalidArgumentError(absl::StrCat("config ", kernel.status().message()));
        config->cuda.forward_kernel = *kernel;
      } else if (key == "factored_warp_cols") config->cuda.factored_warp_cols = value.get<int>();
      else if (key == "factored_blocks_per_sm") config->cuda.factored_blocks_per_sm = value.get<int>();
      else if (key == "max_batch_size") config->core.max_batch_size = value.get<int64_t>();
      else if (key == "max_queue_delay_us") config->core.max_queue_delay_us = value.get<int64_t>();
      else if (key == "max_queued_requests") config->core.max_queued_requests = value.get<int64_t>();
      else if (key == "max_queued_bytes") config->core.max_queued_bytes = value.get<int64_t>();
      else if (key == "non_finite") {
        std::string policy = value.get<std::string>();
        if (policy != "reject" && policy != "pass") {
          return absl::InvalidArgumentError("config non_finite: expected \"reject\" or \"pass\"");
        }
        config->core.reject_non_finite = policy == "reject";
      } else if (key == "max_inline_grad_bytes") config->core.max_inline_grad_bytes = value.get<int64_t>();
      else if (key == "max_pinned_host_bytes") config->core.max_pinned_host_bytes = value.get<int64_t>();
      else if (key == "tls_cert") config->transport.tls_cert_file = value.get<std::string>();
      else if (key == "tls_key") config->transport.tls_key_file = value.get<std::string>();
      else if (key == "auth_token") config->transport.auth_token = value.get<std::string>();
      else if (key == "max_message_bytes") config->transport.max_message_bytes = value.get<int64_t>();
      else if (key == "reflection") config->transport.reflection = value.get<bool>();
      else if (key == "chunk_elements") config->transport.chunk_elements = value.get<int64_t>();
      else if (key == "stream_max_in_flight") config->transport.stream_max_in_flight = value.get<int64_t>();
      else if (key == "max_streams") config->transport.max_streams = value.get<int64_t>();
      else if (key == "max_threads") config->transport.max_threads = value.get<int>();
      else if (key == "demo_model") config->demo_model = value.get<std::string>();
      else if (key == "demo_irreps_in1") config->demo_spec.irreps_in1 = value.get<std::string>();
      else if (key == "demo_irreps_in2") config->demo_spec.irreps_in2 = value.get<std::string>();
      else if (key == "demo_irreps_out") config->demo_spec.irreps_out = value.get<std::string>();
      else if (key == "demo_seed") config->demo_seed = value.get<uint64_t>();
      else if (key == "shutdown_grace_seconds") config->shutdown_grace_seconds = value.get<double>();
      else return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": unknown key '", key, "'"));
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace tpserve::server
