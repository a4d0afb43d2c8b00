// The core's unit of work: one forward or backward call on one model, with owning host tensors,
// and its result. Independent of any transport.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "kernels/core/backend.h"
#include "server/core/host_tensor.h"
#include "server/core/staging_layout.h"

namespace tpserve::server {

class CallBuffers;  // call_buffers.h

enum class Op : uint8_t { kForward, kBackward };

enum class WeightGradMode : uint8_t { kNone, kReturn, kAccumulate };

struct InferenceRequest {
  std::string model;
  Op op = Op::kForward;
  HostTensor x1;  // [batch, dim_in1]
  HostTensor x2;  // [batch, dim_in2]
  // Backward: an explicit grad_out [batch, dim_out], or (when absent) `loss`.
  HostTensor grad_out;
  std::optional<Loss> loss;
  bool want_out = false;  // backward with a loss: also return out
  bool want_grad_x1 = false;
  bool want_grad_x2 = false;
  WeightGradMode weight_grad = WeightGradMode::kNone;
  Precision precision = Precision::kFp32;
  // Optional: where `out` ([batch, dim_out] float32) is written, in memory the submitter keeps alive
  // until the result callback; the result's `out` then borrows it. Saves a copy when the caller
  // already holds the buffer the answer goes out in (a unary response's bytes).
  float* out_into = nullptr;
  size_t out_into_size = 0;  // floats there; a result that does not fit it is returned as usual
  bool out_into_pinned = false;  // out_into is page-locked: the device copies the result straight there
  // Set by InferenceCore::LeaseBuffers: x1, x2 (grad_out) and out_into lie in these page-locked
  // buffers, in the workers' staging layout, and they carry the request's model (call_buffers.h).
  const CallBuffers* buffers = nullptr;

  // Dropped with DEADLINE_EXCEEDED / CANCELLED if still queued when these trip.
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<std::atomic<bool>> cancelled;
};

// The tensors a launch of `r` moves to and from the device (the staging layout's regions).
inline StagingWants StagingWantsOf(const InferenceRequest& r) {
  StagingWants want;
  want.grad_out = r.op == Op::kBackward && r.grad_out.present();
  want.out = r.op == Op::kForward || (r.want_out && !want.grad_out);
  want.grad_x1 = r.op == Op::kBackward && r.want_grad_x1;
  want.grad_x2 = r.op == Op::kBackward && r.want_grad_x2;
  return want;
}

struct InferenceResult {
  HostTensor out;          // forward, or backward with want_out
  HostTensor grad_x1;      // when requested
  HostTensor grad_x2;      // when requested
  HostTensor grad_weight;  // weight_grad == kReturn: [weight_numel]
  uint64_t model_version = 0;
  std::string device;          // "cpu", "cuda:0"
  int64_t executed_batch = 0;  // samples in the launch that computed this request
  double queue_seconds = 0, compute_seconds = 0;
};

// The device a failed call reached travels with its status (a payload), so that the transport can
// label the call's metrics with it (errors per device). Absent: the call reached no device.
inline constexpr char kDevicePayload[] = "type.tpserve/device";
inline absl::Status WithDevice(absl::Status status, const std::string& device) {
  if (!status.ok()) status.SetPayload(kDevicePayload, absl::Cord(device));
  return status;
}
inline std::string DeviceOf(const absl::Status& status) {
  absl::optional<absl::Cord> device = status.GetPayload(kDevicePayload);
  return device.has_value() ? std::string(*device) : std::string();
}

// Called exactly once per submitted request, from a worker thread (or inline on admission errors).
using ResultCallback = std::function<void(absl::StatusOr<InferenceResult>)>;

}  // namespace tpserve::server
