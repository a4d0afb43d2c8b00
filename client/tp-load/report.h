// tp-load's results: a table for the terminal, JSON with every figure, CSV (one row per level) and
// an SVG plot of the latency percentiles against throughput over a sweep.
#pragma once

#include <string>
#include <vector>

#include "client/tp-load/options.h"
#include "client/tp-load/runner.h"
#include "nlohmann/json.hpp"

namespace tpserve::load {

struct RunReport {
  LoadOptions options;
  std::string channel_target, service_config;
  std::vector<std::string> server_addresses;  // listed ones; empty for a resolver URI
  std::string model, irreps, device;
  int64_t weight_numel = 0, forward_bytes = 0, backward_bytes = 0;
  double first_check_error = 0;              // the response checked before any timing
  std::vector<LevelResult> levels;
  int verified = 0, verify_failed = 0;
  double verify_max_error = 0, verify_tolerance = 0;
  int64_t issued = 0, completed = 0, ok = 0;  // whole run, warm-up included
  bool saturated = false;                     // the sweep stopped at saturation
};

std::string Table(const RunReport& report);
nlohmann::json ToJson(const RunReport& report);
std::string Csv(const RunReport& report);
// Latency (p50, p90, p99, p99.9; ms) against throughput (requests/s), one point per level.
std::string Svg(const RunReport& report);

// "Nice" axis ticks (1, 2 or 5 times a power of ten) from 0 to at least `max`.
std::vector<double> AxisTicks(double max, int approximate_count);

}  // namespace tpserve::load
