// What every handler shares: the core, the metrics, the auth token and transport limits
// (ServiceEnv), and one RpcScope per call that checks the bearer token, counts the call in flight
// and records its latency and status code when it finishes.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "server/core/inference_core.h"
#include "server/grpc/housekeeper.h"
#include "server/metrics/metrics.h"

namespace tpserve::server {

struct ServiceEnv {
  InferenceCore* core = nullptr;
  Metrics* metrics = nullptr;     // may be null
  std::string auth_token;         // empty: no authentication
  int64_t chunk_elements = 262144;  // default elements per WeightsChunk sent (1 MB of float32)
  int64_t max_chunk_elements = int64_t{1} << 40;  // what fits in one message
  int64_t stream_max_in_flight = 64;  // requests a Stream call may have outstanding
  int64_t max_streams = 256;          // Stream calls open at once (each holds two threads)
  int64_t max_message_bytes = 64 << 20;  // what one message may carry (Echo sizes are checked against it)
  Housekeeper* housekeeper = nullptr;    // upload idle timeouts, idle memory release; may be null
};

// Status messages travel in an HTTP/2 trailer: one that echoes megabytes of client input would be
// lost (the client then sees a different error). Longer messages are cut to this many bytes.
inline constexpr size_t kMaxStatusMessageBytes = 512;

class RpcScope {
 public:
  RpcScope(const ServiceEnv& env, const char* method, grpc::ServerContextBase* context);
  ~RpcScope();

  // UNAUTHENTICATED unless the call carries "authorization: Bearer <token>" (when one is set).
  grpc::Status Authorize() const;

  // The model as the call named it (labelled "-" unless it exists).
  void set_model(const std::string& model) { model_ = model; }
  // The model the call's lookup found (InferenceCore::LeaseBuffers): labels the call by its name.
  void set_model(std::shared_ptr<const Model> model) { found_model_ = std::move(model); }
  // Where the call ran: a device's name, "all" (every device's state: gradients, replicas) or
  // "none" (the default: it reached no device). A failed call's status may name its device
  // (DeviceOf, request.h): Finish(absl::Status) then uses that.
  void set_device(const std::string& device) { device_ = device; }
  // Records the time since the previous mark (or the start) as `stage` (tp_rpc_stage_seconds).
  void MarkStage(const char* stage);
  // Records the call and returns `status`.
  grpc::Status Finish(grpc::Status status);
  grpc::Status Finish(const absl::Status& status);

 private:
  const ServiceEnv& env_;
  const char* method_;
  grpc::ServerContextBase* context_;
  std::string model_, device_ = "none";
  std::shared_ptr<const Model> found_model_;
  std::chrono::steady_clock::time_point start_, mark_;
  bool finished_ = false;
};

}  // namespace tpserve::server
