// The server's one memory budget (--max_memory_bytes): host memory that clients can make the server
// hold (model weights and their host replicas, weight uploads in progress, Stream results the client
// has not read yet, downloads that keep an old weights version alive, gradient sums) is reserved
// here before it is allocated, and released when it is freed. A reservation past the limit is
// RESOURCE_EXHAUSTED naming what asked and what is in use, so that a client can never drive the
// process into the kernel's OOM killer; everything already admitted keeps running.
//
// The accounting is of what the server chose to hold, not of the process's RSS (gRPC's buffers,
// threads and malloc's caches are outside it), so the limit should leave room below the machine's
// memory: the default is half of RAM (or of the cgroup's memory.max, when lower).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tpserve::server {

class MemoryBudget {
 public:
  // Called after every change with the bytes in use (metrics); may be null. Must be thread-safe.
  using UsageListener = std::function<void(int64_t used_bytes, int64_t limit_bytes)>;

  // `limit_bytes` <= 0: DefaultLimitBytes().
  explicit MemoryBudget(int64_t limit_bytes, UsageListener listener = nullptr);
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Holds bytes of the budget until destroyed (or Release()d). Movable; the budget must outlive it.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& other) noexcept { *this = std::move(other); }
    Reservation& operator=(Reservation&& other) noexcept;
    ~Reservation() { Release(); }
    int64_t bytes() const { return bytes_; }
    void Release();

   private:
    friend class MemoryBudget;
    MemoryBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  // `bytes` of the budget for `what` ("upload of model 'm'"), or RESOURCE_EXHAUSTED when they do
  // not fit under the limit (nothing is reserved then).
  absl::StatusOr<Reservation> Reserve(int64_t bytes, absl::string_view what);
  // Reserves even past the limit: for memory the server must hold regardless (models already on
  // disk at start-up). Later reservations then fail until enough is released.
  Reservation ForceReserve(int64_t bytes);

  int64_t used_bytes() const { return used_.load(); }
  int64_t limit_bytes() const { return limit_; }

  // Half of the machine's RAM, or of the cgroup's memory.max when that is lower.
  static int64_t DefaultLimitBytes();

 private:
  void Give(int64_t bytes);
  void Report();

  const int64_t limit_;
  const UsageListener listener_;
  std::atomic<int64_t> used_{0};
};

}  // namespace tpserve::server
