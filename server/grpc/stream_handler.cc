#include "server/grpc/stream_handler.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"
#include "server/grpc/echo.h"
#include "server/grpc/request_parsing.h"

namespace tpserve::server {
namespace {

// Bytes a Stream entry keeps until the client reads its answer: the request (its tensors are
// borrowed by the core) and the answer's tensors (float32 result and its encoding).
int64_t StreamEntryBytes(const ServiceEnv& env, const tp::v1::StreamRequest& request) {
  int64_t bytes = static_cast<int64_t>(request.ByteSizeLong());
  const bool forward = request.has_forward();
  const std::string& name = forward ? request.forward().model() : request.backward().model();
  const tp::v1::Tensor& x1 = forward ? request.forward().x1() : request.backward().x1();
  absl::StatusOr<std::shared_ptr<Model>> model = env.core->FindModel(name);
  if (!model.ok() || x1.shape_size() < 1 || x1.shape(0) < 0) return bytes;
  const TensorProductPlan& plan = (*model)->plan();
  int64_t per_sample = plan.dim_out();  // forward: out
  if (!forward) {
    const tp::v1::BackwardRequest& b = request.backward();
    per_sample = (b.want_out() ? plan.dim_out() : 0) + (b.want_grad_x1() ? plan.dim_in1() : 0) +
                 (b.want_grad_x2() ? plan.dim_in2() : 0);
  }
  // float32 result + its encoding (at most float64): 12 bytes per value.
  return bytes + std::min<int64_t>(x1.shape(0), env.core->config().max_batch_size) * per_sample * 12;
}

}  // namespace

// One entry per request, in arrival order; the writer answers the front one when it is done.
struct StreamHandler::Entry {
  uint64_t request_id = 0;
  bool forward = true;
  tp::v1::DType dtype = tp::v1::DTYPE_FLOAT32;
  std::optional<absl::StatusOr<InferenceResult>> result;
  std::optional<tp::v1::EchoResponse> echo;
  // The request as read: its float32 tensors are borrowed by the core until `result` is set.
  std::unique_ptr<tp::v1::StreamRequest> message;
  // Its share of the memory budget until the answer is written.
  MemoryBudget::Reservation memory;
  // Each request on a stream is also counted on its own ("Stream/Forward", ...).
  const char* method = "Stream/Echo";
  std::string model;
  bool accumulates = false;  // a backward that adds to the gradient buffer
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

struct StreamHandler::State {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Entry>> entries;
  bool reads_done = false;
  bool writer_failed = false;
};

StreamHandler::StreamHandler(const ServiceEnv& env, std::atomic<int64_t>* open_streams,
                             grpc::ServerContext* context, ServerStream* stream)
    : env_(env),
      open_streams_(open_streams),
      context_(context),
      stream_(stream),
      state_(std::make_shared<State>()),
      cancelled_(std::make_shared<std::atomic<bool>>(false)) {}

grpc::Status StreamHandler::Run() {
  RpcScope scope(env_, "Stream", context_);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  struct StreamSlot {
    std::atomic<int64_t>& open;
    ~StreamSlot() { open.fetch_sub(1); }
  } slot{*open_streams_};
  if (const int64_t open = open_streams_->fetch_add(1); open >= env_.max_streams) {
    return scope.Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     absl::StrCat(open, " Stream calls are open (the server's max_streams is ",
                                                  env_.max_streams, "); retry later or use unary calls")));
  }
  // Out of threads (a process limit, memory): refuse this stream rather than let the exception
  // end the process.
  std::thread writer;
  try {
    writer = std::thread([this] { WriteAnswers(); });
  } catch (const std::system_error& e) {
    return scope.Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     absl::StrCat("cannot start this stream's writer thread: ", e.what())));
  }
  grpc::Status malformed;
  ReadRequests(&malformed);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->reads_done = true;
    state_->cv.notify_all();
  }
  writer.join();
  CountUnanswered();
  if (state_->writer_failed) return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
  if (!malformed.ok()) return scope.Finish(malformed);
  return scope.Finish(grpc::Status::OK);
}

absl::StatusOr<InferenceRequest> StreamHandler::Convert(tp::v1::StreamRequest& request, Entry& entry) {
  entry.request_id = request.request_id();
  if (request.has_forward()) {
    entry.method = "Stream/Forward";
    entry.model = request.forward().model();
  } else if (request.has_backward()) {
    entry.method = "Stream/Backward";
    entry.model = request.backward().model();
  }
  if (env_.metrics != nullptr) env_.metrics->RequestStarted(entry.method);
  if (request.has_echo()) {
    if (request.echo().response_bytes() < 0) {
      return absl::InvalidArgumentError(kNegativeResponseBytes);  // answered with this code, no echo
    }
    entry.echo.emplace();
    absl::Status echoed = AnswerEcho(env_, request.mutable_echo(), &*entry.echo, &entry.memory);
    if (echoed.ok()) return InferenceRequest{};  // placeholder: answered without the core
    entry.echo.reset();
    return echoed;
  }
  if (request.has_forward()) {
    entry.forward = true;
    entry.dtype = ResultDType(request.forward().output_dtype(), request.forward().x1());
    return FromProto(request.forward(), wire::Decode::kBorrow);
  }
  if (request.has_backward()) {
    entry.forward = false;
    entry.accumulates = request.backward().weight_grad() == tp::v1::WEIGHT_GRAD_ACCUMULATE;
    entry.dtype = ResultDType(request.backward().output_dtype(), request.backward().x1());
    if (request.backward().weight_grad() == tp::v1::WEIGHT_GRAD_RETURN) {
      return absl::InvalidArgumentError(
          "WEIGHT_GRAD_RETURN is not available on streams; use WEIGHT_GRAD_ACCUMULATE or BackwardChunked");
    }
    return FromProto(request.backward(), wire::Decode::kBorrow);
  }
  return absl::InvalidArgumentError("stream request has no op");
}

void StreamHandler::ReadRequests(grpc::Status* malformed) {
  const std::shared_ptr<State>& state = state_;
  for (;;) {
    auto message = std::make_unique<tp::v1::StreamRequest>();
    if (!ReadMessage(stream_, message.get(), malformed)) return;
    auto entry = std::make_shared<Entry>();
    absl::StatusOr<InferenceRequest> converted = Convert(*message, *entry);
    {
      std::unique_lock<std::mutex> lock(state->mu);
      state->cv.wait(lock, [&] {
        return state->writer_failed || static_cast<int64_t>(state->entries.size()) < env_.stream_max_in_flight;
      });
      if (state->writer_failed) {
        Record(*entry, grpc::StatusCode::CANCELLED);
        return;
      }
      state->entries.push_back(entry);
    }
    if (converted.ok() && !entry->echo.has_value()) {
      // Answers wait here until the client reads them: they count against the memory budget.
      absl::StatusOr<MemoryBudget::Reservation> reserved = env_.core->memory_budget().Reserve(
          StreamEntryBytes(env_, *message), absl::StrCat("Stream request ", entry->request_id));
      if (reserved.ok()) {
        entry->memory = *std::move(reserved);
      } else {
        converted = reserved.status();
      }
    }
    if (!converted.ok() || entry->echo.has_value()) {
      std::lock_guard<std::mutex> lock(state->mu);
      entry->result = converted.ok() ? absl::StatusOr<InferenceResult>(InferenceResult{}) : converted.status();
      state->cv.notify_all();
      continue;
    }
    converted->cancelled = cancelled_;
    entry->message = std::move(message);  // kept with the entry: the core borrows its tensors
    env_.core->Submit(*std::move(converted), [state, entry](absl::StatusOr<InferenceResult> result) {
      std::lock_guard<std::mutex> lock(state->mu);
      entry->result = std::move(result);
      state->cv.notify_all();
    });
  }
}

void StreamHandler::WriteAnswers() {
  State& state = *state_;
  for (;;) {
    std::shared_ptr<Entry> entry;
    {
      std::unique_lock<std::mutex> lock(state.mu);
      for (;;) {
        if (!state.entries.empty() && state.entries.front()->result.has_value()) break;
        if (state.entries.empty() && state.reads_done) return;
        if (context_->IsCancelled()) {
          cancelled_->store(true);
          state.writer_failed = true;
          state.cv.notify_all();
          return;
        }
        state.cv.wait_for(lock, std::chrono::milliseconds(20));
      }
      entry = state.entries.front();
      state.entries.pop_front();
    }
    state.cv.notify_all();  // room for the reader
    tp::v1::StreamResponse response;
    response.set_request_id(entry->request_id);
    const absl::StatusOr<InferenceResult>& result = *entry->result;
    if (entry->echo.has_value()) {
      *response.mutable_echo() = std::move(*entry->echo);
    } else if (!result.ok()) {
      response.set_code(static_cast<int>(result.status().code()));
      response.set_message(StatusMessageForWire(result.status().message()));
    } else if (entry->forward) {
      ToProto(*result, entry->dtype, response.mutable_forward());
    } else {
      ToProto(*result, entry->dtype, /*inline_grad_weight=*/false, response.mutable_backward());
    }
    const bool written = stream_->Write(response);
    entry->memory.Release();
    const bool applied = entry->accumulates && result.ok();  // counted OK even when unsent
    Record(*entry, !written && !applied ? grpc::StatusCode::CANCELLED : static_cast<grpc::StatusCode>(response.code()));
    if (!written) {
      std::lock_guard<std::mutex> lock(state.mu);
      state.writer_failed = true;
      cancelled_->store(true);
      state.cv.notify_all();
      return;
    }
  }
}

void StreamHandler::CountUnanswered() {
  // Queued ones are dropped as cancelled; one already launched finishes. So that none stays in
  // tp_in_flight_requests: CANCELLED, except an accumulation that was applied, which is counted
  // OK (what the server did; docs/SERVER.md).
  std::deque<std::shared_ptr<Entry>> unanswered;
  {
    std::unique_lock<std::mutex> lock(state_->mu);
    state_->cv.wait(lock, [&] {
      return std::all_of(state_->entries.begin(), state_->entries.end(),
                         [](const std::shared_ptr<Entry>& entry) { return entry->result.has_value(); });
    });
    unanswered.swap(state_->entries);
  }
  for (const auto& entry : unanswered) {
    const bool applied = entry->accumulates && entry->result->ok();
    Record(*entry, applied ? grpc::StatusCode::OK : grpc::StatusCode::CANCELLED);
  }
}

void StreamHandler::Record(const Entry& entry, grpc::StatusCode code) const {
  if (env_.metrics == nullptr) return;
  std::string device = "none";
  if (entry.result.has_value() && !entry.echo.has_value()) {
    device = entry.result->ok() ? (*entry.result)->device : DeviceOf(entry.result->status());
    if (device.empty()) device = "none";
  }
  env_.metrics->RequestFinished(entry.method, entry.model, device, StatusCodeName(code),
                                std::chrono::duration<double>(std::chrono::steady_clock::now() - entry.start).count());
}

}  // namespace tpserve::server
