// The whole server's configuration: one struct per component (core, transport) plus what main
// wires together. Filled from a JSON config file (keys = flag names) and then from flags given
// on the command line, and printed at start-up.
#pragma once

#include <string>

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
  // "auto" (one worker per GPU, else one CPU worker), "cpu", "cuda" (every GPU) or a
  // comma-separated list such as "cuda:0,cuda:1".
  std::string backend = "auto";
  // Workers (each with its own stream and weight replicas) per GPU. 1 is the design (one worker per
  // GPU); 2 lets one launch's host copies overlap another's compute. CPU backends always get one.
  int workers_per_gpu = 2;  // measured on H100: 2 overlaps one worker's copies with the other's kernels
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

}  // namespace tpserve::server
