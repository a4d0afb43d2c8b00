// One load level from start to finish: warm-up (not measured), then measurement windows until three
// agree (stats.h Stable) or --max_windows, with the servers' /metrics and the channel's per-server
// attempts read at every window boundary so that the server's breakdown covers exactly the
// reported windows.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "client/lib/channel_stats.h"
#include "client/tp-load/driver.h"
#include "client/tp-load/metrics_scrape.h"

namespace tpserve::load {

struct LevelResult {
  LoopMode mode = LoopMode::kClosed;
  double level = 0;                  // concurrency or requests/s
  std::vector<WindowStats> windows;  // every window measured
  bool stable = false;
  WindowData reported;               // the last three windows (or fewer) merged
  WindowStats stats;                 // of `reported`
  int64_t issued = 0;                // requests sent at this level, warm-up included
  std::vector<ServerInterval> servers;  // per /metrics address, over the reported windows
  std::vector<std::string> scrape_errors;
  bool have_channel = false;
  client::ChannelCalls channel;      // per-server attempts over the reported windows (channelz)
};

struct Progress {
  int level_index = 0, level_count = 0;
  double level = 0;
  std::string phase;                 // "warm-up", "window 2"
  double phase_s = 0;
  int64_t completed = 0;             // in this phase
  double requests_per_s = 0;
  int64_t errors = 0;
};

class LevelRunner {
 public:
  LevelRunner(const DriverContext& context, std::vector<std::string> metrics_addresses,
              std::function<void(const Progress&)> on_progress)
      : context_(context), metrics_(std::move(metrics_addresses)), on_progress_(std::move(on_progress)) {}

  LevelResult Run(LoopMode mode, double level, int level_index, int level_count);

 private:
  struct Boundary {
    std::vector<Scrape> scrapes;
    std::vector<std::string> errors;
    absl::StatusOr<client::ChannelCalls> channel = absl::UnknownError("not read");
  };
  Boundary ReadBoundary() const;
  // Runs one phase (warm-up or a window) and returns what completed in it.
  WindowData RunPhase(const std::string& phase, double seconds, int64_t requests, Progress progress);
  void Summarize(const std::vector<WindowData>& windows, const std::vector<Boundary>& boundaries,
                 LevelResult& result) const;

  DriverContext context_;
  std::vector<std::string> metrics_;
  std::function<void(const Progress&)> on_progress_;
};

}  // namespace tpserve::load
