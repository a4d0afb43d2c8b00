// The transport's housekeeping thread: drops weight uploads that stopped making progress
// (--upload_idle_seconds), and gives pooled memory back once the server has been idle for a while
// (--idle_release_seconds), so that a burst of large calls does not stay resident for good; and,
// busy or not, trims malloc's free memory when it grows past a bound (malloc_tuning.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "server/core/inference_core.h"

namespace tpserve::server {

class Housekeeper {
 public:
  // Durations <= 0 turn the corresponding duty off. `core` must outlive the housekeeper.
  Housekeeper(InferenceCore* core, double upload_idle_seconds, double idle_release_seconds);
  ~Housekeeper();  // stops and joins the thread
  Housekeeper(const Housekeeper&) = delete;
  Housekeeper& operator=(const Housekeeper&) = delete;

  // An upload in progress, watched from creation to destruction: Progress() after every message
  // read; once no message came for upload_idle_seconds the call is cancelled (its blocked Read
  // returns false) and dropped() turns true.
  class Upload {
   public:
    ~Upload();
    void Progress() { last_progress_ns_.store(NowNs()); }
    bool dropped() const { return dropped_.load(); }

   private:
    friend class Housekeeper;
    Upload(Housekeeper* keeper, grpc::ServerContextBase* context) : keeper_(keeper), context_(context) {}
    Housekeeper* keeper_;
    grpc::ServerContextBase* context_;
    std::atomic<int64_t> last_progress_ns_{NowNs()};
    std::atomic<bool> dropped_{false};
  };
  std::unique_ptr<Upload> WatchUpload(grpc::ServerContextBase* context);

  // Calls in progress: memory is released only after none ran for idle_release_seconds.
  void CallStarted();
  void CallFinished();

  double upload_idle_seconds() const { return upload_idle_seconds_; }
  int64_t uploads_dropped() const { return uploads_dropped_.load(); }
  int64_t idle_releases() const { return idle_releases_.load(); }

 private:
  static int64_t NowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void Run();

  InferenceCore* const core_;
  const double upload_idle_seconds_, idle_release_seconds_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::set<Upload*> uploads_;  // under mu_
  std::atomic<int64_t> calls_in_progress_{0};
  std::atomic<int64_t> last_activity_ns_{NowNs()};
  std::atomic<bool> released_since_activity_{true};
  std::atomic<int64_t> uploads_dropped_{0}, idle_releases_{0}, heap_trims_{0};
  int64_t last_trim_check_ns_ = 0;  // under mu_
  std::thread thread_;
};

}  // namespace tpserve::server
