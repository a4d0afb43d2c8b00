#include "client/tp-load/stats.h"

#include <algorithm>
#include <cmath>

namespace tpserve::load {

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double n = static_cast<double>(sorted.size());
  // Rank ceil(q n) counted from 1; the small slack keeps q n = 99.0000000001 at rank 99.
  const double rank = std::ceil(q * n - 1e-9);
  const size_t index = static_cast<size_t>(std::clamp(rank, 1.0, n)) - 1;
  return sorted[index];
}

LatencySummary Summarize(std::vector<double> latencies_ms) {
  LatencySummary s;
  if (latencies_ms.empty()) return s;
  std::sort(latencies_ms.begin(), latencies_ms.end());
  s.count = static_cast<int64_t>(latencies_ms.size());
  double sum = 0;
  for (double v : latencies_ms) sum += v;
  s.mean_ms = sum / latencies_ms.size();
  s.min_ms = latencies_ms.front();
  s.p50_ms = Percentile(latencies_ms, 0.50);
  s.p90_ms = Percentile(latencies_ms, 0.90);
  s.p95_ms = Percentile(latencies_ms, 0.95);
  s.p99_ms = Percentile(latencies_ms, 0.99);
  s.p999_ms = Percentile(latencies_ms, 0.999);
  s.max_ms = latencies_ms.back();
  return s;
}

int64_t WindowData::errors() const {
  int64_t sum = 0;
  for (const auto& [code, count] : errors_by_code) sum += count;
  return sum;
}

WindowData Merge(const std::vector<WindowData>& windows) {
  WindowData merged;
  for (const WindowData& w : windows) {
    merged.seconds += w.seconds;
    merged.latencies_ms.insert(merged.latencies_ms.end(), w.latencies_ms.begin(), w.latencies_ms.end());
    for (const auto& [code, count] : w.errors_by_code) merged.errors_by_code[code] += count;
    merged.ok += w.ok;
    merged.samples += w.samples;
    merged.bytes += w.bytes;
    merged.late_sends += w.late_sends;
  }
  return merged;
}

WindowStats Stats(const WindowData& window) {
  WindowStats stats;
  stats.latency = Summarize(window.latencies_ms);
  if (window.seconds > 0) {
    stats.requests_per_s = window.ok / window.seconds;
    stats.samples_per_s = window.samples / window.seconds;
    stats.megabytes_per_s = window.bytes / window.seconds / 1e6;
  }
  return stats;
}

bool Stable(const std::vector<WindowStats>& last_windows, double tolerance) {
  if (last_windows.size() < 3) return false;
  double throughput = 0, latency = 0;
  for (const WindowStats& w : last_windows) {
    if (w.latency.count == 0) return false;
    throughput += w.requests_per_s / last_windows.size();
    latency += w.latency.mean_ms / last_windows.size();
  }
  for (const WindowStats& w : last_windows) {
    if (std::abs(w.requests_per_s - throughput) > tolerance * throughput) return false;
    if (std::abs(w.latency.mean_ms - latency) > tolerance * latency) return false;
  }
  return true;
}

std::string CodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) return kNames[code];
  return "CODE_" + std::to_string(code);
}

void Recorder::Record(double latency_ms, int code, int64_t samples, int64_t bytes, bool late) {
  std::lock_guard<std::mutex> lock(mu_);
  ++completed_;
  ++total_completed_;
  if (late) ++current_.late_sends;
  if (code != 0) {
    ++current_.errors_by_code[CodeName(code)];
    return;
  }
  ++total_ok_;
  ++current_.ok;
  current_.latencies_ms.push_back(latency_ms);
  current_.samples += samples;
  current_.bytes += bytes;
}

WindowData Recorder::Take(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  WindowData taken = std::move(current_);
  current_ = WindowData();
  completed_ = 0;
  taken.seconds = seconds;
  return taken;
}

int64_t Recorder::completed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return completed_;
}

int64_t Recorder::total_ok() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_ok_;
}

int64_t Recorder::total_completed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_completed_;
}

}  // namespace tpserve::load
