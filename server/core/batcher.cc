#include "server/core/batcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tpserve::server {

Batcher::Batcher(BatcherConfig config) : config_(config) {}

bool Batcher::Compatible(const PendingRequest& a, const PendingRequest& b) {
  const InferenceRequest& x = a.request;
  const InferenceRequest& y = b.request;
  if (a.model != b.model || x.op != y.op || x.precision != y.precision) return false;
  if (x.op == Op::kForward) return true;
  if (x.weight_grad == WeightGradMode::kReturn || y.weight_grad == WeightGradMode::kReturn) return false;
  return x.grad_out.present() == y.grad_out.present() && x.loss == y.loss && x.want_out == y.want_out &&
         x.want_grad_x1 == y.want_grad_x1 && x.want_grad_x2 == y.want_grad_x2 && x.weight_grad == y.weight_grad;
}

absl::Status Batcher::Enqueue(std::unique_ptr<PendingRequest>& request) {
  bool several = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return absl::UnavailableError("server is shutting down");
    if (static_cast<int64_t>(queue_.size()) >= config_.max_queued_requests) {
      return absl::ResourceExhaustedError(
          absl::StrCat("request queue full (", config_.max_queued_requests, " requests waiting); retry later"));
    }
    if (queued_bytes_ + request->bytes > config_.max_queued_bytes && !queue_.empty()) {
      return absl::ResourceExhaustedError(absl::StrCat("request queue full (", queued_bytes_,
                                                       " bytes of inputs waiting); retry later"));
    }
    queued_bytes_ += request->bytes;
    request->enqueue_time = absl::Now();
    queue_.push_back(std::move(request));
    several = SeveralDevicesWaiting();
  }
  // Workers of several devices wait: wake them all, the one on the least-loaded device takes it
  // (Next) and the others wait again. Workers of one device: any one of them will do.
  if (several) {
    cv_.notify_all();
  } else {
    cv_.notify_one();
  }
  return absl::OkStatus();
}

void Batcher::RegisterWorker(const std::atomic<int>* busy, const std::atomic<int>* device_load) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_.push_back(Waiter{busy, device_load});
}

bool Batcher::LessLoadedWorker(const Waiter& me) const {
  if (me.device_load == nullptr) return false;
  const int mine = me.device_load->load();
  // Every registered worker, waiting here or on its way (a worker not yet started, or back from a
  // launch): a free one comes to the queue soon and takes the work itself.
  for (const Waiter& other : workers_) {
    if (other.busy == me.busy || other.device_load == nullptr || other.device_load == me.device_load) continue;
    if (other.busy != nullptr && other.busy->load() != 0) continue;  // running, claimed, or retired
    if (other.device_load->load() < mine) return true;
  }
  return false;
}

bool Batcher::SeveralDevicesWaiting() const {
  const std::atomic<int>* first = nullptr;
  for (const Waiter* w : waiting_) {
    if (w->device_load == nullptr) continue;
    if (first == nullptr) first = w->device_load;
    if (w->device_load != first) return true;
  }
  return false;
}

Batcher::Work Batcher::Next(std::atomic<int>* busy, std::atomic<int>* device_load) {
  Work work;
  std::unique_lock<std::mutex> lock(mu_);
  auto free = [busy] { return busy == nullptr || busy->load() == 0; };
  auto retired = [busy] { return busy != nullptr && busy->load() >= kRetired; };
  // Registered while this thread is in here, so that busier devices' workers leave work to it.
  const Waiter me{busy, device_load};
  waiting_.push_back(&me);
  struct Unregister {
    Batcher* batcher;
    const Waiter* me;
    ~Unregister() {
      auto& w = batcher->waiting_;
      w.erase(std::find(w.begin(), w.end(), me));
      // A worker that deferred to this one looks again (the lock is still held: no lost wake-up).
      if (!batcher->queue_.empty()) batcher->cv_.notify_all();
    }
  } unregister{this, &me};
  for (;;) {
    cv_.wait(lock, [&] { return shutdown_ || retired() || (!queue_.empty() && free() && !LessLoadedWorker(me)); });
    if (retired()) return work;
    if (queue_.empty()) return work;  // shut down and drained

    // Drop what nobody waits for any more.
    absl::Time now = absl::Now();
    for (auto it = queue_.begin(); it != queue_.end();) {
      const InferenceRequest& r = (*it)->request;
      if (r.deadline <= now || (r.cancelled && r.cancelled->load())) {
        queued_bytes_ -= (*it)->bytes;
        work.expired.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    if (queue_.empty()) {
      if (!work.expired.empty()) return work;
      continue;
    }

    const PendingRequest& head = *queue_.front();
    bool mergeable = !(head.request.op == Op::kBackward && head.request.weight_grad == WeightGradMode::kReturn);
    int64_t samples = 0;
    if (mergeable) {
      for (const auto& pending : queue_) {
        if (Compatible(head, *pending)) samples += pending->batch;
      }
    }
    absl::Time launch_at = head.enqueue_time + absl::Microseconds(config_.max_queue_delay_us);
    if (mergeable && samples < config_.max_batch_size && now < launch_at && !shutdown_) {
      if (!work.expired.empty()) return work;  // answer those first; come back for the batch
      cv_.wait_until(lock, absl::ToChronoTime(launch_at));
      continue;
    }

    // Take the head and, in queue order, every compatible request that still fits.
    std::unique_ptr<PendingRequest> first = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= first->bytes;
    int64_t taken = first->batch;
    if (mergeable) {
      for (auto it = queue_.begin(); it != queue_.end() && taken < config_.max_batch_size;) {
        if (Compatible(*first, **it) && taken + (*it)->batch <= config_.max_batch_size) {
          taken += (*it)->batch;
          queued_bytes_ -= (*it)->bytes;
          work.batch.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
    }
    work.batch.insert(work.batch.begin(), std::move(first));
    if (busy != nullptr) busy->fetch_add(1);
    if (device_load != nullptr) device_load->fetch_add(1);
    // The rest for another worker (which one may take it depends on its device's load).
    if (!queue_.empty() && SeveralDevicesWaiting()) {
      cv_.notify_all();
    } else if (!queue_.empty()) {
      cv_.notify_one();
    }
    return work;
  }
}

void Batcher::Wake() {
  bool waiting;
  {
    // Taking the lock also orders this after a waiter's check of its claim (no lost wake-up).
    std::lock_guard<std::mutex> lock(mu_);
    waiting = !queue_.empty();
  }
  if (waiting) cv_.notify_all();
}

void Batcher::Requeue(std::vector<std::unique_ptr<PendingRequest>> batch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = batch.rbegin(); it != batch.rend(); ++it) {
      queued_bytes_ += (*it)->bytes;
      queue_.push_front(std::move(*it));
    }
  }
  cv_.notify_all();
}

void Batcher::WakeAll() {
  { std::lock_guard<std::mutex> lock(mu_); }  // orders this after a waiter's check (no lost wake-up)
  cv_.notify_all();
}

void Batcher::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

int64_t Batcher::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

}  // namespace tpserve::server
