// The batcher on its own: claimed and retired workers, and batches handed back.
#include "server/core/batcher.h"

#include <atomic>
#include <chrono>
#include <future>
#include <memory>

#include "gtest/gtest.h"
#include "kernels/core/plan.h"

namespace tpserve::server {
namespace {

TEST(BatcherTest, ClaimedWorkerTakesNothingUntilWoken) {
  Batcher batcher(BatcherConfig{});
  auto pending = std::make_unique<PendingRequest>();
  pending->batch = 1;
  ASSERT_TRUE(batcher.Enqueue(pending).ok());
  std::atomic<int> claimed{1};
  auto next = std::async(std::launch::async, [&] { return batcher.Next(&claimed); });
  EXPECT_EQ(next.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
  EXPECT_EQ(batcher.queued(), 1);
  claimed = 0;
  batcher.Wake();
  ASSERT_EQ(next.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(next.get().batch.size(), 1u);
  EXPECT_EQ(batcher.queued(), 0);
  EXPECT_EQ(claimed.load(), 1) << "the batch handed out is counted as the worker's launch";
}

// A batch handed back (its worker was retired before launching it) returns to the front of the
// queue in its order, counted again, and is handed out as it was; a retired worker's Next returns
// nothing at once.
TEST(BatcherTest, Requeue_PutsABatchBackInOrder_AndARetiredWorkerTakesNothing) {
  Batcher batcher(BatcherConfig{});
  auto model = std::make_shared<Model>("m", *TensorProductPlan::FullyConnected("1x0e", "1x0e", "1x0e"),
                                       WeightsSnapshot{});
  for (int i = 0; i < 3; ++i) {
    auto pending = std::make_unique<PendingRequest>();
    pending->batch = 1 + i;
    pending->bytes = 10;
    pending->model = model;
    ASSERT_TRUE(batcher.Enqueue(pending).ok());
  }
  std::atomic<int> busy{0};
  Batcher::Work first = batcher.Next(&busy);
  ASSERT_EQ(first.batch.size(), 3u);
  EXPECT_EQ(batcher.queued(), 0);
  batcher.Requeue(std::move(first.batch));
  EXPECT_EQ(batcher.queued(), 3);
  std::atomic<int> retired{Batcher::kRetired};
  auto nothing = std::async(std::launch::async, [&] { return batcher.Next(&retired); });
  ASSERT_EQ(nothing.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  Batcher::Work none = nothing.get();
  EXPECT_TRUE(none.batch.empty() && none.expired.empty());
  std::atomic<int> other{0};
  Batcher::Work again = batcher.Next(&other);
  ASSERT_EQ(again.batch.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(again.batch[i]->batch, 1 + i);
  EXPECT_EQ(batcher.queued(), 0);
}

}  // namespace
}  // namespace tpserve::server
