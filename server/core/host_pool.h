// Page-locked host memory for request and response tensors, leased per call and reused.
//
// A unary Forward reads its tensors' bytes from the transport straight into a lease, the worker
// copies them to the device from there (no gather into its own staging buffer), and the result
// comes back into another lease that the transport sends from as is (no copy into a message).
// Allocating page-locked memory takes milliseconds, so buffers go back to the pool when a lease
// ends and are handed out again. Past `max_pinned_bytes` in all (or when the backend cannot
// allocate), a lease is ordinary heap memory: slower copies, same results.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/backend.h"

namespace tpserve::server {

class HostPool;

// One leased buffer of at least the requested size; returns to its pool when destroyed.
class HostLease {
 public:
  ~HostLease();
  HostLease(const HostLease&) = delete;
  HostLease& operator=(const HostLease&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  // Page-locked (the backend's copies read and write it directly).
  bool pinned() const { return pinned_; }

 private:
  friend class HostPool;
  HostLease() = default;
  std::shared_ptr<HostPool> pool_;           // keeps the pool alive while any lease is out
  std::unique_ptr<BackendBuffer> buffer_;    // pinned
  std::unique_ptr<char[]> heap_;             // or not
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool pinned_ = false;
};

class HostPool : public std::enable_shared_from_this<HostPool> {
 public:
  using Allocate = std::function<absl::StatusOr<std::unique_ptr<BackendBuffer>>(size_t)>;
  // `allocate`: the backend's AllocateHost (it must stay callable while leases are taken).
  static std::shared_ptr<HostPool> Create(Allocate allocate, size_t max_pinned_bytes);

  // A buffer of at least `bytes` (sizes round up to a power of two, at least 64 KiB).
  std::unique_ptr<HostLease> Acquire(size_t bytes);

  size_t pinned_bytes() const;  // allocated, leased or free
  // Frees the buffers not leased now (an idle server gives its page-locked memory back; the next
  // burst allocates again). Returns the bytes freed.
  size_t ReleaseFree();

 private:
  HostPool(Allocate allocate, size_t max_pinned_bytes) : allocate_(std::move(allocate)), max_pinned_(max_pinned_bytes) {}
  friend class HostLease;
  void Return(std::unique_ptr<BackendBuffer> buffer);

  const Allocate allocate_;
  const size_t max_pinned_;
  mutable std::mutex mu_;
  size_t pinned_total_ = 0;
  std::map<size_t, std::vector<std::unique_ptr<BackendBuffer>>> free_;  // by size class
};

}  // namespace tpserve::server
