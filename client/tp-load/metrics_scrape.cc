#include "client/tp-load/metrics_scrape.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace tpserve::load {
namespace {

absl::StatusOr<int> ConnectTcp(const std::string& address) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("metrics address '", address, "': expected HOST:PORT"));
  std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("metrics address '", address, "': cannot resolve"));
  }
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int connected = fd < 0 ? -1 : connect(fd, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  if (connected != 0) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(absl::StrCat("metrics ", address, ": cannot connect"));
  }
  return fd;
}

// The body after the header, when the status line says 200.
absl::StatusOr<std::string> Body(const std::string& response, const std::string& address) {
  size_t end_of_headers = response.find("\r\n\r\n");
  if (!absl::StartsWith(response, "HTTP/1.") || end_of_headers == std::string::npos ||
      response.find(" 200") > response.find("\r\n")) {
    return absl::UnavailableError(absl::StrCat("metrics ", address, ": no HTTP 200 answer"));
  }
  return response.substr(end_of_headers + 4);
}

bool LabelsContain(const std::string& series, const std::vector<std::string>& substrings) {
  for (const std::string& s : substrings) {
    if (!absl::StrContains(series, s)) return false;
  }
  return true;
}

double Delta(const Scrape& before, const Scrape& after, const std::string& name,
             const std::vector<std::string>& labels = {}) {
  return SumSeries(after, name, labels) - SumSeries(before, name, labels);
}

double MeanOf(const Scrape& before, const Scrape& after, const std::string& histogram, double scale,
              const std::vector<std::string>& labels = {}) {
  const double count = Delta(before, after, histogram + "_count", labels);
  return count > 0 ? scale * Delta(before, after, histogram + "_sum", labels) / count : 0;
}

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path, double timeout_s) {
  absl::StatusOr<int> fd = ConnectTcp(address);
  if (!fd.ok()) return fd.status();
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
  std::string response;
  bool failed = send(*fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  char buffer[65536];
  while (!failed) {
    int left_ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       deadline - std::chrono::steady_clock::now()).count());
    pollfd p{*fd, POLLIN, 0};
    if (left_ms <= 0 || poll(&p, 1, left_ms) <= 0) {
      failed = true;
      break;
    }
    ssize_t n = recv(*fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;  // the server closes after the body
    response.append(buffer, static_cast<size_t>(n));
  }
  close(*fd);
  if (failed) return absl::DeadlineExceededError(absl::StrCat("metrics ", address, ": no answer in time"));
  return Body(response, address);
}

Scrape ParsePrometheus(const std::string& text) {
  Scrape scrape;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line.front() == '#') continue;
    // The value follows the last space (labels may hold spaces inside quotes, values never do).
    size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) continue;
    std::string value(line.substr(space + 1));
    char* end = nullptr;
    double v = std::strtod(value.c_str(), &end);
    if (end == value.c_str()) continue;
    scrape[std::string(line.substr(0, space))] = v;
  }
  return scrape;
}

double SumSeries(const Scrape& scrape, const std::string& name, const std::vector<std::string>& label_substrings) {
  double sum = 0;
  for (auto it = scrape.lower_bound(name); it != scrape.end() && absl::StartsWith(it->first, name); ++it) {
    const std::string& series = it->first;
    if (series.size() != name.size() && series[name.size()] != '{') continue;  // a longer name
    if (LabelsContain(series, label_substrings)) sum += it->second;
  }
  return sum;
}

ServerInterval Interval(const std::string& address, const Scrape& before, const Scrape& after) {
  ServerInterval s;
  s.address = address;
  const std::string counter = "tp_requests_total{";
  for (auto it = after.lower_bound(counter); it != after.end() && absl::StartsWith(it->first, counter); ++it) {
    auto was = before.find(it->first);
    const double delta = it->second - (was == before.end() ? 0 : was->second);
    std::string method, code;
    for (absl::string_view label : absl::StrSplit(it->first.substr(counter.size()), ',')) {
      std::vector<std::string> kv = absl::StrSplit(label, absl::MaxSplits('=', 1));
      if (kv.size() != 2) continue;
      std::string v(absl::StripSuffix(absl::StripPrefix(absl::StripSuffix(kv[1], "}"), "\""), "\""));
      if (kv[0] == "method") method = v;
      if (kv[0] == "code") code = v;
    }
    if (delta > 0) s.requests_by_method_code[method + " " + code] += delta;
  }
  auto count = [&](const char* key) {
    auto it = s.requests_by_method_code.find(key);
    return it == s.requests_by_method_code.end() ? 0.0 : it->second;
  };
  s.forward_ok = count("Forward OK");
  s.backward_ok = count("Backward OK");
  s.launches = Delta(before, after, "tp_compute_time_seconds_count");
  s.queued = Delta(before, after, "tp_queue_time_seconds_count");
  s.queue_ms_mean = MeanOf(before, after, "tp_queue_time_seconds", 1e3);
  s.compute_ms_mean = MeanOf(before, after, "tp_compute_time_seconds", 1e3);
  s.rpc_ms_mean = MeanOf(before, after, "tp_request_latency_seconds", 1e3, {"method=\"Forward\""});
  s.batch_samples_mean = MeanOf(before, after, "tp_batch_size", 1);
  s.batch_requests_mean = MeanOf(before, after, "tp_batch_requests", 1);
  return s;
}

ServerInterval Total(const std::vector<ServerInterval>& servers) {
  ServerInterval total;
  total.address = "all";
  double weight = 0, forward = 0;
  for (const ServerInterval& s : servers) {
    for (const auto& [key, count] : s.requests_by_method_code) total.requests_by_method_code[key] += count;
    total.forward_ok += s.forward_ok;
    total.backward_ok += s.backward_ok;
    total.launches += s.launches;
    total.queued += s.queued;
    total.queue_ms_mean += s.queue_ms_mean * s.queued;
    total.compute_ms_mean += s.compute_ms_mean * s.launches;
    total.batch_samples_mean += s.batch_samples_mean * s.launches;
    total.batch_requests_mean += s.batch_requests_mean * s.launches;
    total.rpc_ms_mean += s.rpc_ms_mean * s.forward_ok;
    weight += s.launches;
    forward += s.forward_ok;
  }
  if (total.queued > 0) total.queue_ms_mean /= total.queued;
  if (weight > 0) {
    total.compute_ms_mean /= weight;
    total.batch_samples_mean /= weight;
    total.batch_requests_mean /= weight;
  }
  if (forward > 0) total.rpc_ms_mean /= forward;
  return total;
}

}  // namespace tpserve::load
