#include "server/core/memory_budget.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace tpserve::server {

MemoryBudget::MemoryBudget(int64_t limit_bytes, UsageListener listener)
    : limit_(limit_bytes > 0 ? limit_bytes : DefaultLimitBytes()), listener_(std::move(listener)) {
  Report();
}

MemoryBudget::Reservation& MemoryBudget::Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = other.budget_;
    bytes_ = other.bytes_;
    other.budget_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void MemoryBudget::Reservation::Release() {
  if (budget_ != nullptr && bytes_ > 0) budget_->Give(bytes_);
  budget_ = nullptr;
  bytes_ = 0;
}

absl::StatusOr<MemoryBudget::Reservation> MemoryBudget::Reserve(int64_t bytes, absl::string_view what) {
  bytes = std::max<int64_t>(bytes, 0);
  int64_t used = used_.load();
  // Compare-and-swap so that two reservations racing for the last bytes cannot both succeed.
  do {
    if (bytes > limit_ - used) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s needs %d bytes of server memory; %d of the server's %d (--max_memory_bytes) are in use; retry later",
          what, bytes, used, limit_));
    }
  } while (!used_.compare_exchange_weak(used, used + bytes));
  Report();
  Reservation reservation;
  reservation.budget_ = this;
  reservation.bytes_ = bytes;
  return reservation;
}

MemoryBudget::Reservation MemoryBudget::ForceReserve(int64_t bytes) {
  bytes = std::max<int64_t>(bytes, 0);
  used_.fetch_add(bytes);
  Report();
  Reservation reservation;
  reservation.budget_ = this;
  reservation.bytes_ = bytes;
  return reservation;
}

void MemoryBudget::Give(int64_t bytes) {
  used_.fetch_sub(bytes);
  Report();
}

void MemoryBudget::Report() {
  if (listener_) listener_(used_.load(), limit_);
}

int64_t MemoryBudget::DefaultLimitBytes() {
  int64_t ram = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
  // A container's limit (cgroup v2) is what the OOM killer enforces, when it is lower.
  std::ifstream in("/sys/fs/cgroup/memory.max");
  std::string text;
  int64_t cgroup = 0;
  if (in >> text && absl::SimpleAtoi(text, &cgroup) && cgroup > 0) ram = std::min(ram, cgroup);
  return std::max<int64_t>(ram / 2, int64_t{64} << 20);
}

}  // namespace tpserve::server
