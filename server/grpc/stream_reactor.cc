#include "server/grpc/stream_reactor.h"

#include "server/grpc/convert.h"

namespace tpserve::server {

StreamReactor::StreamReactor(const ServiceEnv& env, grpc::CallbackServerContext* context)
    : env_(env), scope_(env, "Stream", context) {
  if (grpc::Status auth = scope_.Authorize(); !auth.ok()) {
    finished_ = true;
    Finish(scope_.Finish(auth));
    return;
  }
  reading_ = true;  // nothing else runs before the first read completes
  StartRead(&request_);
}

std::shared_ptr<StreamReactor::Entry> StreamReactor::Admit(tp::v1::StreamRequest& request) {
  auto entry = std::make_shared<Entry>();
  entry->request_id = request.request_id();
  if (request.has_echo()) {
    entry->echo.emplace();
    if (request.echo().response_bytes() > 0 && request.echo().response_bytes() <= (int64_t{1} << 30)) {
      entry->echo->mutable_payload()->assign(static_cast<size_t>(request.echo().response_bytes()), '\0');
    } else {
      *entry->echo->mutable_payload() = std::move(*request.mutable_echo()->mutable_payload());
    }
    entry->result = InferenceResult{};
    return entry;
  }
  absl::StatusOr<InferenceRequest> converted = absl::InvalidArgumentError("stream request has no op");
  if (request.has_forward()) {
    entry->method = "Stream/Forward";
    entry->model = request.forward().model();
    entry->dtype = ResultDType(request.forward().output_dtype(), request.forward().x1());
    converted = FromProto(request.forward());
  } else if (request.has_backward()) {
    entry->method = "Stream/Backward";
    entry->forward = false;
    entry->model = request.backward().model();
    entry->dtype = ResultDType(request.backward().output_dtype(), request.backward().x1());
    if (request.backward().weight_grad() == tp::v1::WEIGHT_GRAD_RETURN) {
      converted = absl::InvalidArgumentError(
          "WEIGHT_GRAD_RETURN is not available on streams; use WEIGHT_GRAD_ACCUMULATE or BackwardChunked");
    } else {
      converted = FromProto(request.backward());
    }
  }
  if (!converted.ok()) {
    entry->result = converted.status();
    return entry;
  }
  converted->cancelled = cancelled_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++references_;
  }
  // The callback may run before Submit returns (admission errors) or on a worker thread later.
  env_.core->Submit(*std::move(converted), [this, entry](absl::StatusOr<InferenceResult> result) {
    Actions actions;
    {
      std::lock_guard<std::mutex> lock(mu_);
      entry->result = std::move(result);
      actions = Step();
    }
    Run(actions);
    ReleaseReference();
  });
  return entry;
}

void StreamReactor::OnReadDone(bool ok) {
  if (!ok) {
    Actions actions;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      reads_done_ = true;
      actions = Step();
    }
    Run(actions);
    return;
  }
  if (env_.metrics != nullptr) {
    env_.metrics->RequestStarted(request_.has_forward()    ? "Stream/Forward"
                                 : request_.has_backward() ? "Stream/Backward"
                                                           : "Stream/Echo");
  }
  // reading_ stays true while Admit copies out of request_, so no Step elsewhere starts the next
  // read into it. Reads are serial, so entries_ keeps arrival order; an entry answered before it
  // is queued (an admission error) is written by the Step below.
  std::shared_ptr<Entry> entry = Admit(request_);
  Actions actions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reading_ = false;
    entries_.push_back(std::move(entry));
    actions = Step();
  }
  Run(actions);
}

StreamReactor::Actions StreamReactor::Step() {
  Actions actions;
  if (finished_) return actions;
  if (failed_) {
    if (writing_entry_ == nullptr) {
      finished_ = true;
      actions.finish = true;
      actions.status = grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
    }
    return actions;
  }
  if (writing_entry_ == nullptr && !entries_.empty() && entries_.front()->result.has_value()) {
    writing_entry_ = entries_.front();
    entries_.pop_front();
    const Entry& entry = *writing_entry_;
    response_.Clear();
    response_.set_request_id(entry.request_id);
    const absl::StatusOr<InferenceResult>& result = *entry.result;
    if (entry.echo.has_value()) {
      *response_.mutable_echo() = *entry.echo;
    } else if (!result.ok()) {
      response_.set_code(static_cast<int>(result.status().code()));
      response_.set_message(std::string(result.status().message()));
    } else if (entry.forward) {
      ToProto(*result, entry.dtype, response_.mutable_forward());
    } else {
      ToProto(*result, entry.dtype, /*inline_grad_weight=*/false, response_.mutable_backward());
    }
    actions.write = true;
  }
  // Reads continue while fewer than stream_max_in_flight requests await their answer.
  const int64_t outstanding = static_cast<int64_t>(entries_.size()) + (writing_entry_ != nullptr ? 1 : 0);
  if (!reading_ && !reads_done_ && outstanding < env_.stream_max_in_flight) {
    reading_ = true;
    actions.read = true;
  }
  if (reads_done_ && entries_.empty() && writing_entry_ == nullptr) {
    finished_ = true;
    actions.finish = true;
    actions.status = grpc::Status::OK;
  }
  return actions;
}

void StreamReactor::Run(const Actions& actions) {
  if (actions.write) StartWrite(&response_);
  if (actions.read) StartRead(&request_);
  if (actions.finish) Finish(scope_.Finish(actions.status));
}

void StreamReactor::RecordAnswered(const Entry& entry, bool written, int code) {
  if (env_.metrics == nullptr) return;
  const bool known = !entry.model.empty() && env_.core->FindModel(entry.model).ok();
  const std::string device =
      entry.result.has_value() && entry.result->ok() && !entry.echo.has_value() ? (*entry.result)->device : "none";
  const grpc::StatusCode status = written ? static_cast<grpc::StatusCode>(code) : grpc::StatusCode::CANCELLED;
  env_.metrics->RequestFinished(entry.method, known ? entry.model : "-", device, StatusCodeName(status),
                                std::chrono::duration<double>(std::chrono::steady_clock::now() - entry.start).count());
}

void StreamReactor::OnWriteDone(bool ok) {
  Actions actions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    RecordAnswered(*writing_entry_, ok, response_.code());
    writing_entry_.reset();
    if (!ok) {
      failed_ = true;
      cancelled_->store(true);
    }
    actions = Step();
  }
  Run(actions);
}

void StreamReactor::OnCancel() {
  Actions actions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failed_ = true;
    cancelled_->store(true);
    actions = Step();
  }
  Run(actions);
}

void StreamReactor::OnDone() {
  bool last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    // Requests never answered (the stream broke) still leave the in-flight gauge.
    for (const auto& entry : entries_) RecordAnswered(*entry, /*written=*/false, 0);
    entries_.clear();
    last = references_ == 0;
  }
  if (last) delete this;
}

void StreamReactor::ReleaseReference() {
  bool last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    --references_;
    last = done_ && references_ == 0;
  }
  if (last) delete this;
}

}  // namespace tpserve::server
