#include "server/core/worker.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/core/status_macros.h"
#include "server/core/call_buffers.h"

namespace tpserve::server {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Worker::Worker(int index, std::unique_ptr<Backend> backend, Batcher* batcher, CoreObserver* observer)
    : index_(index),
      backend_(std::move(backend)), device_(backend_->name()), batcher_(batcher), observer_(observer) {
  absl::StatusOr<void*> stream = backend_->CreateStream();
  // Without a stream of its own the worker still runs, on the device's default stream.
  if (stream.ok()) stream_ = *stream;
  ctx_.stream = stream_;
}

Worker::~Worker() {
  Join();
  backend_->DestroyStream(stream_);
}

void Worker::Start() { thread_ = std::thread([this] { Loop(); }); }

void Worker::Join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::Loop() {
  for (;;) {
    Batcher::Work work = batcher_->Next(&busy_, device_load_.get());
    if (work.batch.empty() && work.expired.empty()) return;
    if (observer_ != nullptr) observer_->OnQueueDepth(batcher_->queued());
    for (auto& pending : work.expired) {
      bool cancelled = pending->request.cancelled && pending->request.cancelled->load();
      pending->done(cancelled ? absl::CancelledError("request cancelled while queued")
                              : absl::DeadlineExceededError("deadline passed while queued"));
    }
    if (!work.batch.empty()) {
      Execute(std::move(work.batch));
      busy_.fetch_sub(1);  // counted by Next()
      device_load_->fetch_sub(1);
    }
  }
}

absl::Status Worker::EnsureStaging(Staging& staging, size_t bytes) {
  if (staging.buffer && staging.buffer->bytes() >= bytes) return absl::OkStatus();
  staging.buffer.reset();
  // Grow geometrically so a slowly growing batch does not reallocate every time.
  size_t want = bytes + bytes / 2;
  if (staging.host) {
    ASSIGN_OR_RETURN(staging.buffer, backend_->AllocateHost(want));
  } else {
    ASSIGN_OR_RETURN(staging.buffer, backend_->Allocate(want));
    ReportMemory();
  }
  return absl::OkStatus();
}

void Worker::ReportMemory() {
  if (observer_ == nullptr) return;
  int64_t bytes = 0;
  for (const Staging* s : {&device_in_, &device_out_, &grad_weight_}) {
    if (s->buffer) bytes += static_cast<int64_t>(s->buffer->bytes());
  }
  for (const auto& [id, replica] : replicas_) {
    if (replica.weights) bytes += static_cast<int64_t>(replica.weights->bytes());
    if (replica.grad) bytes += static_cast<int64_t>(replica.grad->bytes());
  }
  observer_->OnDeviceMemory(device_, index_, bytes);
}

absl::StatusOr<Worker::Replica*> Worker::ReplicaFor(const Model& model, const WeightsSnapshot& weights) {
  Replica& replica = replicas_[model.instance_id()];
  if (!replica.prepared) {
    ASSIGN_OR_RETURN(replica.prepared, backend_->Prepare(model.plan()));
  }
  size_t bytes = weights.weights->size() * sizeof(float);
  if (!replica.weights) {
    ASSIGN_OR_RETURN(replica.weights, backend_->Allocate(bytes));
    ReportMemory();
  }
  if (!replica.loaded || replica.version != weights.version) {
    RETURN_IF_ERROR(backend_->CopyFromHost(replica.weights->data(), weights.weights->data(), bytes, ctx_));
    replica.version = weights.version;
    replica.loaded = true;
  }
  return &replica;
}

absl::Status Worker::GradientReadable(const Model& model) {
  std::lock_guard<std::mutex> lock(mu_);
  return GradientReadableLocked(model);
}

absl::Status Worker::GradientReadableLocked(const Model& model) {
  if (!lost_.load()) return absl::OkStatus();
  auto it = replicas_.find(model.instance_id());
  if (it == replicas_.end() || !it->second.grad || !it->second.grad_dirty) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("the part of model '", model.name(), "'s gradient accumulated on ", device_,
                                          " was lost with the device (", lost_why_,
                                          "); zero the gradient to accumulate again on the devices that remain"));
}

void Worker::MarkLost(const std::string& why, bool retire) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!lost_.load()) {
      lost_why_ = why;
      lost_.store(true);
    }
    if (!retire || retired()) return;
    busy_.fetch_add(Batcher::kRetired);
  }
  batcher_->WakeAll();
}

absl::Status Worker::ZeroGradient(const Model& model) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(model.instance_id());
  if (it == replicas_.end() || !it->second.grad) return absl::OkStatus();
  it->second.grad_dirty = false;
  if (lost_.load()) return absl::OkStatus();  // the lost part is forgotten, not read
  std::vector<float> zeros(static_cast<size_t>(model.plan().weight_numel()), 0.0f);
  RETURN_IF_ERROR(backend_->CopyFromHost(it->second.grad->data(), zeros.data(), zeros.size() * sizeof(float), ctx_));
  return backend_->Synchronize(ctx_);
}

absl::Status Worker::Warm(const Model& model) {
  std::lock_guard<std::mutex> lock(mu_);
  if (lost_.load()) return absl::OkStatus();  // takes no work; launches answer UNAVAILABLE
  absl::StatusOr<Replica*> replica = ReplicaFor(model, model.weights());
  if (!replica.ok()) return replica.status();
  return backend_->Synchronize(ctx_);
}

void Worker::DropModel(const Model& model) {
  std::lock_guard<std::mutex> lock(mu_);
  replicas_.erase(model.instance_id());
  ReportMemory();
}

void Worker::DropAbandoned(Batch& batch) {
  // Nobody waits for these any more: answered without a launch, so they change nothing (a gradient
  // accumulation included). The batcher drops such requests while they queue; this catches those
  // that tripped on their way to a launch, and those run on the caller's thread.
  const absl::Time now = absl::Now();
  for (auto it = batch.begin(); it != batch.end();) {
    const InferenceRequest& r = (*it)->request;
    const bool cancelled = r.cancelled && r.cancelled->load();
    if (!cancelled && r.deadline > now) {
      ++it;
      continue;
    }
    (*it)->done(cancelled ? absl::CancelledError("request cancelled before its launch")
                          : absl::DeadlineExceededError("deadline passed before the launch"));
    it = batch.erase(it);
  }
}

void Worker::Execute(Batch batch) {
  DropAbandoned(batch);
  if (batch.empty()) return;
  auto start = std::chrono::steady_clock::now();
  absl::Time launch_time = absl::Now();
  std::vector<InferenceResult> results(batch.size());
  absl::Status status;
  int64_t samples = 0;
  for (const auto& pending : batch) samples += pending->batch;
  bool lost_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Taken from the queue just before this worker was retired: back to the queue, for the devices
    // that remain (lost and retired are set together under mu_, so no batch falls in between).
    if (retired()) {
      batcher_->Requeue(std::move(batch));
      return;
    }
    const Model& model = *batch.front()->model;
    WeightsSnapshot weights = model.weights();
    if (lost_.load()) {
      status = absl::UnavailableError(
          absl::StrCat(device_, " is lost (", lost_why_, "); the server must be restarted to use it again"));
    } else {
      absl::StatusOr<Replica*> replica = ReplicaFor(model, weights);
      status = replica.status();
      if (status.ok()) status = RunBatch(batch, **replica, results);
    }
    // A failed launch may leave copies in flight that read or write the staging buffers: let
    // them finish before the next launch reuses those.
    if (!status.ok() && !lost_.load()) {
      backend_->Synchronize(ctx_).IgnoreError();
      // The callers get the status; the log keeps the first few with the launch's shape.
      if (failures_logged_ < 5) {
        ++failures_logged_;
        std::fprintf(stderr, "tpserve: %s: launch of %zu request(s), %lld samples, model %s failed: %s\n",
                     device_.c_str(), batch.size(), static_cast<long long>(samples), model.name().c_str(),
                     status.ToString().c_str());
      }
      if (absl::Status device = backend_->CheckDevice(); !device.ok()) {
        lost_why_ = std::string(device.message());
        lost_.store(true);
        lost_now = true;
        std::fprintf(stderr, "tpserve: %s: device lost, every later launch answers UNAVAILABLE: %s\n",
                     device_.c_str(), lost_why_.c_str());
      }
    }
    for (auto& result : results) result.model_version = weights.version;
    // A launch admitted before its model was deleted may have rebuilt the replica: free it.
    if (model.deleted()) {
      replicas_.erase(model.instance_id());
      ReportMemory();
    }
  }
  if (lost_now && on_lost_) on_lost_(device_, lost_why_);
  double compute_seconds = SecondsSince(start);
  const std::string& model_name = batch.front()->model->name();
  if (observer_ != nullptr) {
    observer_->OnBatch(model_name, device_, samples, static_cast<int>(batch.size()), compute_seconds);
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    PendingRequest& pending = *batch[i];
    double queue_seconds = absl::ToDoubleSeconds(launch_time - pending.enqueue_time);
    if (observer_ != nullptr) observer_->OnQueueTime(model_name, device_, queue_seconds);
    if (!status.ok()) {
      pending.done(WithDevice(status, device_));
      continue;
    }
    results[i].device = device_;
    results[i].executed_batch = samples;
    results[i].queue_seconds = queue_seconds;
    results[i].compute_seconds = compute_seconds;
    pending.done(std::move(results[i]));
  }
}

// What one launch moves where: the staging layout of its merged samples, and whether its inputs
// and `out` skip the worker's pinned staging (they lie in page-locked memory of their own).
struct Worker::Launch {
  const InferenceRequest* head = nullptr;  // the requests agree on everything the launch reads
  const TensorProductPlan* plan = nullptr;
  int64_t samples = 0;
  StagingWants want;
  StagingLayout layout;
  bool direct_in = false, direct_out = false;
};

Worker::Launch Worker::PlanLaunch(const Batch& batch) const {
  Launch launch;
  launch.head = &batch.front()->request;
  launch.plan = &batch.front()->model->plan();
  for (const auto& pending : batch) launch.samples += pending->batch;
  launch.want = StagingWantsOf(*launch.head);
  const TensorProductPlan& plan = *launch.plan;
  launch.layout = StagingLayout::For(launch.samples, plan.dim_in1(), plan.dim_in2(), plan.dim_out(), launch.want);
  // Inputs that already lie in page-locked memory (leased buffers) go to the device from there;
  // any other batch is gathered into this worker's pinned staging first. Likewise `out` goes
  // straight into page-locked result buffers when every request has one.
  launch.direct_in = true;
  launch.direct_out = launch.want.out && !launch.want.grad_x1 && !launch.want.grad_x2;
  for (const auto& pending : batch) {
    const InferenceRequest& r = pending->request;
    launch.direct_in = launch.direct_in && r.x1.pinned && r.x2.pinned && (!launch.want.grad_out || r.grad_out.pinned);
    launch.direct_out = launch.direct_out && r.out_into != nullptr && r.out_into_pinned &&
                        r.out_into_size == static_cast<size_t>(pending->batch * plan.dim_out());
  }
  return launch;
}

absl::Status Worker::StageInputs(const Batch& batch, const Launch& launch, double* gather_seconds) {
  constexpr size_t f = sizeof(float);
  const StagingLayout& l = launch.layout;
  const TensorProductPlan& plan = *launch.plan;
  // Each request's rows at their place in the layout: gathered back to back into pinned memory
  // (each request's values read once, straight from where the transport left them) for one copy
  // to the device, or copied to the device from their own page-locked memory.
  auto place_inputs = [&](const std::function<absl::Status(int64_t at, const HostTensor&)>& copy) -> absl::Status {
    for (const auto& [member, at, dim] : {std::tuple{&InferenceRequest::x1, l.x1_at, plan.dim_in1()},
                                          std::tuple{&InferenceRequest::x2, l.x2_at, plan.dim_in2()},
                                          std::tuple{&InferenceRequest::grad_out, l.grad_out_at, plan.dim_out()}}) {
      if (member == &InferenceRequest::grad_out && !launch.want.grad_out) continue;
      int64_t offset = at;
      for (const auto& pending : batch) {
        RETURN_IF_ERROR(copy(offset, pending->request.*member));
        offset += pending->batch * dim;
      }
    }
    return absl::OkStatus();
  };
  const auto gather_start = std::chrono::steady_clock::now();
  if (!launch.direct_in) {
    // One copy for all inputs: starting each tensor's copy right after its gather was measured
    // slower on the H100 host (gather 0.045 -> 0.10 ms, device part only 0.02 ms shorter).
    RETURN_IF_ERROR(place_inputs([&](int64_t at, const HostTensor& t) {
      std::memcpy(host_in_.floats() + at, t.values(), t.size() * f);
      return absl::OkStatus();
    }));
  }
  *gather_seconds = SecondsSince(gather_start);
  const CallBuffers* leased = batch.front()->request.buffers;
  if (launch.direct_in && batch.size() == 1 && leased != nullptr && leased->inputs_pinned() &&
      leased->layout().in_floats == l.in_floats) {
    // A lone request whose inputs the core leased (LeaseBuffers): they lie as in device_in_, so
    // one copy moves them all.
    return backend_->CopyFromHost(device_in_.floats(), leased->inputs(), l.in_floats * f, ctx_);
  }
  if (launch.direct_in) {
    return place_inputs([&](int64_t at, const HostTensor& t) {
      return backend_->CopyFromHost(device_in_.floats() + at, t.values(), t.size() * f, ctx_);
    });
  }
  return backend_->CopyFromHost(device_in_.floats(), host_in_.floats(), l.in_floats * f, ctx_);
}

absl::Status Worker::Compute(const Launch& launch, Replica& replica) {
  constexpr size_t f = sizeof(float);
  const InferenceRequest& head = *launch.head;
  const TensorProductPlan& plan = *launch.plan;
  const StagingLayout& l = launch.layout;
  const int64_t samples = launch.samples;
  ConstTensorView weight{replica.weights->data(), DType::kFloat32, {plan.weight_numel()}};
  ConstTensorView x1{device_in_.floats() + l.x1_at, DType::kFloat32, {samples, plan.dim_in1()}};
  ConstTensorView x2{device_in_.floats() + l.x2_at, DType::kFloat32, {samples, plan.dim_in2()}};
  ExecutionContext ctx = ctx_;
  ctx.precision = head.precision;

  TensorView out;
  if (launch.want.out) out = {device_out_.floats() + l.out_at, DType::kFloat32, {samples, plan.dim_out()}};
  GradientOutputs grads;
  if (launch.want.grad_x1) {
    grads.grad_x1 = {device_out_.floats() + l.grad_x1_at, DType::kFloat32, {samples, plan.dim_in1()}};
  }
  if (launch.want.grad_x2) {
    grads.grad_x2 = {device_out_.floats() + l.grad_x2_at, DType::kFloat32, {samples, plan.dim_in2()}};
  }
  if (head.op == Op::kBackward) {
    size_t weight_bytes = static_cast<size_t>(plan.weight_numel()) * f;
    if (head.weight_grad == WeightGradMode::kReturn) {
      RETURN_IF_ERROR(EnsureStaging(grad_weight_, weight_bytes));
      grads.grad_weight = {grad_weight_.floats(), DType::kFloat32, {plan.weight_numel()}};
    } else if (head.weight_grad == WeightGradMode::kAccumulate) {
      if (!replica.grad) {
        ASSIGN_OR_RETURN(replica.grad, backend_->Allocate(weight_bytes));
        std::vector<float> zeros(static_cast<size_t>(plan.weight_numel()), 0.0f);
        RETURN_IF_ERROR(backend_->CopyFromHost(replica.grad->data(), zeros.data(), weight_bytes, ctx_));
        ReportMemory();
      }
      grads.grad_weight = {replica.grad->data(), DType::kFloat32, {plan.weight_numel()}};
      grads.accumulate_grad_weight = true;
      replica.grad_dirty = true;
      ++replica.grad_accumulations;
    }
  }

  if (head.op == Op::kForward) return backend_->Forward(*replica.prepared, weight, x1, x2, out, ctx);
  if (launch.want.grad_out) {
    ConstTensorView grad_out{device_in_.floats() + l.grad_out_at, DType::kFloat32, {samples, plan.dim_out()}};
    return backend_->Backward(*replica.prepared, weight, x1, x2, grad_out, grads, ctx);
  }
  return backend_->LossGradient(*replica.prepared, *head.loss, weight, x1, x2, out, grads, ctx);
}

absl::Status Worker::CopyOutputsBack(const Batch& batch, const Launch& launch, std::vector<InferenceResult>& results) {
  constexpr size_t f = sizeof(float);
  const StagingLayout& l = launch.layout;
  // One copy back into pinned memory (each request's rows go to its result after), or `out`
  // straight into each request's page-locked result buffer.
  if (launch.direct_out) {
    const float* src = device_out_.floats() + l.out_at;
    for (const auto& pending : batch) {
      const InferenceRequest& r = pending->request;
      RETURN_IF_ERROR(backend_->CopyToHost(r.out_into, src, r.out_into_size * f, ctx_));
      src += r.out_into_size;
    }
  } else if (l.out_floats > 0) {
    RETURN_IF_ERROR(backend_->CopyToHost(host_out_.floats(), device_out_.floats(), l.out_floats * f, ctx_));
  }
  const InferenceRequest& head = *launch.head;
  if (head.op == Op::kBackward && head.weight_grad == WeightGradMode::kReturn) {
    // Only unmerged launches return the weight gradient (the batcher never merges them).
    const int64_t weight_numel = launch.plan->weight_numel();
    HostTensor& g = results.front().grad_weight;
    g = HostTensor::Zeros({weight_numel});
    RETURN_IF_ERROR(backend_->CopyToHost(g.data.data(), grad_weight_.floats(), weight_numel * f, ctx_));
  }
  return backend_->Synchronize(ctx_);
}

void Worker::ScatterOutputs(const Batch& batch, const Launch& launch, std::vector<InferenceResult>& results) const {
  const StagingLayout& l = launch.layout;
  const TensorProductPlan& plan = *launch.plan;
  auto scatter = [&](int64_t at, int64_t dim, HostTensor InferenceResult::*member) {
    const float* src = host_out_.floats() + at;
    for (size_t i = 0; i < batch.size(); ++i) {
      const int64_t n = batch[i]->batch;
      HostTensor& t = results[i].*member;
      const InferenceRequest& request = batch[i]->request;
      float* into = member == &InferenceResult::out ? request.out_into : nullptr;
      if (into != nullptr && static_cast<size_t>(n * dim) == request.out_into_size) {  // straight into the caller's buffer (a unary response's bytes)
        std::memcpy(into, src, n * dim * sizeof(float));
        t = HostTensor::Borrow({n, dim}, into, static_cast<size_t>(n * dim));
      } else {
        t.shape = {n, dim};
        t.data.assign(src, src + n * dim);
      }
      src += n * dim;
    }
  };
  if (launch.direct_out) {
    for (size_t i = 0; i < batch.size(); ++i) {
      const InferenceRequest& r = batch[i]->request;
      results[i].out = HostTensor::Borrow({batch[i]->batch, plan.dim_out()}, r.out_into, r.out_into_size);
    }
  } else if (launch.want.out) {
    scatter(l.out_at, plan.dim_out(), &InferenceResult::out);
  }
  if (launch.want.grad_x1) scatter(l.grad_x1_at, plan.dim_in1(), &InferenceResult::grad_x1);
  if (launch.want.grad_x2) scatter(l.grad_x2_at, plan.dim_in2(), &InferenceResult::grad_x2);
}

absl::Status Worker::RunBatch(Batch& batch, Replica& replica, std::vector<InferenceResult>& results) {
  constexpr size_t f = sizeof(float);
  const Launch launch = PlanLaunch(batch);
  RETURN_IF_ERROR(EnsureStaging(device_in_, launch.layout.in_floats * f));
  if (!launch.direct_in) RETURN_IF_ERROR(EnsureStaging(host_in_, launch.layout.in_floats * f));
  RETURN_IF_ERROR(EnsureStaging(device_out_, std::max<int64_t>(launch.layout.out_floats, 1) * f));
  if (!launch.direct_out) RETURN_IF_ERROR(EnsureStaging(host_out_, std::max<int64_t>(launch.layout.out_floats, 1) * f));
  double gather_seconds = 0;
  const auto device_start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(StageInputs(batch, launch, &gather_seconds));
  RETURN_IF_ERROR(Compute(launch, replica));
  RETURN_IF_ERROR(CopyOutputsBack(batch, launch, results));
  const double device_seconds = SecondsSince(device_start) - gather_seconds;
  const auto scatter_start = std::chrono::steady_clock::now();
  ScatterOutputs(batch, launch, results);
  if (observer_ != nullptr) observer_->OnLaunchStages(device_, gather_seconds, device_seconds, SecondsSince(scatter_start));
  return absl::OkStatus();
}

}  // namespace tpserve::server
