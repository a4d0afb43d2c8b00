#include "server/grpc/rpc_scope.h"

#include "server/grpc/convert.h"

namespace tpserve::server {
namespace {

// Same length, every byte compared: no early exit that a timing attack could measure.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

RpcScope::RpcScope(const ServiceEnv& env, const char* method, grpc::ServerContextBase* context)
    : env_(env), method_(method), context_(context), start_(std::chrono::steady_clock::now()), mark_(start_) {
  if (env_.metrics != nullptr) env_.metrics->RequestStarted(method_);
  if (env_.housekeeper != nullptr) env_.housekeeper->CallStarted();
}

void RpcScope::MarkStage(const char* stage) {
  const auto now = std::chrono::steady_clock::now();
  if (env_.metrics != nullptr) env_.metrics->RpcStage(method_, stage, std::chrono::duration<double>(now - mark_).count());
  mark_ = now;
}

RpcScope::~RpcScope() {
  if (!finished_) Finish(grpc::Status(grpc::StatusCode::INTERNAL, "handler ended without a status"));
  if (env_.housekeeper != nullptr) env_.housekeeper->CallFinished();
}

grpc::Status RpcScope::Authorize() const {
  if (env_.auth_token.empty()) return grpc::Status::OK;
  auto range = context_->client_metadata().equal_range("authorization");
  for (auto it = range.first; it != range.second; ++it) {
    std::string value(it->second.data(), it->second.size());
    if (ConstantTimeEquals(value, "Bearer " + env_.auth_token)) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "expected metadata 'authorization: Bearer <token>' with the server's token");
}

grpc::Status RpcScope::Finish(grpc::Status status) {
  if (status.error_message().size() > kMaxStatusMessageBytes) {
    status = grpc::Status(status.error_code(), StatusMessageForWire(status.error_message()));
  }
  if (finished_) return status;
  finished_ = true;
  if (env_.metrics != nullptr) {
    // Only models that exist become label values (Metrics decides), so a client cannot grow the
    // label set at will.
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    env_.metrics->RequestFinished(method_, found_model_ != nullptr ? found_model_->name() : model_, device_,
                                  StatusCodeName(status.error_code()), seconds);
  }
  return status;
}

grpc::Status RpcScope::Finish(const absl::Status& status) {
  // A call that failed on a device is counted with it (errors per device).
  if (std::string device = DeviceOf(status); !device.empty()) device_ = device;
  return Finish(ToGrpcStatus(status));
}

}  // namespace tpserve::server
