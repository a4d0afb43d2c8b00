#include "server/metrics/metrics.h"

#include <algorithm>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace tpserve::server {

std::vector<double> LatencyBuckets() {
  std::vector<double> buckets;
  for (double b = 50e-6; b < 15.0; b *= 1.5) buckets.push_back(b);
  return buckets;
}

namespace {

std::vector<double> SizeBuckets() {
  std::vector<double> buckets;
  for (double b = 1; b <= 65536; b *= 2) buckets.push_back(b);
  return buckets;
}

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      request_latency_(prometheus::BuildHistogram()
                           .Name("tp_request_latency_seconds")
                           .Help("End-to-end RPC handling time by method, model and device")
                           .Register(*registry_)),
      requests_(prometheus::BuildCounter()
                    .Name("tp_requests_total")
                    .Help("Finished RPCs by method, model, device and gRPC status code")
                    .Register(*registry_)),
      in_flight_(prometheus::BuildGauge()
                     .Name("tp_in_flight_requests")
                     .Help("RPCs being handled now, by method")
                     .Register(*registry_)),
      queue_time_(prometheus::BuildHistogram()
                      .Name("tp_queue_time_seconds")
                      .Help("Time from admission to the start of the launch, by model and device")
                      .Register(*registry_)),
      compute_time_(prometheus::BuildHistogram()
                        .Name("tp_compute_time_seconds")
                        .Help("Time of one launch on a device, copies included")
                        .Register(*registry_)),
      launch_stage_time_(prometheus::BuildHistogram()
                             .Name("tp_launch_stage_seconds")
                             .Help("Parts of one launch by device and stage: gather (inputs into staging), "
                                   "device (copies and compute), scatter (results out of staging)")
                             .Register(*registry_)),
      rpc_stage_time_(prometheus::BuildHistogram()
                          .Name("tp_rpc_stage_seconds")
                          .Help("Parts of a unary call's handling by method and stage: read (request bytes to "
                                "the core's request), core (admission to result), write (result to response)")
                          .Register(*registry_)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("tp_batch_size")
                      .Help("Samples per launch after dynamic batching")
                      .Register(*registry_)),
      batch_requests_(prometheus::BuildHistogram()
                          .Name("tp_batch_requests")
                          .Help("Requests merged into one launch")
                          .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("tp_queue_depth")
                       .Help("Requests admitted and not yet launched")
                       .Register(*registry_)
                       .Add({})),
      device_memory_(prometheus::BuildGauge()
                         .Name("tp_device_memory_bytes")
                         .Help("Memory a worker holds on its device (weights, gradients, staging)")
                         .Register(*registry_)),
      device_lost_(prometheus::BuildGauge()
                       .Name("tp_device_lost")
                       .Help("1 once the device faulted: its launches answer UNAVAILABLE until a restart")
                       .Register(*registry_)),
      time_buckets_(LatencyBuckets()),
      size_buckets_(SizeBuckets()) {
  memory_budget_used_ = &prometheus::BuildGauge()
                             .Name("tp_memory_budget_used_bytes")
                             .Help("Bytes of the server's memory budget reserved now (weights, uploads, unread "
                                   "results, downloads, gradients)")
                             .Register(*registry_)
                             .Add({});
  memory_budget_limit_ = &prometheus::BuildGauge()
                              .Name("tp_memory_budget_limit_bytes")
                              .Help("The server's memory budget (--max_memory_bytes)")
                              .Register(*registry_)
                              .Add({});
  plan_build_time_ = &prometheus::BuildHistogram()
                          .Name("tp_plan_build_seconds")
                          .Help("Time to build one model's plan (CreateModel, and each stored model at start-up)")
                          .Register(*registry_)
                          .Add({}, time_buckets_);
  device_requests_ = &prometheus::BuildCounter()
                          .Name("tp_device_requests_total")
                          .Help("Requests launched on a device (each worker of the device counts here)")
                          .Register(*registry_);
  device_samples_ = &prometheus::BuildCounter()
                         .Name("tp_device_samples_total")
                         .Help("Samples launched on a device")
                         .Register(*registry_);
  gradient_copies_ = &prometheus::BuildCounter()
                          .Name("tp_gradient_copies_total")
                          .Help("One device's part of a model's gradient moved to the device that sums the parts, "
                                "by path: peer (directly, e.g. a CUDA peer copy) or host (staged through host memory)")
                          .Register(*registry_);
}

Metrics::~Metrics() = default;

absl::Status Metrics::StartHttp(const std::string& address) {
  HttpExposerOptions options;
  options.address = address;
  return StartHttp(options);
}

absl::Status Metrics::ReloadHttpTls() { return exposer_ != nullptr ? exposer_->ReloadTls() : absl::OkStatus(); }

absl::Status Metrics::StartHttp(const HttpExposerOptions& options) {
  auto exposer = std::make_unique<HttpExposer>();
  absl::Status status = exposer->Start(options, [this] { return Serialize(); });
  if (!status.ok()) return status;
  port_ = exposer->port();
  exposer_ = std::move(exposer);
  return absl::OkStatus();
}

std::string Metrics::Serialize() const {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(registry_->Collect());
}

void Metrics::RequestStarted(const std::string& method) { in_flight_.Add({{"method", method}}).Increment(); }

const std::string& Metrics::ModelLabel(const std::string& model) const {
  static const std::string kNoModel = "-";
  return models_.count(model) != 0 ? model : kNoModel;
}

template <typename T, typename... Args>
T& Metrics::AddModelSeries(prometheus::Family<T>& family, const std::string& model, const prometheus::Labels& labels,
                           Args&&... args) {
  T& series = family.Add(labels, std::forward<Args>(args)...);
  auto it = models_.find(model);
  if (it == models_.end()) return series;
  auto& tracked = [&]() -> auto& {
    if constexpr (std::is_same_v<T, prometheus::Histogram>) {
      return it->second.histograms;
    } else {
      return it->second.counters;
    }
  }();
  const std::pair<prometheus::Family<T>*, T*> entry{&family, &series};
  if (std::find(tracked.begin(), tracked.end(), entry) == tracked.end()) tracked.push_back(entry);
  return series;
}

void Metrics::OnModelAdded(const std::string& model) {
  std::lock_guard<std::mutex> lock(models_mu_);
  models_.try_emplace(model);
}

void Metrics::OnModelRemoved(const std::string& model) {
  std::lock_guard<std::mutex> lock(models_mu_);
  auto it = models_.find(model);
  if (it == models_.end()) return;
  for (auto& [family, series] : it->second.histograms) family->Remove(series);
  for (auto& [family, series] : it->second.counters) family->Remove(series);
  models_.erase(it);
}

void Metrics::RequestFinished(const std::string& method, const std::string& model, const std::string& device,
                              const std::string& code, double seconds) {
  in_flight_.Add({{"method", method}}).Decrement();
  std::lock_guard<std::mutex> lock(models_mu_);
  const std::string& label = ModelLabel(model);
  AddModelSeries(requests_, model, {{"method", method}, {"model", label}, {"device", device}, {"code", code}})
      .Increment();
  AddModelSeries(request_latency_, model, {{"method", method}, {"model", label}, {"device", device}}, time_buckets_)
      .Observe(seconds);
}

void Metrics::RpcStage(const std::string& method, const std::string& stage, double seconds) {
  rpc_stage_time_.Add({{"method", method}, {"stage", stage}}, time_buckets_).Observe(seconds);
}

void Metrics::OnBatch(const std::string& model, const std::string& device, int64_t batch, int requests,
                      double compute_seconds) {
  {
    std::lock_guard<std::mutex> lock(models_mu_);
    const std::string& label = ModelLabel(model);
    AddModelSeries(batch_size_, model, {{"model", label}, {"device", device}}, size_buckets_)
        .Observe(static_cast<double>(batch));
    AddModelSeries(batch_requests_, model, {{"model", label}, {"device", device}}, size_buckets_).Observe(requests);
  }
  compute_time_.Add({{"device", device}}, time_buckets_).Observe(compute_seconds);
  device_requests_->Add({{"device", device}}).Increment(requests);
  device_samples_->Add({{"device", device}}).Increment(static_cast<double>(batch));
}

void Metrics::OnLaunchStages(const std::string& device, double gather_seconds, double device_seconds,
                             double scatter_seconds) {
  launch_stage_time_.Add({{"device", device}, {"stage", "gather"}}, time_buckets_).Observe(gather_seconds);
  launch_stage_time_.Add({{"device", device}, {"stage", "device"}}, time_buckets_).Observe(device_seconds);
  launch_stage_time_.Add({{"device", device}, {"stage", "scatter"}}, time_buckets_).Observe(scatter_seconds);
}

void Metrics::OnQueueTime(const std::string& model, const std::string& device, double queue_seconds) {
  std::lock_guard<std::mutex> lock(models_mu_);
  AddModelSeries(queue_time_, model, {{"model", ModelLabel(model)}, {"device", device}}, time_buckets_)
      .Observe(queue_seconds);
}

void Metrics::OnDeviceMemory(const std::string& device, int worker, int64_t bytes) {
  std::lock_guard<std::mutex> lock(memory_mu_);
  std::map<int, int64_t>& workers = memory_by_device_[device];
  workers[worker] = bytes;
  int64_t total = 0;
  for (const auto& [index, held] : workers) total += held;
  device_memory_.Add({{"device", device}}).Set(static_cast<double>(total));
  device_lost_.Add({{"device", device}});  // 0 from the device's first report on
}

void Metrics::OnDeviceLost(const std::string& device, const std::string& why) {
  device_lost_.Add({{"device", device}}).Set(1);
}

void Metrics::OnQueueDepth(int64_t requests) { queue_depth_.Set(static_cast<double>(requests)); }

void Metrics::OnMemoryBudget(int64_t used_bytes, int64_t limit_bytes) {
  memory_budget_used_->Set(static_cast<double>(used_bytes));
  memory_budget_limit_->Set(static_cast<double>(limit_bytes));
}

void Metrics::OnPlanBuilt(double seconds) { plan_build_time_->Observe(seconds); }

void Metrics::OnGradientCopy(const std::string& from, const std::string& to, const char* path) {
  gradient_copies_->Add({{"from", from}, {"to", to}, {"path", path}}).Increment();
}

}  // namespace tpserve::server
