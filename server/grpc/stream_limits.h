// A separate bound for the long-lived streams that need no token: grpc.health.v1.Health/Watch and
// server reflection. On the synchronous server each open one holds a thread of the same pool that
// tp.v1 calls run on (--max_threads), so without a bound 20 Watch streams took every thread of a
// 16-thread server and ListModels failed. At most --max_open_watch_streams of them are open at
// once (and never more than a quarter of the threads); one more Watch answers RESOURCE_EXHAUSTED,
// one more reflection stream is cancelled before its handler reads anything.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "grpcpp/support/server_interceptor.h"

namespace tpserve::server {

class OpenStreamLimit {
 public:
  explicit OpenStreamLimit(int64_t max_open) : max_open_(max_open) {}
  // True (and counted) when one more stream may open; Release() each true once it ends.
  bool TryAcquire();
  void Release() { open_.fetch_sub(1); }
  int64_t max_open() const { return max_open_; }
  int64_t open() const { return open_.load(); }

 private:
  const int64_t max_open_;
  std::atomic<int64_t> open_{0};
};

// Counts reflection streams against `limit` (which must outlive the server) and cancels those
// past it. Other methods get no interceptor at all.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeReflectionStreamLimiter(
    OpenStreamLimit* limit);

}  // namespace tpserve::server
