// The whole server's configuration: one struct per component (core, transport) plus what main
// wires together. Filled from a JSON config file (keys = flag names) and then from flags given
// on the command line, and printed at start-up.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_backend_options.h"
#include "server/core/config.h"
#include "server/core/model.h"
#include "server/grpc/grpc_server.h"

namespace tpserve::server {

struct ServerConfig {
  CoreConfig core;
  TransportConfig transport;
  std::string metrics_address = "0.0.0.0:9090";  // "" turns the /metrics endpoint off
  bool metrics_auth = false;  // /metrics requires "Authorization: Bearer <auth_token>" (401 otherwise)
  bool metrics_tls = false;   // /metrics over HTTPS with the gRPC certificate (tls_cert, tls_key)
  // A file holding the bearer token (read at start; trailing whitespace dropped), so that the token
  // is not on the command line where `ps` shows it. Exclusive with auth_token.
  std::string auth_token_file;
  // "auto" (one worker per GPU, else one CPU worker), "cpu", "cuda" (every GPU) or a
  // comma-separated list such as "cuda:0,cuda:1".
  std::string backend = "auto";
  // Workers (each with its own stream and weight replicas) per GPU. 1 is the design (one worker per
  // GPU); 2 lets one launch's host copies overlap another's compute. CPU backends always get one.
  int workers_per_gpu = 2;  // measured on H100: 2 overlaps one worker's copies with the other's kernels
  // Where network models (kind qm9) compute: "auto" (the first CUDA device of `backend`, else
  // cpu), "cpu", "cuda" or "cuda:N" (server/network_device.h).
  std::string network_device = "auto";
  // Kernel choices of the CUDA backends (forward_kernel, factored_warp_cols, factored_blocks_per_sm).
  CudaBackendOptions cuda;
  // Created at start-up (seeded) unless the repository already holds a model of that name.
  std::string demo_model;
  ModelSpec demo_spec{"128x0e + 128x1e + 128x2e", "128x0e + 128x1e + 128x2e", "128x0e + 128x1e + 128x2e"};
  uint64_t demo_seed = 0;
  double shutdown_grace_seconds = 30;

  std::string DebugString() const;
};

// Applies the keys present in a JSON object file onto `config`; unknown keys are an error.
absl::Status ApplyConfigFile(const std::string& path, ServerConfig* config);

// "reject" | "pass" -> core.reject_non_finite; anything else is INVALID_ARGUMENT.
absl::Status SetNonFinitePolicy(const std::string& policy, ServerConfig* config);

// Resolves the bearer token: auth_token_file's contents when set (it and auth_token together are
// an error), else auth_token, else `env_token` (the TPSERVE_AUTH_TOKEN variable; may be null).
// Afterwards transport.auth_token holds the token and auth_token_file is cleared.
absl::Status ResolveAuthToken(ServerConfig* config, const char* env_token);

// Every check of a whole configuration, in one place: a value no component can run with is
// INVALID_ARGUMENT naming the key and what it expects (tpserve exits 2 with that line).
absl::Status ValidateConfig(const ServerConfig& config);

// Warnings about a configuration that runs but is unsafe (one line each), such as a bearer token
// sent without TLS.
std::vector<std::string> ConfigWarnings(const ServerConfig& config);

// The names of the flags that a command line sets, the way Abseil reads it: --name=v, --name v
// (the next argument is the value unless the flag is a bool), -name, --name and --noname for
// bools; scanning stops at "--". `is_bool` tells which names are boolean flags. A flag set on the
// command line wins over the config file even when its value equals the default.
std::set<std::string> FlagsOnCommandLine(const std::vector<std::string>& args,
                                         const std::function<bool(const std::string&)>& is_bool);

}  // namespace tpserve::server
