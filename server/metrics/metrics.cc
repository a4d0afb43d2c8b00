#include "server/metrics/metrics.h"

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
                    .Help("Finished RPCs by method, gRPC status code and device (\"none\": no device took it)")
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
      size_buckets_(SizeBuckets()) {}

Metrics::~Metrics() = default;

absl::Status Metrics::StartHttp(const std::string& address) {
  auto exposer = std::make_unique<HttpExposer>();
  absl::Status status = exposer->Start(address, [this] { return Serialize(); });
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

void Metrics::RequestFinished(const std::string& method, const std::string& model, const std::string& device,
                              const std::string& code, double seconds) {
  in_flight_.Add({{"method", method}}).Decrement();
  // The device label lets a dashboard tell one faulty GPU's errors from the rest.
  requests_.Add({{"method", method}, {"code", code}, {"device", device}}).Increment();
  request_latency_.Add({{"method", method}, {"model", model}, {"device", device}}, time_buckets_).Observe(seconds);
}

void Metrics::RpcStage(const std::string& method, const std::string& stage, double seconds) {
  rpc_stage_time_.Add({{"method", method}, {"stage", stage}}, time_buckets_).Observe(seconds);
}

void Metrics::OnBatch(const std::string& model, const std::string& device, int64_t batch, int requests,
                      double compute_seconds) {
  batch_size_.Add({{"model", model}, {"device", device}}, size_buckets_).Observe(static_cast<double>(batch));
  batch_requests_.Add({{"model", model}, {"device", device}}, size_buckets_).Observe(requests);
  compute_time_.Add({{"device", device}}, time_buckets_).Observe(compute_seconds);
}

void Metrics::OnLaunchStages(const std::string& device, double gather_seconds, double device_seconds,
                             double scatter_seconds) {
  launch_stage_time_.Add({{"device", device}, {"stage", "gather"}}, time_buckets_).Observe(gather_seconds);
  launch_stage_time_.Add({{"device", device}, {"stage", "device"}}, time_buckets_).Observe(device_seconds);
  launch_stage_time_.Add({{"device", device}, {"stage", "scatter"}}, time_buckets_).Observe(scatter_seconds);
}

void Metrics::OnQueueTime(const std::string& model, const std::string& device, double queue_seconds) {
  queue_time_.Add({{"model", model}, {"device", device}}, time_buckets_).Observe(queue_seconds);
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

}  // namespace tpserve::server
