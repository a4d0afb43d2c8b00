#include "client/tp-load/report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace tpserve::load {
namespace {

std::string LevelName(const LevelResult& level) {
  return level.mode == LoopMode::kClosed ? absl::StrFormat("c=%g", level.level)
                                         : absl::StrFormat("%g/s", level.level);
}

std::string Errors(const WindowData& data) {
  std::vector<std::string> parts;
  for (const auto& [code, count] : data.errors_by_code) parts.push_back(absl::StrCat(code, ":", count));
  return parts.empty() ? "0" : absl::StrJoin(parts, ",");
}

nlohmann::json LatencyJson(const LatencySummary& l) {
  return {{"count", l.count}, {"mean", l.mean_ms}, {"min", l.min_ms}, {"p50", l.p50_ms}, {"p90", l.p90_ms},
          {"p95", l.p95_ms},  {"p99", l.p99_ms},   {"p99_9", l.p999_ms}, {"max", l.max_ms}};
}

nlohmann::json ServerJson(const ServerInterval& s) {
  return {{"address", s.address},
          {"measured", s.measured},
          {"requests_by_method_code", s.requests_by_method_code},
          {"forward_ok", s.forward_ok},
          {"backward_ok", s.backward_ok},
          {"launches", s.launches},
          {"queue_ms_mean", s.queue_ms_mean},
          {"compute_ms_mean", s.compute_ms_mean},
          {"rpc_ms_mean", s.rpc_ms_mean},
          {"batch_samples_mean", s.batch_samples_mean},
          {"batch_requests_mean", s.batch_requests_mean}};
}

nlohmann::json ChannelJson(const client::ChannelCalls& c) {
  nlohmann::json by_address = nlohmann::json::object();
  for (const auto& [address, n] : c.by_address) {
    by_address[address] = {{"attempts", n.started}, {"succeeded", n.succeeded}, {"failed", n.failed}};
  }
  return {{"calls", c.calls.started},
          {"calls_succeeded", c.calls.succeeded},
          {"calls_failed", c.calls.failed},
          {"attempts", c.attempts()},
          {"retries", std::max<int64_t>(0, c.attempts() - c.calls.started)},
          {"by_address", by_address}};
}

nlohmann::json LevelJson(const LevelResult& level) {
  nlohmann::json windows = nlohmann::json::array();
  for (const WindowStats& w : level.windows) {
    windows.push_back({{"requests_per_s", w.requests_per_s}, {"latency_ms", LatencyJson(w.latency)}});
  }
  nlohmann::json servers = nlohmann::json::array();
  for (const ServerInterval& s : level.servers) servers.push_back(ServerJson(s));
  nlohmann::json json = {
      {"mode", Name(level.mode)},
      {"level", level.level},
      {level.mode == LoopMode::kClosed ? "concurrency" : "rate_per_s", level.level},
      {"seconds", level.reported.seconds},
      {"ok", level.reported.ok},
      {"errors", level.reported.errors()},
      {"errors_by_code", level.reported.errors_by_code},
      {"late_sends", level.reported.late_sends},
      {"requests_per_s", level.stats.requests_per_s},
      {"samples_per_s", level.stats.samples_per_s},
      {"megabytes_per_s", level.stats.megabytes_per_s},
      {"latency_ms", LatencyJson(level.stats.latency)},
      {"stable", level.stable},
      {"windows", windows},
      {"issued", level.issued},
      {"servers", servers},
      {"scrape_errors", level.scrape_errors}};
  if (!level.servers.empty()) json["server_total"] = ServerJson(Total(level.servers));
  if (level.have_channel) json["channel"] = ChannelJson(level.channel);
  return json;
}

nlohmann::json OptionsJson(const LoadOptions& o) {
  return {{"servers", o.servers},       {"metrics", o.metrics},     {"model", o.model},
          {"batch", o.batch},           {"precision", o.precision}, {"op", Name(o.operation)},
          {"loss", o.loss},             {"backward_fraction", o.backward_fraction},
          {"transport", Name(o.transport)}, {"streams", o.streams}, {"mode", Name(o.mode)},
          {"levels", o.levels},         {"arrivals", Name(o.arrivals)}, {"max_outstanding", o.max_outstanding},
          {"warmup_s", o.warmup_s},     {"window_s", o.window_s},   {"window_requests", o.window_requests},
          {"stability", o.stability},   {"max_windows", o.max_windows}, {"deadline_s", o.deadline_s},
          {"max_attempts", o.max_attempts}, {"seed", o.seed},       {"verify_fraction", o.verify_fraction}};
}

// Several servers: each one's share from its /metrics, and the channel's attempts per address.
std::string PerServerLines(const LevelResult& l) {
  std::string out;
  for (const ServerInterval& s : l.servers) {
    if (!s.measured) {
      absl::StrAppendFormat(&out, "    %-21s /metrics unreachable at a window boundary\n", s.address);
      continue;
    }
    absl::StrAppendFormat(&out, "    %-21s %8.0f Forward OK %8.0f Backward OK  queue %.3f ms  compute %.3f ms  batch %.1f\n",
                          s.address, s.forward_ok, s.backward_ok, s.queue_ms_mean, s.compute_ms_mean,
                          s.batch_samples_mean);
  }
  if (l.have_channel) {
    for (const auto& [address, n] : l.channel.by_address) {
      absl::StrAppendFormat(&out, "    %-26s %8d attempts %6d failed\n", address, n.started, n.failed);
    }
    absl::StrAppendFormat(&out, "    channel: %d calls, %d retried attempts\n", l.channel.calls.started,
                          std::max<int64_t>(0, l.channel.attempts() - l.channel.calls.started));
  }
  return out;
}

}  // namespace

std::string Table(const RunReport& r) {
  std::string out = absl::StrFormat(
      "%-9s %9s %10s %8s %8s %8s %8s %8s %8s %8s %7s %7s %6s %s\n", "level", "req/s", "samples/s", "MB/s", "p50 ms",
      "p90 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms", "queue", "compute", "batch", "errors");
  for (const LevelResult& l : r.levels) {
    const LatencySummary& lat = l.stats.latency;
    ServerInterval total = Total(l.servers);
    const bool server = !l.servers.empty();
    absl::StrAppendFormat(&out, "%-9s %9.1f %10.0f %8.1f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %7s %7s %6s %s%s\n",
                          LevelName(l), l.stats.requests_per_s, l.stats.samples_per_s, l.stats.megabytes_per_s,
                          lat.p50_ms, lat.p90_ms, lat.p95_ms, lat.p99_ms, lat.p999_ms, lat.max_ms,
                          server ? absl::StrFormat("%.3f", total.queue_ms_mean) : "-",
                          server ? absl::StrFormat("%.3f", total.compute_ms_mean) : "-",
                          server ? absl::StrFormat("%.1f", total.batch_samples_mean) : "-", Errors(l.reported),
                          l.stable || r.options.stability <= 0 ? "" : "  (not stable)");
    if (l.servers.size() > 1 || l.channel.by_address.size() > 1) out += PerServerLines(l);
  }
  return out;
}

nlohmann::json ToJson(const RunReport& r) {
  nlohmann::json levels = nlohmann::json::array();
  for (const LevelResult& l : r.levels) levels.push_back(LevelJson(l));
  return {{"options", OptionsJson(r.options)},
          {"channel_target", r.channel_target},
          {"service_config", nlohmann::json::parse(r.service_config, nullptr, false)},
          {"server_addresses", r.server_addresses},
          {"model", {{"name", r.model}, {"irreps", r.irreps}, {"weight_numel", r.weight_numel}}},
          {"device", r.device},
          {"forward_bytes", r.forward_bytes},
          {"backward_bytes", r.backward_bytes},
          {"verify", {{"first_response_error", r.first_check_error}, {"checked", r.verified},
                      {"failed", r.verify_failed}, {"max_relative_error", r.verify_max_error},
                      {"tolerance", r.verify_tolerance}}},
          {"totals", {{"issued", r.issued}, {"completed", r.completed}, {"ok", r.ok}}},
          {"saturated", r.saturated},
          {"levels", levels}};
}

std::string Csv(const RunReport& r) {
  std::string out =
      "mode,level,seconds,ok,errors,requests_per_s,samples_per_s,megabytes_per_s,mean_ms,p50_ms,p90_ms,p95_ms,"
      "p99_ms,p99_9_ms,max_ms,late_sends,stable,server_queue_ms,server_compute_ms,server_batch_samples,"
      "errors_by_code\n";
  for (const LevelResult& l : r.levels) {
    const LatencySummary& lat = l.stats.latency;
    ServerInterval t = Total(l.servers);
    std::vector<std::string> codes;
    for (const auto& [code, count] : l.reported.errors_by_code) codes.push_back(absl::StrCat(code, "=", count));
    absl::StrAppendFormat(&out, "%s,%g,%.3f,%d,%d,%.3f,%.3f,%.3f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%d,%d,%.4f,%.4f,%.3f,%s\n",
                          Name(l.mode), l.level, l.reported.seconds, l.reported.ok, l.reported.errors(),
                          l.stats.requests_per_s, l.stats.samples_per_s, l.stats.megabytes_per_s, lat.mean_ms,
                          lat.p50_ms, lat.p90_ms, lat.p95_ms, lat.p99_ms, lat.p999_ms, lat.max_ms,
                          l.reported.late_sends, l.stable ? 1 : 0, t.queue_ms_mean, t.compute_ms_mean,
                          t.batch_samples_mean, absl::StrJoin(codes, ";"));
  }
  return out;
}

std::vector<double> AxisTicks(double max, int approximate_count) {
  if (!(max > 0) || !std::isfinite(max)) max = 1;
  const double raw = max / std::max(1, approximate_count);
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * power;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (int i = 0;; ++i) {
    ticks.push_back(i * step);
    if (i * step >= max * (1 - 1e-9)) break;
  }
  return ticks;
}

}  // namespace tpserve::load
