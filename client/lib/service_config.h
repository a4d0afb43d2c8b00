// The gRPC service config a TpClient's channel runs with: load balancing over every resolved
// server, client-side health checking, and retries of the idempotent calls.
//
// - round_robin: one subchannel per server, calls spread over the READY ones.
// - healthCheckConfig: each subchannel watches grpc.health.v1 on its server for
//   tp.v1.TensorProductService; a server that reports NOT_SERVING (draining at shutdown, or every
//   device lost) is taken out of the rotation until it says SERVING again.
// - retryPolicy on UNAVAILABLE only (the server could not take the call: it was going away, the
//   connection broke, its devices were lost) and only for calls that may run twice without changing
//   anything: Forward, GetModel, ListModels, DownloadWeights. Each attempt is a new pick, so a retry
//   goes to another server under round_robin. Everything else (uploads, Backward, SgdStep, ...) is
//   never retried: the caller sees the UNAVAILABLE.
#pragma once

#include <string>

namespace tpserve::client {

struct ChannelPolicy {
  std::string load_balancing = "round_robin";  // or "pick_first"
  // grpc.health.v1 service watched per server; "" turns health checking off.
  std::string health_service = "tp.v1.TensorProductService";
  int max_attempts = 3;              // per idempotent call, the first included; 1: no retries
  double initial_backoff_s = 0.01;   // gRPC randomizes each backoff in [0, current]
  double max_backoff_s = 0.2;
};

// The service config JSON for `policy` (grpc::ChannelArguments::SetServiceConfigJSON).
std::string ServiceConfigJson(const ChannelPolicy& policy);

}  // namespace tpserve::client
