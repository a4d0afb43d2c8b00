// The server's side of a measurement, read from its Prometheus /metrics (server/metrics/metrics.cc
// names the series): two scrapes bracket an interval and the differences of counters and of
// histogram sums and counts say what the server did in it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve::load {

// "name{label=\"v\",...}" (as the server wrote it) -> value.
using Scrape = std::map<std::string, double>;

// GET `path` from `address` ("host:port") over HTTP/1.0; the body.
absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path, double timeout_s);

// Sample lines of Prometheus text format; comments and malformed lines are skipped.
Scrape ParsePrometheus(const std::string& text);

// Sum of every series named `name` whose labels contain each of `label_substrings`.
double SumSeries(const Scrape& scrape, const std::string& name, const std::vector<std::string>& label_substrings = {});

// What one server did between two scrapes.
struct ServerInterval {
  std::string address;
  bool measured = true;            // false: a scrape at either end failed (server gone?)
  std::map<std::string, double> requests_by_method_code;  // "Forward OK" -> count
  double forward_ok = 0, backward_ok = 0;
  double launches = 0;             // device launches (batches)
  double queued = 0;               // requests that waited in the queue
  double queue_ms_mean = 0;        // tp_queue_time_seconds: admission to launch
  double compute_ms_mean = 0;      // tp_compute_time_seconds: one launch on a device
  double rpc_ms_mean = 0;          // tp_request_latency_seconds of Forward and Backward
  double batch_samples_mean = 0;   // tp_batch_size: samples per launch
  double batch_requests_mean = 0;  // tp_batch_requests: requests merged into a launch
};
ServerInterval Interval(const std::string& address, const Scrape& before, const Scrape& after);

// Every server's interval summed (means weighted by their counts).
ServerInterval Total(const std::vector<ServerInterval>& servers);

}  // namespace tpserve::load
