// tp-load's configuration: one struct filled from the flags (main.cc), printed into the JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve::load {

enum class LoopMode { kClosed, kOpen };        // fixed concurrency, or requests at scheduled times
enum class Arrivals { kPoisson, kConstant };   // open loop: gaps between scheduled sends
enum class Transport { kUnary, kStream };
// kEcho: Echo calls with a Forward's request and response bytes and no compute (the transport's
// own ceiling, to compare Forward against).
enum class Operation { kForward, kBackward, kMixed, kEcho };

struct LoadOptions {
  // Servers and the channel.
  std::string servers;                // one address, a list, or a gRPC URI (client/lib/channel_target.h)
  std::vector<std::string> metrics;   // /metrics addresses (host:port), one per server; empty: no breakdown
  std::string token, tls_ca;
  bool tls = false;
  double deadline_s = 10;             // per request
  int max_attempts = 3;               // gRPC retries of Forward on UNAVAILABLE (1: none)

  // Work.
  std::string model = "seed";
  std::string irreps = "128x0e + 128x1e + 128x2e";  // of a model tp-load creates
  int64_t batch = 64;
  std::string precision = "fp32";     // fp32 | tf32 | bf16
  Operation operation = Operation::kForward;
  std::string loss = "sum_tanh";      // backward's cotangent: sum | sum_tanh | grad_out
  double backward_fraction = 0.5;     // mixed: share of Backward requests
  Transport transport = Transport::kUnary;
  int streams = 4;                    // stream transport: Stream calls the in-flight requests share
  int distinct_inputs = 4;            // different random requests cycled through

  // Load levels: closed loop at each concurrency, or open loop at each rate (requests/s).
  LoopMode mode = LoopMode::kClosed;
  std::vector<double> levels = {1};
  Arrivals arrivals = Arrivals::kPoisson;
  int max_outstanding = 256;          // open loop: threads sending; a send later than its slot counts as late
  uint64_t seed = 1;

  // Measurement per level.
  double warmup_s = 1;
  double window_s = 2;                // a measurement window lasts this long...
  int64_t window_requests = 0;        // ...or this many completions when > 0
  double stability = 0.10;            // windows agree within this fraction; 0: one window per level
  int max_windows = 10;               // stop repeating here even when not stable
  bool stop_at_saturation = false;    // end a sweep when 2 levels in a row add < 5% throughput
  double verify_fraction = 0.01;      // responses checked against the CPU backend (sampled)
  int max_verified = 50;              // per run

  // Output.
  std::string json_path, csv_path, svg_path;
  bool progress = false;              // a progress line on stderr (on by default when it is a terminal)
};

// "1:64:x2" (1,2,4,..,64), "100:1000:+100", "1,4,16" or "8". Values must be > 0.
absl::StatusOr<std::vector<double>> ParseSweep(const std::string& text);

absl::StatusOr<Operation> ParseOperation(const std::string& text);
absl::StatusOr<Arrivals> ParseArrivals(const std::string& text);
absl::StatusOr<Transport> ParseTransport(const std::string& text);

std::string Name(LoopMode mode);
std::string Name(Arrivals arrivals);
std::string Name(Transport transport);
std::string Name(Operation operation);

}  // namespace tpserve::load
