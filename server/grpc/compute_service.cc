#include "server/grpc/compute_service.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::server {
namespace {

// RESOURCE_EXHAUSTED when a unary Backward would return a weight gradient above the inline limit.
absl::Status CheckInlineGradient(const ServiceEnv& env, const tp::v1::BackwardRequest& request,
                                 tp::v1::DType dtype) {
  if (request.weight_grad() != tp::v1::WEIGHT_GRAD_RETURN) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<Model>> model = env.core->FindModel(request.model());
  if (!model.ok()) return model.status();
  int64_t bytes = (*model)->plan().weight_numel() * static_cast<int64_t>(wire::DTypeSize(dtype));
  if (bytes > env.core->config().max_inline_grad_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("weight gradient of '", request.model(), "' is ", bytes,
                                                     " bytes, over the inline limit of ",
                                                     env.core->config().max_inline_grad_bytes,
                                                     "; use BackwardChunked or WEIGHT_GRAD_ACCUMULATE"));
  }
  return absl::OkStatus();
}

// Sizes the response's float32 `out` bytes now so that the launch writes the result straight into
// them (one copy fewer on the way out). Does nothing when the model or batch is not as expected:
// the core then reports the error, or the result is encoded as usual.
void PrepareOutInto(const ServiceEnv& env, const tp::v1::ForwardRequest& request, InferenceRequest& converted,
                    tp::v1::ForwardResponse* response) {
  absl::StatusOr<std::shared_ptr<Model>> model = env.core->FindModel(request.model());
  const int64_t batch = converted.x1.rows();
  if (!model.ok() || batch < 1 || batch > env.core->config().max_batch_size) return;
  const int64_t floats = batch * (*model)->plan().dim_out();
  std::string* bytes = response->mutable_out()->mutable_data();
  bytes->resize(static_cast<size_t>(floats) * sizeof(float));
  converted.out_into = reinterpret_cast<float*>(bytes->data());
  converted.out_into_size = static_cast<size_t>(floats);
}

}  // namespace

grpc::Status ComputeServiceImpl::Forward(grpc::ServerContext* context, const tp::v1::ForwardRequest* request,
                                         tp::v1::ForwardResponse* response) {
  RpcScope scope(env_, "Forward", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  absl::StatusOr<InferenceRequest> converted = FromProto(*request, wire::Decode::kBorrow);
  if (!converted.ok()) return scope.Finish(converted.status());
  const tp::v1::DType dtype = ResultDType(request->output_dtype(), request->x1());
  if (dtype == tp::v1::DTYPE_FLOAT32) PrepareOutInto(env_, *request, *converted, response);
  absl::StatusOr<InferenceResult> result = RunForRpc(*env_.core, *std::move(converted), context);
  if (!result.ok()) return scope.Finish(result.status());
  scope.set_device(result->device);
  ToProto(*result, dtype, response);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ComputeServiceImpl::Backward(grpc::ServerContext* context, const tp::v1::BackwardRequest* request,
                                          tp::v1::BackwardResponse* response) {
  RpcScope scope(env_, "Backward", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  tp::v1::DType dtype = ResultDType(request->output_dtype(), request->x1());
  if (auto s = CheckInlineGradient(env_, *request, dtype); !s.ok()) return scope.Finish(s);
  absl::StatusOr<InferenceRequest> converted = FromProto(*request, wire::Decode::kBorrow);
  if (!converted.ok()) return scope.Finish(converted.status());
  absl::StatusOr<InferenceResult> result = RunForRpc(*env_.core, *std::move(converted), context);
  if (!result.ok()) return scope.Finish(result.status());
  scope.set_device(result->device);
  ToProto(*result, dtype, /*inline_grad_weight=*/true, response);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ComputeServiceImpl::BackwardChunked(grpc::ServerContext* context, const tp::v1::BackwardRequest* request,
                                                 grpc::ServerWriter<tp::v1::BackwardResponse>* writer) {
  RpcScope scope(env_, "BackwardChunked", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(request->model());
  tp::v1::DType dtype = ResultDType(request->output_dtype(), request->x1());
  absl::StatusOr<InferenceRequest> converted = FromProto(*request, wire::Decode::kBorrow);
  if (!converted.ok()) return scope.Finish(converted.status());
  absl::StatusOr<InferenceResult> result = RunForRpc(*env_.core, *std::move(converted), context);
  if (!result.ok()) return scope.Finish(result.status());
  scope.set_device(result->device);
  tp::v1::BackwardResponse first;
  ToProto(*result, dtype, /*inline_grad_weight=*/false, &first);
  if (!writer->Write(first)) return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
  if (result->grad_weight.present()) {
    tp::v1::BackwardResponse message;
    bool ok = wire::ForEachChunk(result->grad_weight.data.data(), result->grad_weight.numel(), env_.chunk_elements,
                                 [&](const tp::v1::WeightsChunk& chunk) {
                                   *message.mutable_grad_weight_chunk() = chunk;
                                   return writer->Write(message);
                                 });
    if (!ok) return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
  }
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ComputeServiceImpl::Stream(
    grpc::ServerContext* context, grpc::ServerReaderWriter<tp::v1::StreamResponse, tp::v1::StreamRequest>* stream) {
  RpcScope scope(env_, "Stream", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  struct StreamSlot {
    std::atomic<int64_t>& open;
    ~StreamSlot() { open.fetch_sub(1); }
  } slot{open_streams_};
  if (const int64_t open = open_streams_.fetch_add(1); open >= env_.max_streams) {
    return scope.Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     absl::StrCat(open, " Stream calls are open (the server's max_streams is ",
                                                  env_.max_streams, "); retry later or use unary calls")));
  }

  // One entry per request, in arrival order; the writer answers the front one when it is done.
  struct Entry {
    uint64_t request_id = 0;
    bool forward = true;
    tp::v1::DType dtype = tp::v1::DTYPE_FLOAT32;
    std::optional<absl::StatusOr<InferenceResult>> result;
    std::optional<tp::v1::EchoResponse> echo;
    // Each request on a stream is also counted on its own ("Stream/Forward", ...).
    const char* method = "Stream/Echo";
    std::string model;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  };
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<Entry>> entries;
    bool reads_done = false;
    bool writer_failed = false;
  };
  auto state = std::make_shared<State>();
  auto cancelled = std::make_shared<std::atomic<bool>>(false);

  auto write_answers = [&, state] {
    for (;;) {
      std::shared_ptr<Entry> entry;
      {
        std::unique_lock<std::mutex> lock(state->mu);
        for (;;) {
          if (!state->entries.empty() && state->entries.front()->result.has_value()) break;
          if (state->entries.empty() && state->reads_done) return;
          if (context->IsCancelled()) {
            cancelled->store(true);
            state->writer_failed = true;
            state->cv.notify_all();
            return;
          }
          state->cv.wait_for(lock, std::chrono::milliseconds(20));
        }
        entry = state->entries.front();
        state->entries.pop_front();
      }
      state->cv.notify_all();  // room for the reader
      tp::v1::StreamResponse response;
      response.set_request_id(entry->request_id);
      const absl::StatusOr<InferenceResult>& result = *entry->result;
      if (entry->echo.has_value()) {
        *response.mutable_echo() = std::move(*entry->echo);
      } else if (!result.ok()) {
        response.set_code(static_cast<int>(result.status().code()));
        response.set_message(std::string(result.status().message()));
      } else if (entry->forward) {
        ToProto(*result, entry->dtype, response.mutable_forward());
      } else {
        ToProto(*result, entry->dtype, /*inline_grad_weight=*/false, response.mutable_backward());
      }
      const bool written = stream->Write(response);
      if (env_.metrics != nullptr) {
        const bool known = !entry->model.empty() && env_.core->FindModel(entry->model).ok();
        const std::string device = result.ok() && !entry->echo.has_value() ? result->device : "none";
        const grpc::StatusCode code = !written ? grpc::StatusCode::CANCELLED
                                               : static_cast<grpc::StatusCode>(response.code());
        env_.metrics->RequestFinished(
            entry->method, known ? entry->model : "-", device, StatusCodeName(code),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - entry->start).count());
      }
      if (!written) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->writer_failed = true;
        cancelled->store(true);
        state->cv.notify_all();
        return;
      }
    }
  };
  // Out of threads (a process limit, memory): refuse this stream rather than let the exception
  // end the process.
  std::thread writer;
  try {
    writer = std::thread(write_answers);
  } catch (const std::system_error& e) {
    return scope.Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     absl::StrCat("cannot start this stream's writer thread: ", e.what())));
  }

  tp::v1::StreamRequest request;
  while (stream->Read(&request)) {
    auto entry = std::make_shared<Entry>();
    entry->request_id = request.request_id();
    absl::StatusOr<InferenceRequest> converted = absl::InvalidArgumentError("stream request has no op");
    if (request.has_forward()) {
      entry->method = "Stream/Forward";
      entry->model = request.forward().model();
    } else if (request.has_backward()) {
      entry->method = "Stream/Backward";
      entry->model = request.backward().model();
    }
    if (env_.metrics != nullptr) env_.metrics->RequestStarted(entry->method);
    if (request.has_echo()) {
      entry->echo.emplace();
      if (request.echo().response_bytes() > 0 && request.echo().response_bytes() <= (int64_t{1} << 30)) {
        entry->echo->mutable_payload()->assign(static_cast<size_t>(request.echo().response_bytes()), '\0');
      } else {
        *entry->echo->mutable_payload() = std::move(*request.mutable_echo()->mutable_payload());
      }
      converted = InferenceRequest{};  // placeholder: answered without the core
    } else if (request.has_forward()) {
      entry->forward = true;
      entry->dtype = ResultDType(request.forward().output_dtype(), request.forward().x1());
      converted = FromProto(request.forward());
    } else if (request.has_backward()) {
      entry->forward = false;
      entry->dtype = ResultDType(request.backward().output_dtype(), request.backward().x1());
      if (request.backward().weight_grad() == tp::v1::WEIGHT_GRAD_RETURN) {
        converted = absl::InvalidArgumentError(
            "WEIGHT_GRAD_RETURN is not available on streams; use WEIGHT_GRAD_ACCUMULATE or BackwardChunked");
      } else {
        converted = FromProto(request.backward());
      }
    }
    {
      std::unique_lock<std::mutex> lock(state->mu);
      state->cv.wait(lock, [&] {
        return state->writer_failed || static_cast<int64_t>(state->entries.size()) < env_.stream_max_in_flight;
      });
      if (state->writer_failed) {
        if (env_.metrics != nullptr) {
          env_.metrics->RequestFinished(entry->method, "-", "none", "CANCELLED", 0);
        }
        break;
      }
      state->entries.push_back(entry);
    }
    if (!converted.ok() || entry->echo.has_value()) {
      std::lock_guard<std::mutex> lock(state->mu);
      entry->result = converted.ok() ? absl::StatusOr<InferenceResult>(InferenceResult{}) : converted.status();
      state->cv.notify_all();
      continue;
    }
    converted->cancelled = cancelled;
    env_.core->Submit(*std::move(converted), [state, entry](absl::StatusOr<InferenceResult> result) {
      std::lock_guard<std::mutex> lock(state->mu);
      entry->result = std::move(result);
      state->cv.notify_all();
    });
  }
  {
    std::lock_guard<std::mutex> lock(state->mu);
    state->reads_done = true;
    state->cv.notify_all();
  }
  writer.join();
  if (state->writer_failed) return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ComputeServiceImpl::Echo(grpc::ServerContext* context, const tp::v1::EchoRequest* request,
                                      tp::v1::EchoResponse* response) {
  RpcScope scope(env_, "Echo", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  if (request->response_bytes() > 0) {
    if (request->response_bytes() > (int64_t{1} << 30)) {
      return scope.Finish(absl::InvalidArgumentError("response_bytes: expected at most 1 GiB"));
    }
    response->mutable_payload()->assign(static_cast<size_t>(request->response_bytes()), '\0');
  } else {
    *response->mutable_payload() = request->payload();
  }
  return scope.Finish(grpc::Status::OK);
}

}  // namespace tpserve::server
