// Every metric tpserve exports, named in one place, on a prometheus-cpp registry served at
// /metrics on its own HTTP port.
//
//   tp_request_latency_seconds{method,model,device}   histogram  end-to-end time in the handler
//   tp_requests_total{method,model,device,code}       counter    finished RPCs by gRPC status code
//   tp_in_flight_requests{method}                     gauge      RPCs being handled now
//   tp_queue_time_seconds{model,device}               histogram  admission -> launch
//   tp_compute_time_seconds{device}                   histogram  one launch (copies included)
//   tp_launch_stage_seconds{device,stage}             histogram  gather / device / scatter of a launch
//   tp_rpc_stage_seconds{method,stage}                histogram  read / core / write of a unary call
//   tp_batch_size{model,device}                       histogram  samples per launch
//   tp_batch_requests{model,device}                   histogram  requests merged per launch
//   tp_queue_depth                                    gauge      requests admitted, not launched
//   tp_device_memory_bytes{device}                    gauge      worker memory in use
//   tp_device_lost{device}                            gauge      1 once the device faulted (restart)
//   tp_memory_budget_used_bytes / _limit_bytes        gauge      the memory budget (memory_budget.h)
//   tp_plan_build_seconds                             histogram  one model plan built (create, start-up)
//   tp_device_requests_total{device}                  counter    requests launched on the device
//   tp_device_samples_total{device}                   counter    samples launched on the device
//   tp_gradient_copies_total{from,to,path}            counter    gradient parts moved to the summing
//                                                                device (path: peer | host)
// Time buckets grow by 1.5x from 50 us to past 10 s. Labels are bounded: method names, model
// names (only of models that exist, "-" otherwise; a model's series go when it is deleted), devices
// (a device's name, "all" for a call on every device's state, "none" for one that reached no
// device), status codes; never request ids.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/core/observer.h"
#include "server/metrics/http_exposer.h"

namespace tpserve::server {

// 50e-6 * 1.5^k for k = 0.. until past 10 s.
std::vector<double> LatencyBuckets();

class Metrics final : public CoreObserver {
 public:
  Metrics();
  ~Metrics() override;

  // Serves /metrics on `address` ("0.0.0.0:9090"; port 0 picks one, see port()).
  absl::Status StartHttp(const std::string& address);
  // Same, with the endpoint's token, TLS and limits (http_exposer.h).
  absl::Status StartHttp(const HttpExposerOptions& options);
  // Re-reads the endpoint's TLS certificate (no-op without HTTPS).
  absl::Status ReloadHttpTls();
  int port() const { return port_; }
  // The exposition text, as /metrics serves it.
  std::string Serialize() const;
  prometheus::Registry& registry() { return *registry_; }

  // ---- transport ----
  void RequestStarted(const std::string& method);
  // `model`: as the call named it (labelled "-" unless the model exists); `device`: where it ran or
  // failed ("all": every device's state, "none": it reached no device); `code`: gRPC status name.
  void RequestFinished(const std::string& method, const std::string& model, const std::string& device,
                       const std::string& code, double seconds);
  // One part of a unary call's handling: read (request bytes to the core's request), core (admission
  // to result), write (result to response bytes).
  void RpcStage(const std::string& method, const std::string& stage, double seconds);

  // ---- core (CoreObserver) ----
  void OnBatch(const std::string& model, const std::string& device, int64_t batch, int requests,
               double compute_seconds) override;
  void OnQueueTime(const std::string& model, const std::string& device, double queue_seconds) override;
  void OnLaunchStages(const std::string& device, double gather_seconds, double device_seconds,
                      double scatter_seconds) override;
  void OnDeviceMemory(const std::string& device, int worker, int64_t bytes) override;
  void OnDeviceLost(const std::string& device, const std::string& why) override;
  void OnQueueDepth(int64_t requests) override;
  void OnModelAdded(const std::string& model) override;
  void OnModelRemoved(const std::string& model) override;
  void OnMemoryBudget(int64_t used_bytes, int64_t limit_bytes) override;
  void OnPlanBuilt(double seconds) override;
  void OnGradientCopy(const std::string& from, const std::string& to, const char* path) override;

 private:
  // The label value for `model` ("-" unless it exists); with models_mu_ held.
  const std::string& ModelLabel(const std::string& model) const;
  // Adds (or finds) the series of `family` with `labels` and, when they name a live model, notes it
  // for removal with that model; with models_mu_ held.
  template <typename T, typename... Args>
  T& AddModelSeries(prometheus::Family<T>& family, const std::string& model, const prometheus::Labels& labels,
                    Args&&... args);
  struct ModelSeries {
    std::vector<std::pair<prometheus::Family<prometheus::Histogram>*, prometheus::Histogram*>> histograms;
    std::vector<std::pair<prometheus::Family<prometheus::Counter>*, prometheus::Counter*>> counters;
  };
  mutable std::mutex models_mu_;
  std::map<std::string, ModelSeries> models_;  // live models and the series labelled with each

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<HttpExposer> exposer_;
  int port_ = 0;
  prometheus::Family<prometheus::Histogram>& request_latency_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Histogram>& queue_time_;
  prometheus::Family<prometheus::Histogram>& compute_time_;
  prometheus::Family<prometheus::Histogram>& launch_stage_time_;
  prometheus::Family<prometheus::Histogram>& rpc_stage_time_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Histogram>& batch_requests_;
  prometheus::Gauge& queue_depth_;
  prometheus::Family<prometheus::Gauge>& device_memory_;
  prometheus::Family<prometheus::Gauge>& device_lost_;
  std::mutex memory_mu_;
  std::map<std::string, std::map<int, int64_t>> memory_by_device_;  // device -> worker -> bytes
  const std::vector<double> time_buckets_;
  const std::vector<double> size_buckets_;
  // Limits (issue 16): declared last, built in the constructor's body.
  prometheus::Gauge* memory_budget_used_ = nullptr;
  prometheus::Gauge* memory_budget_limit_ = nullptr;
  prometheus::Histogram* plan_build_time_ = nullptr;
  // Several devices (issue 23).
  prometheus::Family<prometheus::Counter>* device_requests_ = nullptr;
  prometheus::Family<prometheus::Counter>* device_samples_ = nullptr;
  prometheus::Family<prometheus::Counter>* gradient_copies_ = nullptr;
};

}  // namespace tpserve::server
