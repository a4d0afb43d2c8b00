#include "client/tp-load/workload.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "kernels/backend_factory.h"
#include "kernels/core/plan.h"
#include "wire/tensor_bytes.h"

namespace tpserve::load {
namespace {

tp::v1::Tensor RandomTensor(int64_t rows, int64_t cols, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (float& v : values) v = normal(rng);
  tp::v1::Tensor t;
  t.add_shape(rows);
  t.add_shape(cols);
  t.set_dtype(tp::v1::DTYPE_FLOAT32);
  wire::FloatsToBytes(values.data(), values.size(), tp::v1::DTYPE_FLOAT32, t.mutable_data());
  return t;
}

const float* Floats(const tp::v1::Tensor& t) { return reinterpret_cast<const float*>(t.data().data()); }

tp::v1::Precision PrecisionOf(const std::string& name) {
  if (name == "tf32") return tp::v1::PRECISION_TF32;
  if (name == "bf16") return tp::v1::PRECISION_BF16;
  return tp::v1::PRECISION_FP32;
}

double RelativeError(const tp::v1::Tensor& got, const std::vector<float>& want) {
  if (got.dtype() != tp::v1::DTYPE_FLOAT32 || got.data().size() != want.size() * sizeof(float)) return INFINITY;
  const float* g = Floats(got);
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (g[i] - want[i]) * double(g[i] - want[i]);
    norm += want[i] * double(want[i]);
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

tp::v1::BackwardRequest MakeBackward(const tp::v1::ForwardRequest& forward, const tp::v1::ModelInfo& model,
                                     const std::string& loss, std::mt19937_64& rng) {
  tp::v1::BackwardRequest request;
  request.set_model(forward.model());
  *request.mutable_x1() = forward.x1();
  *request.mutable_x2() = forward.x2();
  if (loss == "grad_out") {
    *request.mutable_grad_out() = RandomTensor(forward.x1().shape(0), model.dim_out(), rng);
  } else {
    request.set_loss(loss == "sum" ? tp::v1::LOSS_SUM : tp::v1::LOSS_SUM_TANH);
  }
  request.set_want_grad_x1(true);
  request.set_want_grad_x2(true);
  request.set_weight_grad(tp::v1::WEIGHT_GRAD_NONE);  // leaves the model's state alone: repeatable
  request.set_precision(forward.precision());
  return request;
}

// The CPU backend's forward result and input gradients for one request.
absl::StatusOr<Reference> Compute(Backend& backend, const PreparedPlan& prepared, const TensorProductPlan& plan,
                                  const std::vector<float>& weights, const tp::v1::BackwardRequest& request) {
  const int64_t batch = request.x1().shape(0);
  Reference ref;
  ref.out.resize(static_cast<size_t>(batch * plan.dim_out()));
  ref.grad_x1.resize(static_cast<size_t>(batch * plan.dim_in1()));
  ref.grad_x2.resize(static_cast<size_t>(batch * plan.dim_in2()));
  ConstTensorView w{weights.data(), DType::kFloat32, {plan.weight_numel()}};
  ConstTensorView x1{Floats(request.x1()), DType::kFloat32, {batch, plan.dim_in1()}};
  ConstTensorView x2{Floats(request.x2()), DType::kFloat32, {batch, plan.dim_in2()}};
  TensorView out{ref.out.data(), DType::kFloat32, {batch, plan.dim_out()}};
  if (absl::Status s = backend.Forward(prepared, w, x1, x2, out, {}); !s.ok()) return s;
  GradientOutputs grads;
  grads.grad_x1 = {ref.grad_x1.data(), DType::kFloat32, {batch, plan.dim_in1()}};
  grads.grad_x2 = {ref.grad_x2.data(), DType::kFloat32, {batch, plan.dim_in2()}};
  std::vector<float> scratch(ref.out.size());
  TensorView loss_out{scratch.data(), DType::kFloat32, {batch, plan.dim_out()}};
  absl::Status s;
  if (request.has_grad_out()) {
    ConstTensorView g{Floats(request.grad_out()), DType::kFloat32, {batch, plan.dim_out()}};
    s = backend.Backward(prepared, w, x1, x2, g, grads, {});
  } else {
    Loss loss = request.loss() == tp::v1::LOSS_SUM ? Loss::kSum : Loss::kSumTanh;
    s = backend.LossGradient(prepared, loss, w, x1, x2, loss_out, grads, {});
  }
  if (!s.ok()) return s;
  return ref;
}

absl::Status AddReferences(Workload& workload, const std::vector<float>& weights) {
  const tp::v1::ModelSpec& spec = workload.model.spec();
  absl::StatusOr<TensorProductPlan> plan =
      TensorProductPlan::FullyConnected(spec.irreps_in1(), spec.irreps_in2(), spec.irreps_out());
  if (!plan.ok()) return plan.status();
  if (static_cast<int64_t>(weights.size()) != plan->weight_numel()) {
    return absl::FailedPreconditionError(absl::StrCat("model ", workload.model.name(), ": ", weights.size(),
                                                      " weights downloaded, the plan has ", plan->weight_numel()));
  }
  auto backend = MakeBackend("cpu");
  if (!backend.ok()) return backend.status();
  auto prepared = (*backend)->Prepare(*plan);
  if (!prepared.ok()) return prepared.status();
  for (const tp::v1::BackwardRequest& request : workload.backwards) {
    absl::StatusOr<Reference> ref = Compute(**backend, **prepared, *plan, weights, request);
    if (!ref.ok()) return ref.status();
    workload.references.push_back(*std::move(ref));
  }
  return absl::OkStatus();
}

// Response bytes of a forward and of a backward with both input gradients, float32.
void SetBytes(Workload& workload) {
  const tp::v1::ModelInfo& m = workload.model;
  const int64_t batch = workload.forwards.front().x1().shape(0);
  const int64_t out_bytes = batch * m.dim_out() * 4, grad_bytes = batch * (m.dim_in1() + m.dim_in2()) * 4;
  workload.forward_bytes = static_cast<int64_t>(workload.forwards.front().ByteSizeLong()) + out_bytes;
  workload.backward_bytes = static_cast<int64_t>(workload.backwards.front().ByteSizeLong()) + grad_bytes;
}

}  // namespace

absl::StatusOr<tp::v1::ModelInfo> EnsureModel(client::TpClient& client, const LoadOptions& options) {
  absl::StatusOr<tp::v1::ModelInfo> info = client.GetModel(options.model);
  if (info.status().code() != absl::StatusCode::kNotFound) return info;
  tp::v1::ModelSpec spec;
  spec.set_irreps_in1(options.irreps);
  spec.set_irreps_in2(options.irreps);
  spec.set_irreps_out(options.irreps);
  info = client.CreateModel(options.model, spec, nullptr, /*seed=*/0);
  // Another tp-load (or a second address of the same server) created it first.
  if (info.status().code() == absl::StatusCode::kAlreadyExists) return client.GetModel(options.model);
  return info;
}

absl::StatusOr<Workload> BuildWorkload(const tp::v1::ModelInfo& model, const std::vector<float>& weights,
                                       const LoadOptions& options) {
  if (options.batch < 1) return absl::InvalidArgumentError("--batch: expected >= 1");
  Workload workload;
  workload.model = model;
  workload.tolerance = options.precision == "bf16" ? 3e-2 : options.precision == "tf32" ? 5e-3 : 1e-4;
  std::mt19937_64 rng(options.seed);
  for (int i = 0; i < std::max(1, options.distinct_inputs); ++i) {
    tp::v1::ForwardRequest forward;
    forward.set_model(model.name());
    *forward.mutable_x1() = RandomTensor(options.batch, model.dim_in1(), rng);
    *forward.mutable_x2() = RandomTensor(options.batch, model.dim_in2(), rng);
    forward.set_precision(PrecisionOf(options.precision));
    workload.backwards.push_back(MakeBackward(forward, model, options.loss, rng));
    workload.forwards.push_back(std::move(forward));
    *workload.stream_forwards.emplace_back().mutable_forward() = workload.forwards.back();
    *workload.stream_backwards.emplace_back().mutable_backward() = workload.backwards.back();
  }
  SetBytes(workload);
  const int64_t response_bytes = workload.forward_bytes - static_cast<int64_t>(workload.forwards[0].ByteSizeLong());
  workload.echo.set_payload(std::string(workload.forwards[0].ByteSizeLong(), 'x'));
  workload.echo.set_response_bytes(response_bytes);
  *workload.stream_echo.mutable_echo() = workload.echo;
  if (!weights.empty()) {
    if (absl::Status s = AddReferences(workload, weights); !s.ok()) return s;
  }
  return workload;
}

double ForwardError(const Workload& workload, int index, const tp::v1::ForwardResponse& response) {
  return RelativeError(response.out(), workload.references.at(static_cast<size_t>(index)).out);
}

double BackwardError(const Workload& workload, int index, const tp::v1::BackwardResponse& response) {
  const Reference& ref = workload.references.at(static_cast<size_t>(index));
  return std::max(RelativeError(response.grad_x1(), ref.grad_x1), RelativeError(response.grad_x2(), ref.grad_x2));
}

bool ResponseChecker::Wants(uint64_t sequence) const {
  if (workload_->references.empty() || fraction_ <= 0 || checked_.load() >= limit_) return false;
  // The first response always; then an even spread of `fraction` (Knuth's multiplicative hash).
  if (sequence == 0) return true;
  return static_cast<double>((sequence * 2654435761u) % 1000003u) < fraction_ * 1000003.0;
}

void ResponseChecker::CheckForward(int index, const tp::v1::ForwardResponse& response) {
  Note(ForwardError(*workload_, index, response), workload_->tolerance);
}

void ResponseChecker::CheckBackward(int index, const tp::v1::BackwardResponse& response) {
  // Gradients sum over the output dimension: allow ten times the forward's tolerance.
  Note(BackwardError(*workload_, index, response), 10 * workload_->tolerance);
}

void ResponseChecker::Note(double error, double tolerance) {
  ++checked_;
  if (!(error <= tolerance)) ++failed_;
  std::lock_guard<std::mutex> lock(mu_);
  max_error_ = std::max(max_error_, std::isfinite(error) ? error : 1e30);
}

double ResponseChecker::max_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_error_;
}

}  // namespace tpserve::load
