// tp-load: a load tester for tpserve (closed- or open-loop load at one level or a sweep, unary or
// streaming, forward/backward/mixed; latency percentiles from each request's scheduled send time,
// throughput, errors by code, the servers' own breakdown from /metrics, and a sample of responses
// checked against the CPU backend). See docs/LOAD.md.
#include <unistd.h>

#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/tp-load/load_run.h"
#include "wire/malloc_tuning.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051",
          "tpserve address: HOST:PORT, a list HOST:PORT,HOST:PORT (round_robin over all), or a gRPC URI such as "
          "dns:///NAME:PORT or ipv4:127.0.0.1:5001,127.0.0.1:5002");
ABSL_FLAG(std::string, metrics, "",
          "the servers' Prometheus addresses HOST:PORT[,HOST:PORT...] (tpserve --metrics_address), read before and "
          "after each window for the server-side breakdown and per-server counts; empty: none");
ABSL_FLAG(std::string, token, "", "bearer token");
ABSL_FLAG(bool, tls, false, "TLS channel");
ABSL_FLAG(std::string, tls_ca, "", "PEM roots for --tls");
ABSL_FLAG(double, deadline_s, 10, "deadline of each request (seconds)");
ABSL_FLAG(int, max_attempts, 3, "attempts per Forward on UNAVAILABLE, by gRPC's retry policy (1: no retries)");
ABSL_FLAG(std::string, model, "seed", "model to load (created, seeded 0, when missing)");
ABSL_FLAG(std::string, irreps, "128x0e + 128x1e + 128x2e", "irreps_in1 = irreps_in2 = irreps_out of a created model");
ABSL_FLAG(int64_t, batch, 64, "samples per request");
ABSL_FLAG(std::string, precision, "fp32", "fp32 | tf32 | bf16");
ABSL_FLAG(std::string, op, "forward",
          "forward | backward | mixed | echo (Echo calls with a Forward's bytes and no compute: the transport's "
          "ceiling to compare Forward against)");
ABSL_FLAG(std::string, loss, "sum_tanh", "backward's cotangent: sum | sum_tanh | grad_out (a random tensor)");
ABSL_FLAG(double, backward_fraction, 0.5, "--op mixed: share of Backward requests");
ABSL_FLAG(std::string, transport, "unary", "unary | stream (bidirectional Streams share the requests in flight)");
ABSL_FLAG(int, streams, 4, "--transport stream: Stream calls");
ABSL_FLAG(int, distinct_inputs, 4, "different random requests, sent in turn");
ABSL_FLAG(std::string, concurrency, "1",
          "closed loop: requests in flight; one level N, a list A,B,C, or a sweep START:END:xFACTOR / START:END:+STEP");
ABSL_FLAG(std::string, rate, "",
          "open loop (instead of --concurrency): requests/s, a level, a list or a sweep as for --concurrency");
ABSL_FLAG(std::string, arrivals, "poisson", "open loop: poisson | constant gaps between scheduled sends");
ABSL_FLAG(int, max_outstanding, 256, "open loop: most requests in flight (threads, or stream slots)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the inputs and of the Poisson arrivals");
ABSL_FLAG(double, warmup_s, 1, "seconds of load before each level's measurement (not measured)");
ABSL_FLAG(double, duration_s, 2, "length of a measurement window (seconds)");
ABSL_FLAG(int64_t, requests, 0, "when > 0, a window ends after this many responses instead of --duration_s");
ABSL_FLAG(double, stability, 0.10,
          "repeat windows until 3 in a row have throughput and mean latency within this fraction of their mean; "
          "0: one window per level");
ABSL_FLAG(int, max_windows, 10, "most windows per level when they do not settle");
ABSL_FLAG(bool, stop_at_saturation, false, "end a sweep once 2 levels in a row add < 5% to the best throughput");
ABSL_FLAG(double, verify_fraction, 0.01, "share of responses checked against the CPU backend (the first always)");
ABSL_FLAG(int, max_verified, 50, "most responses checked in a run");
ABSL_FLAG(bool, verify_only, false, "check one response of each server and stop");
ABSL_FLAG(std::string, json, "", "write every figure here (JSON)");
ABSL_FLAG(std::string, csv, "", "write one row per level here (CSV)");
ABSL_FLAG(std::string, svg, "", "write latency percentiles against throughput here (SVG)");
ABSL_FLAG(std::string, progress, "auto", "progress line on stderr: auto (when a terminal) | on | off");

namespace tpserve::load {
namespace {

constexpr char kUsage[] = R"(load tester for tpserve.

  tp-load --server HOST:PORT [--concurrency 1:64:x2 | --rate 100:1600:x2] [options]

Closed loop (--concurrency) keeps N requests in flight; open loop (--rate) sends at scheduled times
(--arrivals poisson|constant) and measures latency from each scheduled time. Each level runs
--warmup_s, then windows of --duration_s (or --requests) until 3 agree within --stability.
Examples:
  tp-load --server 127.0.0.1:50051 --metrics 127.0.0.1:9090 --concurrency 1:64:x2 --json out.json --svg out.svg
  tp-load --server 10.0.0.1:50051,10.0.0.2:50051 --rate 500 --arrivals poisson --op mixed
  tp-load --server dns:///tpserve.internal:50051 --transport stream --concurrency 32 --duration_s 10)";

absl::StatusOr<LoadOptions> OptionsFromFlags() {
  LoadOptions o;
  o.servers = absl::GetFlag(FLAGS_server);
  for (absl::string_view m : absl::StrSplit(absl::GetFlag(FLAGS_metrics), ',', absl::SkipWhitespace())) {
    o.metrics.emplace_back(m);
  }
  o.token = absl::GetFlag(FLAGS_token);
  o.tls = absl::GetFlag(FLAGS_tls);
  o.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  o.deadline_s = absl::GetFlag(FLAGS_deadline_s);
  o.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  o.model = absl::GetFlag(FLAGS_model);
  o.irreps = absl::GetFlag(FLAGS_irreps);
  o.batch = absl::GetFlag(FLAGS_batch);
  o.precision = absl::GetFlag(FLAGS_precision);
  if (o.precision != "fp32" && o.precision != "tf32" && o.precision != "bf16") {
    return absl::InvalidArgumentError("--precision: expected fp32, tf32 or bf16");
  }
  absl::StatusOr<Operation> op = ParseOperation(absl::GetFlag(FLAGS_op));
  absl::StatusOr<Transport> transport = ParseTransport(absl::GetFlag(FLAGS_transport));
  absl::StatusOr<Arrivals> arrivals = ParseArrivals(absl::GetFlag(FLAGS_arrivals));
  for (const absl::Status& s : {op.status(), transport.status(), arrivals.status()}) {
    if (!s.ok()) return s;
  }
  o.operation = *op;
  o.transport = *transport;
  o.arrivals = *arrivals;
  o.loss = absl::GetFlag(FLAGS_loss);
  if (o.loss != "sum" && o.loss != "sum_tanh" && o.loss != "grad_out") {
    return absl::InvalidArgumentError("--loss: expected sum, sum_tanh or grad_out");
  }
  o.backward_fraction = absl::GetFlag(FLAGS_backward_fraction);
  o.streams = absl::GetFlag(FLAGS_streams);
  o.distinct_inputs = absl::GetFlag(FLAGS_distinct_inputs);
  o.mode = absl::GetFlag(FLAGS_rate).empty() ? LoopMode::kClosed : LoopMode::kOpen;
  absl::StatusOr<std::vector<double>> levels =
      ParseSweep(o.mode == LoopMode::kClosed ? absl::GetFlag(FLAGS_concurrency) : absl::GetFlag(FLAGS_rate));
  if (!levels.ok()) return levels.status();
  o.levels = *levels;
  o.max_outstanding = absl::GetFlag(FLAGS_max_outstanding);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.warmup_s = absl::GetFlag(FLAGS_warmup_s);
  o.window_s = absl::GetFlag(FLAGS_duration_s);
  o.window_requests = absl::GetFlag(FLAGS_requests);
  o.stability = absl::GetFlag(FLAGS_stability);
  o.max_windows = absl::GetFlag(FLAGS_max_windows);
  o.stop_at_saturation = absl::GetFlag(FLAGS_stop_at_saturation);
  o.verify_fraction = absl::GetFlag(FLAGS_verify_fraction);
  o.max_verified = absl::GetFlag(FLAGS_max_verified);
  o.json_path = absl::GetFlag(FLAGS_json);
  o.csv_path = absl::GetFlag(FLAGS_csv);
  o.svg_path = absl::GetFlag(FLAGS_svg);
  const std::string progress = absl::GetFlag(FLAGS_progress);
  o.progress = progress == "on" || (progress == "auto" && isatty(STDERR_FILENO));
  return o;
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  if (path.empty()) return absl::OkStatus();
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

int Main() {
  absl::StatusOr<LoadOptions> options = OptionsFromFlags();
  if (!options.ok()) {
    std::cerr << "tp-load: " << options.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<RunReport> report = RunLoad(*options, absl::GetFlag(FLAGS_verify_only));
  if (!report.ok()) {
    std::cerr << "tp-load: " << report.status() << "\n";
    return 1;
  }
  if (!absl::GetFlag(FLAGS_verify_only)) std::cout << Table(*report);
  for (const auto& [path, text] : {std::pair{options->json_path, ToJson(*report).dump(2) + "\n"},
                                   std::pair{options->csv_path, Csv(*report)},
                                   std::pair{options->svg_path, Svg(*report)}}) {
    if (absl::Status s = WriteFile(path, text); !s.ok()) {
      std::cerr << "tp-load: " << s.message() << "\n";
      return 1;
    }
  }
  if (report->verify_failed > 0) {
    std::cerr << absl::StrFormat("tp-load: %d of %d checked responses differ from the CPU backend (max relative error %.3g)\n",
                                 report->verify_failed, report->verified, report->verify_max_error);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace tpserve::load

int main(int argc, char** argv) {
  tpserve::KeepLargeBuffersInTheHeap();  // as tpserve does: a client's faults count in its latency
  absl::SetProgramUsageMessage(tpserve::load::kUsage);
  absl::FlagsUsageConfig usage;
  // --help lists this program's flags (by default absl matches file names to the program's name,
  // and "tp-load" names no file).
  usage.contains_help_flags = [](absl::string_view file) { return absl::StrContains(file, "tp-load/"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  return tpserve::load::Main();
}
