// Latency and throughput of one measurement window, and what several windows say together.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace tpserve::load {

// The nearest-rank percentile of ascending `sorted`: the smallest value with at least a fraction
// q of the values at or below it (q in [0, 1]; 0: the minimum, 1: the maximum). 0 when empty.
double Percentile(const std::vector<double>& sorted, double q);

struct LatencySummary {
  int64_t count = 0;
  double mean_ms = 0, min_ms = 0, p50_ms = 0, p90_ms = 0, p95_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
};
LatencySummary Summarize(std::vector<double> latencies_ms);

// What requests completed in one window: latencies of the successful ones, errors by gRPC code.
struct WindowData {
  double seconds = 0;
  std::vector<double> latencies_ms;
  std::map<std::string, int64_t> errors_by_code;  // "UNAVAILABLE" -> count
  int64_t ok = 0, samples = 0, bytes = 0;          // samples and bytes (request + response) of OK ones
  int64_t late_sends = 0;                          // open loop: sent > 1 ms after the scheduled time
  int64_t errors() const;
};
WindowData Merge(const std::vector<WindowData>& windows);

struct WindowStats {
  LatencySummary latency;
  double requests_per_s = 0, samples_per_s = 0, megabytes_per_s = 0;
};
WindowStats Stats(const WindowData& window);

// perf_analyzer's rule: every window's throughput and mean latency within `tolerance` (0.1: 10%)
// of their mean over the windows. False for fewer than 3 windows or windows with no answers.
bool Stable(const std::vector<WindowStats>& last_windows, double tolerance);

// The gRPC name of a status code ("OK", "UNAVAILABLE", ...).
std::string CodeName(int code);

// Thread-safe: load threads record, the controller takes a window's worth at a time.
class Recorder {
 public:
  void Record(double latency_ms, int code, int64_t samples, int64_t bytes, bool late);
  // Everything recorded since the last Take; `seconds` is the window's length.
  WindowData Take(double seconds);
  int64_t completed() const;
  int64_t total_ok() const;
  int64_t total_completed() const;

 private:
  mutable std::mutex mu_;
  WindowData current_;
  int64_t completed_ = 0, total_ok_ = 0, total_completed_ = 0;
};

}  // namespace tpserve::load
