// grpc.health.v1.Health on the synchronous API. gRPC's built-in health service uses the callback
// API, and any callback-API service slows every synchronous unary call of the server by 0.1-0.15
// ms (see compute_service.h), so tpserve serves the protocol itself.
//
// Check answers the overall status ("") or a named service's, NOT_FOUND for others. Watch sends
// the current status (SERVICE_UNKNOWN for an unknown service) and then each change, until the
// client cancels or shutdown begins (it ends with the NOT_SERVING it saw last).
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "server/grpc/stream_limits.h"

namespace tpserve::server {

class HealthServiceImpl final : public grpc::health::v1::Health::Service {
 public:
  // `services`: the names Check and Watch know besides "" (the server as a whole); all start
  // NOT_SERVING.
  // `watch_limit` (may be null: unbounded) bounds the open Watch calls, with reflection's streams
  // (stream_limits.h); one past it answers RESOURCE_EXHAUSTED at once.
  HealthServiceImpl(const std::vector<std::string>& services, OpenStreamLimit* watch_limit = nullptr);

  // Every known service, and the server, SERVING or NOT_SERVING.
  void SetServing(bool serving);
  // Watch calls return (after sending NOT_SERVING); later Watch calls return at once.
  void BeginShutdown();

  grpc::Status Check(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;

  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, Status> status_;  // by service name; "" is the server
  bool shutting_down_ = false;
  OpenStreamLimit* const watch_limit_;
};

}  // namespace tpserve::server
