// Dynamic batching: a bounded queue of admitted requests from which workers take batches that
// merge compatible requests (same model instance, same operation and options) into one launch.
//
// A batch is handed out when its samples reach max_batch_size, when its oldest request has waited
// max_queue_delay_us, or at shutdown (which drains: everything admitted is still handed out).
// Requests whose deadline passed or that were cancelled while queued are returned separately,
// never launched. Backward calls that return the weight gradient never merge (the gradient is a
// sum over the whole launch).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/core/model.h"
#include "server/core/request.h"

namespace tpserve::server {

struct PendingRequest {
  InferenceRequest request;
  std::shared_ptr<Model> model;
  ResultCallback done;
  absl::Time enqueue_time;
  int64_t batch = 0;  // samples
  int64_t bytes = 0;  // input bytes held (x1, x2, grad_out)
};

struct BatcherConfig {
  int64_t max_batch_size = 4096;
  int64_t max_queue_delay_us = 0;
  int64_t max_queued_requests = 1024;
  int64_t max_queued_bytes = int64_t{4} << 30;  // input bytes of the waiting requests
};

class Batcher {
 public:
  explicit Batcher(BatcherConfig config);

  // RESOURCE_EXHAUSTED when max_queued_requests (or max_queued_bytes of inputs) are waiting;
  // UNAVAILABLE after Shutdown.
  // On error the request is not taken (its callback is not called).
  absl::Status Enqueue(std::unique_ptr<PendingRequest>& request);

  struct Work {
    std::vector<std::unique_ptr<PendingRequest>> batch;    // launch these together (maybe empty)
    std::vector<std::unique_ptr<PendingRequest>> expired;  // deadline passed or cancelled
  };
  // Blocks until there is work; returns an empty Work (both vectors empty) once shut down and
  // drained. With `busy` (the caller's worker's count of launches running or claimed): takes
  // nothing while it is non-zero (another thread runs a launch on that worker), so queued work goes
  // to a free worker instead, and counts the batch it returns in it under the queue's lock, so a
  // thread that saw the queue empty cannot claim the worker in between. The caller decrements it
  // when the batch is done.
  // A busy count at or above kRetired marks a worker that takes nothing more (its device is lost
  // while others still serve): Next returns an empty Work at once, as after a drained shutdown.
  //
  // Devices (least-loaded dispatch): `device_load` counts the launches running or claimed on the
  // caller's device (shared by the workers of one device; the batcher adds the batch it returns,
  // the caller takes it off when done). A worker takes nothing while another registered worker is
  // free on a device with fewer launches: with two GPUs and two workers each, two batches go to
  // the two GPUs, not to the two streams of one while the other GPU idles.
  Work Next(std::atomic<int>* busy = nullptr, std::atomic<int>* device_load = nullptr);
  // A worker that calls Next with these counters (before its thread starts; they outlive the batcher's use).
  void RegisterWorker(const std::atomic<int>* busy, const std::atomic<int>* device_load);
  static constexpr int kRetired = 1 << 30;
  // Wakes the waiting workers to look again (a worker's claim ended).
  void Wake();
  // Wakes every waiting worker whether or not work is queued (a worker was retired).
  void WakeAll();
  // Puts a batch handed out by Next back at the front of the queue, in its order (its worker was
  // retired before launching it). Admitted work: no limit applies, even after Shutdown.
  void Requeue(std::vector<std::unique_ptr<PendingRequest>> batch);

  // Stops admission and wakes every waiting worker; queued requests are still handed out.
  void Shutdown();
  int64_t queued() const;

  // True when a and b may run in one launch.
  static bool Compatible(const PendingRequest& a, const PendingRequest& b);

 private:
  const BatcherConfig config_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<PendingRequest>> queue_;
  // Workers blocked in Next (their busy and device_load counters): wake-ups go to all of them when
  // they belong to several devices.
  struct Waiter {
    const std::atomic<int>* busy;
    const std::atomic<int>* device_load;
  };
  std::vector<const Waiter*> waiting_;
  std::vector<Waiter> workers_;  // RegisterWorker
  // True when a free registered worker other than `me` is on a device with fewer launches than me's.
  bool LessLoadedWorker(const Waiter& me) const;
  // True when the waiting workers belong to more than one device (then a wake-up goes to all).
  bool SeveralDevicesWaiting() const;
  bool shutdown_ = false;
  int64_t queued_bytes_ = 0;
};

}  // namespace tpserve::server
