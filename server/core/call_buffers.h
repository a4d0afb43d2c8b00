// Page-locked memory for one call's tensors, leased from the core (InferenceCore::LeaseBuffers) by
// a transport that reads the tensors' bytes itself: x1, x2 (and an explicit grad_out) laid out as
// a worker's staging inputs (staging_layout.h), so that the worker moves a lone call's inputs to
// the device in one copy, and `out` where the device writes the result, so that the transport can
// send it from there.
//
// The request the lease was made for borrows this memory (its x1, x2, grad_out and out_into) and
// points at it (InferenceRequest::buffers); it also carries the model the lease looked up, so that
// nothing looks it up again. Whoever submits that request keeps the CallBuffers alive, and the
// inputs unchanged, until the result callback has run. Not movable: the request points at it.
#pragma once

#include <cstdint>
#include <memory>

#include "server/core/host_pool.h"
#include "server/core/model.h"
#include "server/core/staging_layout.h"

namespace tpserve::server {

class CallBuffers {
 public:
  CallBuffers() = default;
  CallBuffers(const CallBuffers&) = delete;
  CallBuffers& operator=(const CallBuffers&) = delete;

  // The model the lease was made for (null before a lease).
  const std::shared_ptr<Model>& model() const { return model_; }
  const StagingLayout& layout() const { return layout_; }

  // Where the transport writes each input's values: [batch, dim] floats each, at its place in
  // the layout. nullptr when inputs were not leased (grad_out also when the request has none).
  float* x1() const { return inputs_at(layout_.x1_at); }
  float* x2() const { return inputs_at(layout_.x2_at); }
  float* grad_out() const { return has_grad_out_ ? inputs_at(layout_.grad_out_at) : nullptr; }
  // All inputs as one block of layout().in_floats floats (what a worker copies to the device).
  const float* inputs() const { return inputs_at(0); }
  bool inputs_pinned() const { return in_ != nullptr && in_->pinned(); }

  // The result `out` ([batch, dim_out] floats), nullptr when not leased.
  float* out() const { return out_ != nullptr ? static_cast<float*>(out_->data()) : nullptr; }
  size_t out_floats() const { return out_floats_; }
  // Hands the lease `out` lies in to the caller, once the result is in (a response sent from it
  // frees it when sent).
  std::unique_ptr<HostLease> TakeOutLease() { return std::move(out_); }

 private:
  friend class InferenceCore;
  float* inputs_at(int64_t offset) const {
    return in_ != nullptr ? static_cast<float*>(in_->data()) + offset : nullptr;
  }

  std::shared_ptr<Model> model_;
  StagingLayout layout_;
  bool has_grad_out_ = false;
  std::unique_ptr<HostLease> in_, out_;
  size_t out_floats_ = 0;
};

}  // namespace tpserve::server
