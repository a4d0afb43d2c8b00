#include "server/grpc/health_service.h"

#include <chrono>
#include <string>

namespace tpserve::server {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

HealthServiceImpl::HealthServiceImpl(const std::vector<std::string>& services, OpenStreamLimit* watch_limit)
    : watch_limit_(watch_limit) {
  status_[""] = HealthCheckResponse::NOT_SERVING;
  for (const std::string& name : services) status_[name] = HealthCheckResponse::NOT_SERVING;
}

void HealthServiceImpl::SetServing(bool serving) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [name, status] : status_) status = serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  }
  changed_.notify_all();
}

void HealthServiceImpl::BeginShutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
    for (auto& [name, status] : status_) status = HealthCheckResponse::NOT_SERVING;
  }
  changed_.notify_all();
}

grpc::Status HealthServiceImpl::Check(grpc::ServerContext*, const HealthCheckRequest* request,
                                      HealthCheckResponse* response) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = status_.find(request->service());
  if (it == status_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + request->service() + "'");
  }
  response->set_status(it->second);
  return grpc::Status::OK;
}

grpc::Status HealthServiceImpl::Watch(grpc::ServerContext* context, const HealthCheckRequest* request,
                                      grpc::ServerWriter<HealthCheckResponse>* writer) {
  if (watch_limit_ != nullptr && !watch_limit_->TryAcquire()) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "the server's " + std::to_string(watch_limit_->max_open()) +
                            " Watch/reflection streams are open (--max_open_watch_streams); use Check, or retry later");
  }
  struct Slot {
    OpenStreamLimit* limit;
    ~Slot() {
      if (limit != nullptr) limit->Release();
    }
  } slot{watch_limit_};
  std::unique_lock<std::mutex> lock(mu_);
  auto current = [&] {
    auto it = status_.find(request->service());
    return it == status_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
  };
  for (;;) {
    const Status sent = current();
    const bool last = shutting_down_;
    HealthCheckResponse response;
    response.set_status(sent);
    lock.unlock();
    if (!writer->Write(response) || last) return grpc::Status::OK;
    lock.lock();
    // The timeout only bounds how late a cancelled call is noticed.
    while (current() == sent && !shutting_down_ && !context->IsCancelled()) {
      changed_.wait_for(lock, std::chrono::milliseconds(100));
    }
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
  }
}

}  // namespace tpserve::server
