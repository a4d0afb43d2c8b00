#include "client/tp-load/load_run.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/lib/channel_target.h"
#include "client/tp-load/workload.h"

namespace tpserve::load {
namespace {

client::ClientOptions ClientOptionsFor(const LoadOptions& o, const std::string& target) {
  client::ClientOptions c;
  c.target = target;
  c.auth_token = o.token;
  c.tls = o.tls;
  c.tls_ca_file = o.tls_ca;
  c.max_message_bytes = 256 << 20;
  c.timeout_seconds = o.deadline_s;
  c.stream_timeout_seconds = 0;  // a stream lasts a level; each request's wait is bounded by the level
  c.policy.max_attempts = o.max_attempts;
  return c;
}

// Each listed server has the model (created when missing, seeded alike) and answers input 0 as
// the CPU backend does; without a list (a resolver URI) the balanced channel stands for them all.
absl::Status PrepareServers(const LoadOptions& o, const std::vector<std::string>& addresses, client::TpClient& balanced,
                            const Workload* workload) {
  for (const std::string& address : addresses) {
    auto one = client::TpClient::Connect(ClientOptionsFor(o, address));
    if (!one.ok()) return one.status();
    if (workload == nullptr) {
      absl::StatusOr<tp::v1::ModelInfo> info = EnsureModel(**one, o);
      if (!info.ok()) return absl::Status(info.status().code(), absl::StrCat(address, ": model ", o.model, ": ", info.status().message()));
      continue;
    }
    absl::StatusOr<tp::v1::ForwardResponse> r = (*one)->Forward(workload->forwards[0]);
    if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat(address, ": forward: ", r.status().message()));
    const double error = ForwardError(*workload, 0, *r);
    if (!(error <= workload->tolerance)) {
      return absl::InternalError(absl::StrFormat(
          "%s: result differs from the CPU backend on the weights tp-load downloaded: relative error %.3g > %.3g "
          "(do all servers hold the same weights for %s?)", address, error, workload->tolerance, o.model));
    }
  }
  if (addresses.empty() && workload == nullptr) return EnsureModel(balanced, o).status();
  return absl::OkStatus();
}

// The model, the weights, the workload, and the first responses checked before anything is timed.
absl::StatusOr<Workload> Setup(const LoadOptions& o, const std::vector<std::string>& addresses,
                               client::TpClient& balanced, RunReport& report) {
  if (absl::Status s = PrepareServers(o, addresses, balanced, nullptr); !s.ok()) return s;
  absl::StatusOr<tp::v1::ModelInfo> info = balanced.GetModel(o.model);
  if (!info.ok()) return info.status();
  absl::StatusOr<std::vector<float>> weights = balanced.DownloadWeights(o.model);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<Workload> workload = BuildWorkload(*info, *weights, o);
  if (!workload.ok()) return workload.status();
  if (absl::Status s = PrepareServers(o, addresses, balanced, &*workload); !s.ok()) return s;
  absl::StatusOr<tp::v1::ForwardResponse> first = balanced.Forward(workload->forwards[0]);
  if (!first.ok()) return first.status();
  report.first_check_error = ForwardError(*workload, 0, *first);
  if (!(report.first_check_error <= workload->tolerance)) {
    return absl::InternalError(absl::StrFormat("server result differs from the CPU backend: relative error %.3g > %.3g",
                                               report.first_check_error, workload->tolerance));
  }
  report.device = first->device();
  report.model = info->name();
  report.irreps = info->spec().irreps_in1();
  report.weight_numel = info->weight_numel();
  report.forward_bytes = workload->forward_bytes;
  report.backward_bytes = workload->backward_bytes;
  report.verify_tolerance = workload->tolerance;
  return workload;
}

void PrintProgress(const Progress& p, bool terminal) {
  std::cerr << absl::StrFormat("%s[%d/%d] %s %-10s %5.1fs %8d done %9.1f req/s%s", terminal ? "\r" : "",
                               p.level_index + 1, p.level_count, absl::StrFormat("%g", p.level), p.phase,
                               p.phase_s, p.completed, p.requests_per_s, terminal ? "   " : "\n")
            << std::flush;
}

void PrintLevel(const LevelResult& l, int index, int count, bool terminal, bool stability_wanted) {
  std::cerr << absl::StrFormat("%s[%d/%d] %g: %.1f req/s, p50 %.3f ms, p99 %.3f ms, %d errors, %d windows%s\n",
                               terminal ? "\r" : "", index + 1, count, l.level, l.stats.requests_per_s,
                               l.stats.latency.p50_ms, l.stats.latency.p99_ms, l.reported.errors(), l.windows.size(),
                               l.stable || !stability_wanted ? "" : " (not stable)");
}

}  // namespace

bool Saturated(const std::vector<LevelResult>& levels) {
  if (levels.size() < 3) return false;
  const size_t n = levels.size();
  double best = 0;
  for (size_t i = 0; i + 2 < n; ++i) best = std::max(best, levels[i].stats.requests_per_s);
  const double previous = levels[n - 2].stats.requests_per_s;
  return previous < 1.05 * best && levels[n - 1].stats.requests_per_s < 1.05 * std::max(best, previous);
}

absl::StatusOr<RunReport> RunLoad(const LoadOptions& o, bool verify_only) {
  RunReport report;
  report.options = o;
  auto balanced = client::TpClient::Connect(ClientOptionsFor(o, o.servers));
  if (!balanced.ok()) return balanced.status();
  report.channel_target = (*balanced)->channel_target();
  report.service_config = (*balanced)->service_config_json();
  report.server_addresses = client::ListedAddresses(o.servers);
  absl::StatusOr<Workload> workload = Setup(o, report.server_addresses, **balanced, report);
  if (!workload.ok()) return workload.status();
  std::cerr << absl::StrFormat(
      "tp-load: model %s (%s, %d weights) on %s via %s, batch %d, %s %s %s; checked against the CPU backend: "
      "relative error %.2e\n", report.model, report.irreps, report.weight_numel, report.device, report.channel_target,
      o.batch, o.precision, Name(o.operation), Name(o.transport), report.first_check_error);
  if (verify_only) return report;
  Recorder recorder;
  ResponseChecker checker(&*workload, o.verify_fraction, o.max_verified);
  DriverContext context{balanced->get(), &*workload, &o, &recorder, &checker};
  LevelRunner runner(context, o.metrics, [&](const Progress& p) {
    if (o.progress) PrintProgress(p, true);
  });
  for (size_t i = 0; i < o.levels.size(); ++i) {
    report.levels.push_back(runner.Run(o.mode, o.levels[i], static_cast<int>(i), static_cast<int>(o.levels.size())));
    PrintLevel(report.levels.back(), static_cast<int>(i), static_cast<int>(o.levels.size()), o.progress,
               o.stability > 0);
    report.issued += report.levels.back().issued;
    if (o.stop_at_saturation && Saturated(report.levels)) {
      report.saturated = true;
      break;
    }
  }
  report.completed = recorder.total_completed();
  report.ok = recorder.total_ok();
  report.verified = checker.checked();
  report.verify_failed = checker.failed();
  report.verify_max_error = checker.max_error();
  return report;
}

}  // namespace tpserve::load
