#include "server/server_config.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace tpserve::server {

std::string ServerConfig::DebugString() const {
  return absl::StrFormat(
      "tpserve config:\n  core: %s\n  transport: %s\n  cuda: %s\n  metrics=%s metrics_auth=%s metrics_tls=%s backend=%s "
      "network_device=%s workers_per_gpu=%d demo_model=%s demo_spec=(%s | %s | %s) demo_seed=%d shutdown_grace_seconds=%g",
      core.DebugString(), transport.DebugString(), DescribeCudaBackendOptions(cuda),
      metrics_address.empty() ? "off" : metrics_address, metrics_auth ? "on" : "off", metrics_tls ? "on" : "off",
      backend, network_device, workers_per_gpu,
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
      else if (key == "network_device") config->network_device = value.get<std::string>();
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
        if (absl::Status s = SetNonFinitePolicy(value.get<std::string>(), config); !s.ok()) {
          return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": ", s.message()));
        }
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
      // ---- startup and security (issue 16: 1, 10, 15) ----
      else if (key == "skip_damaged_models") config->core.skip_damaged_models = value.get<bool>();
      else if (key == "auth_token_file") config->auth_token_file = value.get<std::string>();
      else if (key == "tls_client_ca") config->transport.tls_client_ca_file = value.get<std::string>();
      else if (key == "tls_reload_seconds") config->transport.tls_reload_seconds = value.get<int>();
      else if (key == "metrics_auth") config->metrics_auth = value.get<bool>();
      else if (key == "metrics_tls") config->metrics_tls = value.get<bool>();
      // ---- limits ----
      else if (key == "max_paths") config->core.max_paths = value.get<int64_t>();
      else if (key == "max_memory_bytes") config->core.max_memory_bytes = value.get<int64_t>();
      else if (key == "max_graph_nodes") config->core.max_graph_nodes = value.get<int64_t>();
      else if (key == "max_graph_edges") config->core.max_graph_edges = value.get<int64_t>();
      else if (key == "network_save_every") config->core.network_save_every = value.get<int64_t>();
      else if (key == "upload_idle_seconds") config->transport.upload_idle_seconds = value.get<double>();
      else if (key == "idle_release_seconds") config->transport.idle_release_seconds = value.get<double>();
      else if (key == "max_open_watch_streams") config->transport.max_open_watch_streams = value.get<int64_t>();
      else if (key == "max_concurrent_streams") config->transport.max_concurrent_streams = value.get<int64_t>();
      else if (key == "keepalive_time_seconds") config->transport.keepalive_time_seconds = value.get<double>();
      else if (key == "keepalive_timeout_seconds") config->transport.keepalive_timeout_seconds = value.get<double>();
      else if (key == "min_client_ping_interval_seconds") config->transport.min_client_ping_interval_seconds = value.get<double>();
      else if (key == "max_connection_idle_seconds") config->transport.max_connection_idle_seconds = value.get<double>();
      else if (key == "max_connection_age_seconds") config->transport.max_connection_age_seconds = value.get<double>();
      else if (key == "max_connection_age_grace_seconds") config->transport.max_connection_age_grace_seconds = value.get<double>();
      else return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": unknown key '", key, "'"));
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status SetNonFinitePolicy(const std::string& policy, ServerConfig* config) {
  if (policy != "reject" && policy != "pass") {
    return absl::InvalidArgumentError(absl::StrCat("non_finite: expected reject or pass, got '", policy, "'"));
  }
  config->core.reject_non_finite = policy == "reject";
  return absl::OkStatus();
}

absl::Status ResolveAuthToken(ServerConfig* config, const char* env_token) {
  std::string& token = config->transport.auth_token;
  if (!config->auth_token_file.empty()) {
    if (!token.empty()) {
      return absl::InvalidArgumentError("auth_token and auth_token_file: expected at most one of them");
    }
    std::ifstream in(config->auth_token_file);
    if (!in) {
      return absl::InvalidArgumentError(absl::StrCat("auth_token_file ", config->auth_token_file, ": cannot read"));
    }
    std::stringstream text;
    text << in.rdbuf();
    token = std::string(absl::StripTrailingAsciiWhitespace(text.str()));
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth_token_file ", config->auth_token_file, ": the file is empty"));
    }
    config->auth_token_file.clear();
  } else if (token.empty() && env_token != nullptr) {
    token = env_token;
  }
  return absl::OkStatus();
}

absl::Status ValidateConfig(const ServerConfig& c) {
  auto expect = [](bool ok, const std::string& key, const std::string& expected, const std::string& got) {
    return ok ? absl::OkStatus()
              : absl::InvalidArgumentError(absl::StrCat(key, ": expected ", expected, ", got ", got));
  };
  auto at_least = [&](int64_t value, int64_t min, const char* key) {
    return expect(value >= min, key, absl::StrCat(">= ", min), absl::StrCat(value));
  };
  const TransportConfig& t = c.transport;
  const CoreConfig& core = c.core;
  const absl::Status checks[] = {
      expect(!t.listen_address.empty(), "listen", "HOST:PORT", "\"\""),
      expect(!c.backend.empty(), "backend", "auto, cpu, cuda or cuda:N,...", "\"\""),
      at_least(c.workers_per_gpu, 1, "workers_per_gpu"),
      at_least(core.network_save_every, 1, "network_save_every"),
      at_least(core.max_batch_size, 1, "max_batch_size"),
      at_least(core.max_queue_delay_us, 0, "max_queue_delay_us"),
      at_least(core.max_queued_requests, 1, "max_queued_requests"),
      at_least(core.max_queued_bytes, 1, "max_queued_bytes"),
      at_least(core.max_inline_grad_bytes, 0, "max_inline_grad_bytes"),
      at_least(core.max_pinned_host_bytes, 0, "max_pinned_host_bytes"),
      // gRPC takes an int; below 4 KiB not even a small call's message fits.
      expect(t.max_message_bytes >= 4096 && t.max_message_bytes <= INT32_MAX, "max_message_bytes",
             absl::StrCat("4096 to ", INT32_MAX), absl::StrCat(t.max_message_bytes)),
      at_least(t.chunk_elements, 1, "chunk_elements"),
      at_least(t.stream_max_in_flight, 1, "stream_max_in_flight"),
      at_least(t.max_streams, 1, "max_streams"),
      at_least(t.max_threads, 4, "max_threads"),
      expect(std::isfinite(c.shutdown_grace_seconds) && c.shutdown_grace_seconds >= 0, "shutdown_grace_seconds",
             "a finite number >= 0", absl::StrCat(c.shutdown_grace_seconds)),
      expect(t.tls_cert_file.empty() == t.tls_key_file.empty(), "tls_cert and tls_key", "both or neither",
             t.tls_cert_file.empty() ? "only tls_key" : "only tls_cert"),
      expect(t.tls_client_ca_file.empty() || t.tls(), "tls_client_ca", "tls_cert and tls_key too (mTLS is TLS)",
             "no server certificate"),
      expect(t.tls_reload_seconds >= 1, "tls_reload_seconds", ">= 1", absl::StrCat(t.tls_reload_seconds)),
      expect(!c.metrics_tls || t.tls(), "metrics_tls", "tls_cert and tls_key (the certificate it serves)",
             "no certificate"),
      expect(!c.metrics_auth || !t.auth_token.empty(), "metrics_auth",
             "a token (auth_token, auth_token_file or TPSERVE_AUTH_TOKEN)", "none"),
      expect(c.metrics_address.empty() || c.metrics_address.find(':') != std::string::npos, "metrics_address",
             "HOST:PORT or \"\" (off)", absl::StrCat("'", c.metrics_address, "'")),
  };
  for (const absl::Status& status : checks) {
    if (!status.ok()) return status;
  }
  return ValidateCudaBackendOptions(c.cuda);
}

std::vector<std::string> ConfigWarnings(const ServerConfig& c) {
  std::vector<std::string> warnings;
  if (!c.transport.auth_token.empty() && !c.transport.tls()) {
    warnings.push_back(
        "a bearer token without TLS: anyone on the network path can read it from any call; add --tls_cert/--tls_key");
  }
  if (c.metrics_auth && !c.metrics_tls && !c.metrics_address.empty()) {
    warnings.push_back("--metrics_auth without --metrics_tls: scrapers send the token in clear text");
  }
  return warnings;
}

std::set<std::string> FlagsOnCommandLine(const std::vector<std::string>& args,
                                         const std::function<bool(const std::string&)>& is_bool) {
  std::set<std::string> given;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) continue;  // positional
    const size_t eq = arg.find('=');
    std::string name(arg.substr(0, eq));
    const bool inline_value = eq != absl::string_view::npos;
    if (is_bool(name)) {
      given.insert(name);
    } else if (absl::StartsWith(name, "no") && is_bool(name.substr(2))) {
      given.insert(name.substr(2));
    } else {
      given.insert(name);
      if (!inline_value) ++i;  // "--name value": the next argument is the value, not a flag
    }
  }
  return given;
}

}  // namespace tpserve::server
