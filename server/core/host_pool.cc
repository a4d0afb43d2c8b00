#include "server/core/host_pool.h"

#include <algorithm>

namespace tpserve::server {
namespace {

constexpr size_t kMinClass = size_t{64} << 10;

size_t SizeClass(size_t bytes) {
  size_t size = kMinClass;
  while (size < bytes) size <<= 1;
  return size;
}

}  // namespace

HostLease::~HostLease() {
  if (buffer_) pool_->Return(std::move(buffer_));
}

std::shared_ptr<HostPool> HostPool::Create(Allocate allocate, size_t max_pinned_bytes) {
  return std::shared_ptr<HostPool>(new HostPool(std::move(allocate), max_pinned_bytes));
}

std::unique_ptr<HostLease> HostPool::Acquire(size_t bytes) {
  std::unique_ptr<HostLease> lease(new HostLease());
  const size_t size = SizeClass(std::max<size_t>(bytes, 1));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      lease->buffer_ = std::move(it->second.back());
      it->second.pop_back();
    } else if (pinned_total_ + size <= max_pinned_) {
      pinned_total_ += size;  // reserved now; released below if the allocation fails
    } else {
      lease->heap_.reset(new char[size]);
    }
  }
  if (!lease->buffer_ && !lease->heap_) {
    absl::StatusOr<std::unique_ptr<BackendBuffer>> buffer = allocate_(size);
    if (buffer.ok()) {
      lease->buffer_ = *std::move(buffer);
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      pinned_total_ -= size;
      lease->heap_.reset(new char[size]);
    }
  }
  if (lease->buffer_) {
    lease->pool_ = shared_from_this();
    lease->data_ = lease->buffer_->data();
    lease->pinned_ = true;
  } else {
    lease->data_ = lease->heap_.get();
  }
  lease->bytes_ = size;
  return lease;
}

void HostPool::Return(std::unique_ptr<BackendBuffer> buffer) {
  std::lock_guard<std::mutex> lock(mu_);
  free_[SizeClass(buffer->bytes())].push_back(std::move(buffer));
}

size_t HostPool::ReleaseFree() {
  std::map<size_t, std::vector<std::unique_ptr<BackendBuffer>>> released;
  size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    released.swap(free_);
    for (const auto& [size, buffers] : released) bytes += size * buffers.size();
    pinned_total_ -= bytes;
  }
  return bytes;  // `released` frees them here, outside the lock (unpinning takes milliseconds)
}

size_t HostPool::pinned_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pinned_total_;
}

}  // namespace tpserve::server
