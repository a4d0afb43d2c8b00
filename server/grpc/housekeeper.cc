#include "server/grpc/housekeeper.h"

#include "wire/malloc_tuning.h"

#include <cstdio>

namespace tpserve::server {

Housekeeper::Housekeeper(InferenceCore* core, double upload_idle_seconds, double idle_release_seconds)
    : core_(core), upload_idle_seconds_(upload_idle_seconds), idle_release_seconds_(idle_release_seconds) {
  thread_ = std::thread([this] { Run(); });
}

Housekeeper::~Housekeeper() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

Housekeeper::Upload::~Upload() {
  std::lock_guard<std::mutex> lock(keeper_->mu_);
  keeper_->uploads_.erase(this);
}

std::unique_ptr<Housekeeper::Upload> Housekeeper::WatchUpload(grpc::ServerContextBase* context) {
  std::unique_ptr<Upload> upload(new Upload(this, context));
  std::lock_guard<std::mutex> lock(mu_);
  uploads_.insert(upload.get());
  return upload;
}

void Housekeeper::CallStarted() {
  calls_in_progress_.fetch_add(1);
  released_since_activity_.store(false);
}

void Housekeeper::CallFinished() {
  last_activity_ns_.store(NowNs());
  calls_in_progress_.fetch_sub(1);
}

void Housekeeper::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    // A tenth of the shortest duty: an idle upload is dropped at most ~10% late.
    double tick = 0.5;
    if (upload_idle_seconds_ > 0) tick = std::min(tick, upload_idle_seconds_ / 10);
    if (idle_release_seconds_ > 0) tick = std::min(tick, idle_release_seconds_ / 10);
    wake_.wait_for(lock, std::chrono::duration<double>(std::max(tick, 0.01)));
    if (stopping_) break;
    const int64_t now = NowNs();
    if (upload_idle_seconds_ > 0) {
      const int64_t idle_ns = static_cast<int64_t>(upload_idle_seconds_ * 1e9);
      for (Upload* upload : uploads_) {
        // Under mu_: the upload (and its call) cannot end while it is being cancelled.
        if (!upload->dropped_.load() && now - upload->last_progress_ns_.load() > idle_ns) {
          upload->dropped_.store(true);
          uploads_dropped_.fetch_add(1);
          upload->context_->TryCancel();
        }
      }
    }
    // Also while busy: free heap past a bound goes back (a burst of large messages left it).
    if (now - last_trim_check_ns_ > int64_t{500} * 1000 * 1000) {
      last_trim_check_ns_ = now;
      lock.unlock();
      if (TrimHeapIfBloated()) heap_trims_.fetch_add(1);
      lock.lock();
    }
    if (idle_release_seconds_ > 0 && calls_in_progress_.load() == 0 && !released_since_activity_.load() &&
        now - last_activity_ns_.load() > static_cast<int64_t>(idle_release_seconds_ * 1e9)) {
      released_since_activity_.store(true);
      lock.unlock();  // trimming the heap can take milliseconds; uploads must not wait for it
      const size_t free_heap = FreeHeapBytes();
      const size_t pooled = core_->ReleaseIdleMemory();
      idle_releases_.fetch_add(1);
      std::fprintf(stderr, "tpserve: idle for %.3g s: freed %zu MiB of pooled leases, trimmed %zu MiB of free heap\n",
                   idle_release_seconds_, pooled >> 20, free_heap >> 20);
      lock.lock();
    }
  }
}

}  // namespace tpserve::server
