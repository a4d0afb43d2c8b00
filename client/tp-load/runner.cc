#include "client/tp-load/runner.h"

#include <algorithm>
#include <thread>

namespace tpserve::load {

LevelRunner::Boundary LevelRunner::ReadBoundary() const {
  Boundary b;
  for (const std::string& address : metrics_) {
    absl::StatusOr<std::string> text = HttpGet(address, "/metrics", 2.0);
    if (!text.ok()) b.errors.push_back(std::string(text.status().message()));
    b.scrapes.push_back(text.ok() ? ParsePrometheus(*text) : Scrape());
  }
  b.channel = client::ReadChannelCalls(context_.client->channel_target());
  return b;
}

WindowData LevelRunner::RunPhase(const std::string& phase, double seconds, int64_t requests, Progress progress) {
  const Clock::time_point start = Clock::now();
  // A window by request count still ends, at the latest, after 100 times its nominal length.
  const double limit_s = requests > 0 ? std::max(60.0, 100 * seconds) : seconds;
  Clock::time_point next_report = start + std::chrono::seconds(1);
  progress.phase = phase;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const int64_t completed = context_.recorder->completed();
    const bool done = requests > 0 ? completed >= requests : elapsed >= seconds;
    if (done || elapsed >= limit_s) break;
    if (Clock::now() >= next_report && on_progress_) {
      next_report += std::chrono::seconds(1);
      progress.phase_s = elapsed;
      progress.completed = completed;
      progress.requests_per_s = completed / std::max(elapsed, 1e-9);
      on_progress_(progress);
    }
  }
  return context_.recorder->Take(std::chrono::duration<double>(Clock::now() - start).count());
}

LevelResult LevelRunner::Run(LoopMode mode, double level, int level_index, int level_count) {
  const LoadOptions& options = *context_.options;
  LevelResult result;
  result.mode = mode;
  result.level = level;
  Progress progress;
  progress.level_index = level_index;
  progress.level_count = level_count;
  progress.level = level;
  LoadDriver driver(context_, mode, level);
  if (options.warmup_s > 0) RunPhase("warm-up", options.warmup_s, 0, progress);
  context_.recorder->Take(0);
  std::vector<WindowData> windows;
  std::vector<Boundary> boundaries{ReadBoundary()};
  const int max_windows = options.stability > 0 ? std::max(3, options.max_windows) : 1;
  for (int w = 0; w < max_windows; ++w) {
    windows.push_back(RunPhase("window " + std::to_string(w + 1), options.window_s, options.window_requests, progress));
    boundaries.push_back(ReadBoundary());
    result.windows.push_back(Stats(windows.back()));
    if (options.stability <= 0) break;
    std::vector<WindowStats> last(result.windows.end() - std::min<size_t>(3, result.windows.size()),
                                  result.windows.end());
    if (Stable(last, options.stability)) {
      result.stable = true;
      break;
    }
  }
  driver.Stop();
  context_.recorder->Take(0);  // answers to requests in flight at the end: after the last window
  result.issued = driver.issued();
  Summarize(windows, boundaries, result);
  return result;
}

void LevelRunner::Summarize(const std::vector<WindowData>& windows, const std::vector<Boundary>& boundaries,
                            LevelResult& result) const {
  const size_t reported = context_.options->stability > 0 ? std::min<size_t>(3, windows.size()) : windows.size();
  result.reported = Merge(std::vector<WindowData>(windows.end() - reported, windows.end()));
  result.stats = Stats(result.reported);
  const Boundary& first = boundaries[boundaries.size() - 1 - reported];
  const Boundary& last = boundaries.back();
  for (size_t i = 0; i < metrics_.size(); ++i) {
    if (first.scrapes[i].empty() || last.scrapes[i].empty()) {
      ServerInterval missing;
      missing.address = metrics_[i];
      missing.measured = false;
      result.servers.push_back(missing);
      continue;
    }
    result.servers.push_back(Interval(metrics_[i], first.scrapes[i], last.scrapes[i]));
  }
  for (const Boundary* b : {&first, &last}) {
    for (const std::string& e : b->errors) {
      if (std::find(result.scrape_errors.begin(), result.scrape_errors.end(), e) == result.scrape_errors.end()) {
        result.scrape_errors.push_back(e);
      }
    }
  }
  if (first.channel.ok() && last.channel.ok()) {
    result.have_channel = true;
    result.channel = client::Difference(*last.channel, *first.channel);
  }
}

}  // namespace tpserve::load
