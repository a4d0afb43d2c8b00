// The page-locked host pool: leases reused by size class, page-locked memory bounded, and ordinary
// memory when the limit or the allocator says no.
#include "server/core/host_pool.h"

#include <memory>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace tpserve::server {
namespace {

TEST(HostPoolTest, LeasesAreReusedAndPageLockedOnlyUpToTheLimit) {
  int allocations = 0;
  std::shared_ptr<HostPool> pool = HostPool::Create(
      [&](size_t bytes) -> absl::StatusOr<std::unique_ptr<BackendBuffer>> {
        ++allocations;
        return CpuBackend().AllocateHost(bytes);
      },
      size_t{1} << 20);
  void* first_data = nullptr;
  {
    std::unique_ptr<HostLease> a = pool->Acquire(100000);  // class 128 KiB
    EXPECT_TRUE(a->pinned());
    EXPECT_GE(a->bytes(), 100000u);
    first_data = a->data();
  }
  std::unique_ptr<HostLease> b = pool->Acquire(120000);  // same class: the buffer comes back
  EXPECT_EQ(b->data(), first_data);
  EXPECT_EQ(allocations, 1);
  std::unique_ptr<HostLease> c = pool->Acquire(700000);  // 1 MiB class: past the 1 MiB limit
  EXPECT_FALSE(c->pinned());
  EXPECT_GE(c->bytes(), 700000u);
  static_cast<char*>(c->data())[699999] = 1;  // ordinary memory, but memory all the same
  EXPECT_EQ(pool->pinned_bytes(), size_t{128} << 10);
  std::shared_ptr<HostPool> failing = HostPool::Create(
      [](size_t) -> absl::StatusOr<std::unique_ptr<BackendBuffer>> { return absl::ResourceExhaustedError("no"); },
      size_t{1} << 30);
  std::unique_ptr<HostLease> d = failing->Acquire(1000);
  EXPECT_FALSE(d->pinned());
  EXPECT_EQ(failing->pinned_bytes(), 0u);
}

}  // namespace
}  // namespace tpserve::server
