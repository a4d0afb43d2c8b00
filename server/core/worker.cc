#include "server/core/worker.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/core/status_macros.h"
#include "server/core/device_stream.h"

namespace tpserve::server {
namespace {

// Requests at least this large (inputs, bytes) are copied to and from the device one by one
// rather than gathered on the host first.
constexpr int64_t kDirectCopyBytes = 64 << 10;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Worker::Worker(int index, std::unique_ptr<Backend> backend, Batcher* batcher, CoreObserver* observer)
    : index_(index),
      backend_(std::move(backend)), device_(backend_->name()), batcher_(batcher), observer_(observer) {
  absl::StatusOr<void*> stream = CreateDeviceStream(device_);
  // Without a stream of its own the worker still runs, on the device's default stream.
  if (stream.ok()) stream_ = *stream;
  ctx_.stream = stream_;
}

Worker::~Worker() {
  Join();
  DestroyDeviceStream(stream_);
}

void Worker::Start() { thread_ = std::thread([this] { Loop(); }); }

void Worker::Join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::Loop() {
  for (;;) {
    Batcher::Work work = batcher_->Next();
    if (work.batch.empty() && work.expired.empty()) return;
    if (observer_ != nullptr) observer_->OnQueueDepth(batcher_->queued());
    for (auto& pending : work.expired) {
      bool cancelled = pending->request.cancelled && pending->request.cancelled->load();
      pending->done(cancelled ? absl::CancelledError("request cancelled while queued")
                              : absl::DeadlineExceededError("deadline passed while queued"));
    }
    if (!work.batch.empty()) Execute(std::move(work.batch));
  }
}

absl::Status Worker::EnsureStaging(Staging& staging, size_t bytes) {
  if (staging.buffer && staging.buffer->bytes() >= bytes) return absl::OkStatus();
  staging.buffer.reset();
  // Grow geometrically so a slowly growing batch does not reallocate every time.
  size_t want = bytes + bytes / 2;
  ASSIGN_OR_RETURN(staging.buffer, backend_->Allocate(want));
  ReportMemory();
  return absl::OkStatus();
}

void Worker::ReportMemory() {
  if (observer_ == nullptr) return;
  int64_t bytes = 0;
  for (const Staging* s : {&x1_, &x2_, &grad_out_, &out_, &grad_x1_, &grad_x2_, &grad_weight_}) {
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

absl::StatusOr<std::vector<float>> Worker::ReadGradient(const Model& model, bool zero) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<float> grad(static_cast<size_t>(model.plan().weight_numel()), 0.0f);
  auto it = replicas_.find(model.instance_id());
  if (it == replicas_.end() || !it->second.grad) return grad;
  size_t bytes = grad.size() * sizeof(float);
  RETURN_IF_ERROR(backend_->CopyToHost(grad.data(), it->second.grad->data(), bytes, ctx_));
  if (zero) {
    std::vector<float> zeros(grad.size(), 0.0f);
    RETURN_IF_ERROR(backend_->CopyFromHost(it->second.grad->data(), zeros.data(), bytes, ctx_));
  }
  RETURN_IF_ERROR(backend_->Synchronize(ctx_));
  return grad;
}

absl::Status Worker::ZeroGradient(const Model& model) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(model.instance_id());
  if (it == replicas_.end() || !it->second.grad) return absl::OkStatus();
  std::vector<float> zeros(static_cast<size_t>(model.plan().weight_numel()), 0.0f);
  RETURN_IF_ERROR(backend_->CopyFromHost(it->second.grad->data(), zeros.data(), zeros.size() * sizeof(float), ctx_));
  return backend_->Synchronize(ctx_);
}

absl::Status Worker::Warm(const Model& model) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<Replica*> replica = ReplicaFor(model, model.weights());
  if (!replica.ok()) return replica.status();
  return backend_->Synchronize(ctx_);
}

void Worker::DropModel(const Model& model) {
  std::lock_guard<std::mutex> lock(mu_);
  replicas_.erase(model.instance_id());
  ReportMemory();
}

void Worker::Execute(std::vector<std::unique_ptr<PendingRequest>> batch) {
  auto start = std::chrono::steady_clock::now();
  absl::Time launch_time = absl::Now();
  std::vector<InferenceResult> results(batch.size());
  absl::Status status;
  int64_t samples = 0;
  for (const auto& pending : batch) samples += pending->batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Model& model = *batch.front()->model;
    WeightsSnapshot weights = model.weights();
    absl::StatusOr<Replica*> replica = ReplicaFor(model, weights);
    status = replica.status();
    if (status.ok()) status = RunBatch(batch, **replica, results);
    for (auto& result : results) result.model_version = weights.version;
    // A launch admitted before its model was deleted may have rebuilt the replica: free it.
    if (model.deleted()) {
      replicas_.erase(model.instance_id());
      ReportMemory();
    }
  }
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
      pending.done(status);
      continue;
    }
    results[i].device = device_;
    results[i].executed_batch = samples;
    results[i].queue_seconds = queue_seconds;
    results[i].compute_seconds = compute_seconds;
    pending.done(std::move(results[i]));
  }
}

absl::Status Worker::RunBatch(std::vector<std::unique_ptr<PendingRequest>>& batch, Replica& replica,
                              std::vector<InferenceResult>& results) {
  const InferenceRequest& head = batch.front()->request;
  const TensorProductPlan& plan = batch.front()->model->plan();
  const int64_t dim_in1 = plan.dim_in1(), dim_in2 = plan.dim_in2(), dim_out = plan.dim_out();
  int64_t samples = 0;
  for (const auto& pending : batch) samples += pending->batch;
  const size_t f = sizeof(float);
  const bool explicit_grad_out = head.op == Op::kBackward && head.grad_out.present();

  // Inputs go to the device in one of two ways. Small requests are gathered back to back on the
  // host and copied once (one cudaMemcpy instead of dozens of tiny ones); large ones are copied
  // each straight from where it was decoded into its rows (a host memcpy of megabytes costs as
  // much as the transfer itself). A lone request is always copied directly.
  int64_t input_bytes = 0;
  for (const auto& pending : batch) input_bytes += pending->bytes;
  const bool direct = batch.size() == 1 || input_bytes / static_cast<int64_t>(batch.size()) >= kDirectCopyBytes;
  auto upload = [&](Staging& staging, std::vector<float>& host, int64_t dim, auto member) -> absl::Status {
    RETURN_IF_ERROR(EnsureStaging(staging, samples * dim * f));
    int64_t row = 0;
    if (direct) {
      for (const auto& pending : batch) {
        const HostTensor& t = pending->request.*member;
        RETURN_IF_ERROR(backend_->CopyFromHost(static_cast<float*>(staging.data()) + row * dim, t.data.data(),
                                               t.data.size() * f, ctx_));
        row += pending->batch;
      }
      return absl::OkStatus();
    }
    host.resize(static_cast<size_t>(samples * dim));
    for (const auto& pending : batch) {
      const HostTensor& t = pending->request.*member;
      std::memcpy(host.data() + row * dim, t.data.data(), t.data.size() * f);
      row += pending->batch;
    }
    return backend_->CopyFromHost(staging.data(), host.data(), samples * dim * f, ctx_);
  };
  RETURN_IF_ERROR(upload(x1_, host_in_[0], dim_in1, &InferenceRequest::x1));
  RETURN_IF_ERROR(upload(x2_, host_in_[1], dim_in2, &InferenceRequest::x2));
  if (explicit_grad_out) RETURN_IF_ERROR(upload(grad_out_, host_in_[2], dim_out, &InferenceRequest::grad_out));

  ConstTensorView weight{replica.weights->data(), DType::kFloat32, {plan.weight_numel()}};
  ConstTensorView x1{x1_.data(), DType::kFloat32, {samples, dim_in1}};
  ConstTensorView x2{x2_.data(), DType::kFloat32, {samples, dim_in2}};
  ExecutionContext ctx = ctx_;
  ctx.precision = head.precision;

  const bool want_out = head.op == Op::kForward || (head.want_out && !explicit_grad_out);
  TensorView out;
  if (want_out) {
    RETURN_IF_ERROR(EnsureStaging(out_, samples * dim_out * f));
    out = {out_.data(), DType::kFloat32, {samples, dim_out}};
  }
  GradientOutputs grads;
  if (head.op == Op::kBackward) {
    if (head.want_grad_x1) {
      RETURN_IF_ERROR(EnsureStaging(grad_x1_, samples * dim_in1 * f));
      grads.grad_x1 = {grad_x1_.data(), DType::kFloat32, {samples, dim_in1}};
    }
    if (head.want_grad_x2) {
      RETURN_IF_ERROR(EnsureStaging(grad_x2_, samples * dim_in2 * f));
      grads.grad_x2 = {grad_x2_.data(), DType::kFloat32, {samples, dim_in2}};
    }
    size_t weight_bytes = static_cast<size_t>(plan.weight_numel()) * f;
    if (head.weight_grad == WeightGradMode::kReturn) {
      RETURN_IF_ERROR(EnsureStaging(grad_weight_, weight_bytes));
      grads.grad_weight = {grad_weight_.data(), DType::kFloat32, {plan.weight_numel()}};
    } else if (head.weight_grad == WeightGradMode::kAccumulate) {
      if (!replica.grad) {
        ASSIGN_OR_RETURN(replica.grad, backend_->Allocate(weight_bytes));
        std::vector<float> zeros(static_cast<size_t>(plan.weight_numel()), 0.0f);
        RETURN_IF_ERROR(backend_->CopyFromHost(replica.grad->data(), zeros.data(), weight_bytes, ctx_));
        ReportMemory();
      }
      grads.grad_weight = {replica.grad->data(), DType::kFloat32, {plan.weight_numel()}};
      grads.accumulate_grad_weight = true;
    }
  }

  if (head.op == Op::kForward) {
    RETURN_IF_ERROR(backend_->Forward(*replica.prepared, weight, x1, x2, out, ctx));
  } else if (explicit_grad_out) {
    ConstTensorView grad_out{grad_out_.data(), DType::kFloat32, {samples, dim_out}};
    RETURN_IF_ERROR(backend_->Backward(*replica.prepared, weight, x1, x2, grad_out, grads, ctx));
  } else {
    RETURN_IF_ERROR(backend_->LossGradient(*replica.prepared, *head.loss, weight, x1, x2, out, grads, ctx));
  }

  // Outputs come back the same two ways: straight into each request's result, or in one copy
  // that is then split on the host.
  auto scatter = [&](const Staging& staging, int64_t dim, std::vector<float>& host, HostTensor InferenceResult::*member)
      -> absl::Status {
    int64_t row = 0;
    if (direct) {
      for (size_t i = 0; i < batch.size(); ++i) {
        const int64_t n = batch[i]->batch;
        HostTensor& t = results[i].*member;
        t = HostTensor::Zeros({n, dim});
        RETURN_IF_ERROR(backend_->CopyToHost(t.data.data(), static_cast<const float*>(staging.data()) + row * dim,
                                             n * dim * f, ctx_));
        row += n;
      }
      return absl::OkStatus();
    }
    host.resize(static_cast<size_t>(samples * dim));
    RETURN_IF_ERROR(backend_->CopyToHost(host.data(), staging.data(), samples * dim * f, ctx_));
    RETURN_IF_ERROR(backend_->Synchronize(ctx_));
    for (size_t i = 0; i < batch.size(); ++i) {
      const int64_t n = batch[i]->batch;
      HostTensor& t = results[i].*member;
      t.shape = {n, dim};
      t.data.assign(host.begin() + row * dim, host.begin() + (row + n) * dim);
      row += n;
    }
    return absl::OkStatus();
  };
  if (want_out) RETURN_IF_ERROR(scatter(out_, dim_out, host_out_, &InferenceResult::out));
  if (grads.grad_x1.present()) RETURN_IF_ERROR(scatter(grad_x1_, dim_in1, host_out_, &InferenceResult::grad_x1));
  if (grads.grad_x2.present()) RETURN_IF_ERROR(scatter(grad_x2_, dim_in2, host_out_, &InferenceResult::grad_x2));
  if (head.op == Op::kBackward && head.weight_grad == WeightGradMode::kReturn) {
    // Only unmerged launches return the weight gradient (the batcher never merges them).
    HostTensor& g = results.front().grad_weight;
    g = HostTensor::Zeros({plan.weight_numel()});
    RETURN_IF_ERROR(backend_->CopyToHost(g.data.data(), grad_weight_.data(), plan.weight_numel() * f, ctx_));
  }
  return backend_->Synchronize(ctx_);
}

}  // namespace tpserve::server
