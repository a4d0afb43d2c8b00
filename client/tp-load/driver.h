// The load itself: threads that keep a level of load on the servers until stopped, recording each
// request's latency and outcome.
//
// - Closed loop at concurrency N: N requests in flight at all times; each is sent when one returns.
// - Open loop at rate R: requests are sent at the times an ArrivalSchedule fixed in advance, whether
//   or not earlier ones have returned, by up to --max_outstanding threads; latency counts from the
//   scheduled time, so a server that falls behind shows it in the latency (no coordinated omission),
//   and a send more than 1 ms late is counted as late.
// - Unary calls through TpClient (Forward on its borrowed-bytes path), or bidirectional Streams
//   sharing the in-flight requests, whose responses come back in request order.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "client/lib/tp_client.h"
#include "client/tp-load/arrivals.h"
#include "client/tp-load/options.h"
#include "client/tp-load/stats.h"
#include "client/tp-load/workload.h"

namespace tpserve::load {

using Clock = std::chrono::steady_clock;
constexpr auto kLateSend = std::chrono::milliseconds(1);
inline double MillisecondsSince(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

struct StreamState;    // stream_driver.cc
struct StreamPending;  // stream_driver.cc

struct DriverContext {
  client::TpClient* client = nullptr;
  const Workload* workload = nullptr;
  const LoadOptions* options = nullptr;
  Recorder* recorder = nullptr;
  ResponseChecker* checker = nullptr;
};

class LoadDriver {
 public:
  // Starts the load at `level` (concurrency in a closed loop, requests/s in an open one).
  LoadDriver(const DriverContext& context, LoopMode mode, double level);
  ~LoadDriver();  // Stop()

  // Sends nothing more; waits for the requests in flight (their outcomes are still recorded).
  void Stop();
  int64_t issued() const { return sequence_.load(); }

 private:
  struct Outcome {
    int code = 0;
    int64_t samples = 0, bytes = 0;
  };
  // Which request sequence number `sequence` is: an input index and forward or backward.
  bool IsBackward(uint64_t sequence) const;
  int InputIndex(uint64_t sequence) const;
  Outcome CallUnary(uint64_t sequence);
  void UnaryWorker(ArrivalSchedule* schedule);
  // stream_driver.cc: one Stream at a time (a new one when it breaks), a writer and a reader.
  void StreamWorker(int window, ArrivalSchedule* schedule);
  void WriteStream(client::TpClient::Stream& stream, StreamState& state, int window, ArrivalSchedule* schedule);
  void ReadStream(client::TpClient::Stream& stream, StreamState& state);
  void FailPending(StreamState& state, const grpc::Status& status);
  void RecordStreamResponse(const tp::v1::StreamResponse& response, const StreamPending& pending);
  // Waits until `when` or Stop, whichever is first; false on Stop.
  bool SleepUntil(std::chrono::steady_clock::time_point when) const;

  DriverContext context_;
  std::unique_ptr<ArrivalSchedule> schedule_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<uint64_t> sequence_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace tpserve::load
