#include "server/grpc/stream_limits.h"

#include <cstring>

#include "grpcpp/server_context.h"

namespace tpserve::server {

bool OpenStreamLimit::TryAcquire() {
  int64_t open = open_.load();
  do {
    if (open >= max_open_) return false;
  } while (!open_.compare_exchange_weak(open, open + 1));
  return true;
}

namespace {

// One per reflection call: holds a slot of the limit for the call's life, or, when none was free,
// cancels the call as soon as its metadata arrives (its handler then sees no message and returns).
class ReflectionStreamInterceptor final : public grpc::experimental::Interceptor {
 public:
  ReflectionStreamInterceptor(OpenStreamLimit* limit, grpc::experimental::ServerRpcInfo* info)
      : limit_(limit), info_(info), admitted_(limit->TryAcquire()) {}
  ~ReflectionStreamInterceptor() override {
    if (admitted_) limit_->Release();
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!admitted_ &&
        methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      info_->server_context()->TryCancel();
    }
    methods->Proceed();
  }

 private:
  OpenStreamLimit* const limit_;
  grpc::experimental::ServerRpcInfo* const info_;
  const bool admitted_;
};

class ReflectionStreamLimiter final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ReflectionStreamLimiter(OpenStreamLimit* limit) : limit_(limit) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    // "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" (and v1's, where served).
    if (std::strstr(info->method(), "/grpc.reflection.") != info->method()) return nullptr;
    return new ReflectionStreamInterceptor(limit_, info);
  }

 private:
  OpenStreamLimit* const limit_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeReflectionStreamLimiter(
    OpenStreamLimit* limit) {
  return std::make_unique<ReflectionStreamLimiter>(limit);
}

}  // namespace tpserve::server
