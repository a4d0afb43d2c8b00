#include "server/grpc/compute_service.h"

#include <algorithm>
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
#include "server/grpc/forward_wire.h"
#include "server/grpc/request_parsing.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::server {
namespace {

// Echo's response_bytes: a negative count used to be taken as 0 (echo the payload) without a word.
constexpr char kNegativeResponseBytes[] = "response_bytes: expected >= 0 (0: echo the payload)";

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

// The tensor's elements when it is a well-formed float32 array of `data_bytes` bytes, else -1
// (the caller then lets protobuf and DecodeTensor produce the answer, errors included).
int64_t Float32Elements(const tp::v1::Tensor& header, size_t data_bytes) {
  if (header.dtype() != tp::v1::DTYPE_FLOAT32 || header.shape().empty()) return -1;
  const int64_t numel = wire::ShapeElements(header);
  return numel >= 0 && data_bytes == static_cast<size_t>(numel) * sizeof(float) ? numel : -1;
}

// Echo's answer, sized within the message limit before anything is allocated (unary and Stream
// alike). `memory` holds its bytes of the server's budget until the answer is sent.
absl::Status AnswerEcho(const ServiceEnv& env, tp::v1::EchoRequest* request, tp::v1::EchoResponse* response,
                        MemoryBudget::Reservation* memory) {
  // Room for the response's framing (tag, length) inside one message.
  const int64_t max_payload = std::max<int64_t>(0, env.max_message_bytes - 64);
  const int64_t bytes = request->response_bytes() > 0 ? request->response_bytes()
                                                      : static_cast<int64_t>(request->payload().size());
  if (request->response_bytes() < 0 || bytes > max_payload) {
    return absl::InvalidArgumentError(absl::StrCat("response_bytes ", request->response_bytes(),
                                                   ": expected 0 (echo the payload) to ", max_payload,
                                                   " (the server's max_message_bytes less framing)"));
  }
  if (request->response_bytes() > 0) {
    absl::StatusOr<MemoryBudget::Reservation> reserved = env.core->memory_budget().Reserve(bytes, "an Echo");
    if (!reserved.ok()) return reserved.status();
    *memory = *std::move(reserved);
    response->mutable_payload()->assign(static_cast<size_t>(bytes), '\0');
  } else {
    *response->mutable_payload() = std::move(*request->mutable_payload());
  }
  return absl::OkStatus();
}

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

ComputeServiceImpl::ComputeServiceImpl(const ServiceEnv& env) : env_(env) {
  using grpc::internal::RpcMethod;
  using grpc::internal::RpcServiceMethod;
  using Self = ComputeServiceImpl;
  AddMethod(new RpcServiceMethod(
      "/tp.v1.TensorProductService/Forward", RpcMethod::NORMAL_RPC,
      new grpc::internal::RpcMethodHandler<Self, grpc::ByteBuffer, grpc::ByteBuffer>(
          [](Self* self, grpc::ServerContext* context, const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
            return self->Forward(context, request, response);
          },
          this)));
  AddMethod(UnaryMethod("/tp.v1.TensorProductService/Backward", this, &env_, &Self::Backward));
  AddMethod(ServerStreamingMethod("/tp.v1.TensorProductService/BackwardChunked", this, &env_, &Self::BackwardChunked));
  AddMethod(BidiStreamingMethod("/tp.v1.TensorProductService/Stream", this, &Self::Stream));
  AddMethod(UnaryMethod("/tp.v1.TensorProductService/Echo", this, &env_, &Self::Echo));
}

grpc::Status ComputeServiceImpl::Forward(grpc::ServerContext* context, const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) {
  RpcScope scope(env_, "Forward", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);

  // The usual message (float32 tensors, plain encoding): x1 and x2 go from gRPC's buffer straight
  // into one page-locked lease, which the worker copies to the device.
  std::vector<grpc::Slice> slices;
  std::vector<absl::string_view> pieces;
  if (request->Dump(&slices).ok()) {
    pieces.reserve(slices.size());
    for (const grpc::Slice& slice : slices) {
      pieces.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  wire::ForwardRequestView view;
  std::unique_ptr<HostLease> in_lease;
  absl::StatusOr<InferenceRequest> converted = absl::UnknownError("not converted");
  const tp::v1::ForwardRequest* header = &view.header;
  tp::v1::ForwardRequest message;  // anything else: protobuf parses it, as the generated handler would
  int64_t x1_elements = -1, x2_elements = -1;
  if (wire::ParseForwardRequest(pieces, &view)) {
    x1_elements = Float32Elements(view.header.x1(), view.x1_data.size);
    x2_elements = Float32Elements(view.header.x2(), view.x2_data.size);
  }
  if (x1_elements >= 0 && x2_elements >= 0) {
    // x2 where the worker's staging layout puts it: then one copy moves both to the device.
    const size_t x2_at = static_cast<size_t>(AlignStagingRegion(x1_elements)) * sizeof(float);
    in_lease = env_.core->host_pool().Acquire(x2_at + view.x2_data.size);
    char* base = static_cast<char*>(in_lease->data());
    wire::CopyWireBytes(pieces, view.x1_data, base);
    wire::CopyWireBytes(pieces, view.x2_data, base + x2_at);
    HostTensor x1 = HostTensor::Borrow({view.header.x1().shape().begin(), view.header.x1().shape().end()},
                                       reinterpret_cast<const float*>(base), static_cast<size_t>(x1_elements));
    HostTensor x2 = HostTensor::Borrow({view.header.x2().shape().begin(), view.header.x2().shape().end()},
                                       reinterpret_cast<const float*>(base + x2_at), static_cast<size_t>(x2_elements));
    x1.pinned = x2.pinned = in_lease->pinned();
    converted = FromProto(view.header, std::move(x1), std::move(x2));
  } else {
    grpc::ByteBuffer copy(*request);  // Deserialize consumes its buffer; this one shares the bytes
    if (grpc::Status parsed = ParseRequest(&copy, &message); !parsed.ok()) return scope.Finish(parsed);
    header = &message;
    converted = FromProto(message, wire::Decode::kBorrow);
  }
  scope.set_model(header->model());
  if (!converted.ok()) return scope.Finish(converted.status());

  // A float32 result is written by the device into a lease that the response is sent from.
  const tp::v1::DType dtype = ResultDType(header->output_dtype(), header->x1());
  std::unique_ptr<HostLease> out_lease;
  absl::StatusOr<std::shared_ptr<Model>> model = env_.core->FindModel(header->model());
  if (!model.ok()) return scope.Finish(model.status());
  // Shapes before the output is allocated: an x1 of [4096, 0] must not buy batch x dim_out floats.
  if (auto s = env_.core->ValidateShapes(*converted, **model); !s.ok()) return scope.Finish(s);
  const int64_t batch = converted->x1.rows();
  if (dtype == tp::v1::DTYPE_FLOAT32) {
    const int64_t floats = batch * (*model)->plan().dim_out();
    out_lease = env_.core->host_pool().Acquire(static_cast<size_t>(floats) * sizeof(float));
    converted->out_into = static_cast<float*>(out_lease->data());
    converted->out_into_size = static_cast<size_t>(floats);
    converted->out_into_pinned = out_lease->pinned();
  }
  scope.MarkStage("read");
  absl::StatusOr<InferenceResult> result = RunForRpc(*env_.core, *std::move(converted), context);
  scope.MarkStage("core");
  if (!result.ok()) return scope.Finish(result.status());
  scope.set_device(result->device);

  tp::v1::ForwardResponse fields;
  fields.set_model_version(result->model_version);
  fields.set_executed_batch(result->executed_batch);
  fields.set_device(result->device);
  if (out_lease != nullptr && result->out.values() == out_lease->data()) {
    for (int64_t extent : result->out.shape) fields.mutable_out()->add_shape(extent);
    fields.mutable_out()->set_dtype(tp::v1::DTYPE_FLOAT32);
    const size_t bytes = result->out.size() * sizeof(float);
    HostLease* lease = out_lease.release();  // gRPC frees the slice, and with it the lease, once sent
    grpc::Slice parts[2] = {
        grpc::Slice(wire::EncodeForwardResponseHead(fields, bytes)),
        grpc::Slice(lease->data(), bytes, [](void* p) { delete static_cast<HostLease*>(p); }, lease)};
    *response = grpc::ByteBuffer(parts, 2);
  } else {
    ToProto(*result, dtype, &fields);
    bool own_buffer = false;
    grpc::Status serialized =
        grpc::SerializationTraits<tp::v1::ForwardResponse>::Serialize(fields, response, &own_buffer);
    if (!serialized.ok()) return scope.Finish(serialized);
  }
  scope.MarkStage("write");
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

grpc::Status ComputeServiceImpl::Stream(grpc::ServerContext* context,
                                        grpc::ServerReaderWriter<tp::v1::StreamResponse, grpc::ByteBuffer>* stream) {
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
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<Entry>> entries;
    bool reads_done = false;
    bool writer_failed = false;
  };
  auto state = std::make_shared<State>();
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  // Each request's own count (tp_requests_total, latency), with the device it ran or failed on.
  auto record = [this](const Entry& entry, grpc::StatusCode code) {
    if (env_.metrics == nullptr) return;
    std::string device = "none";
    if (entry.result.has_value() && !entry.echo.has_value()) {
      device = entry.result->ok() ? (*entry.result)->device : DeviceOf(entry.result->status());
      if (device.empty()) device = "none";
    }
    env_.metrics->RequestFinished(
        entry.method, entry.model, device, StatusCodeName(code),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - entry.start).count());
  };

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
        response.set_message(StatusMessageForWire(result.status().message()));
      } else if (entry->forward) {
        ToProto(*result, entry->dtype, response.mutable_forward());
      } else {
        ToProto(*result, entry->dtype, /*inline_grad_weight=*/false, response.mutable_backward());
      }
      const bool written = stream->Write(response);
      entry->memory.Release();
      const bool applied = entry->accumulates && result.ok();  // counted OK even when unsent
      record(*entry, !written && !applied ? grpc::StatusCode::CANCELLED
                                          : static_cast<grpc::StatusCode>(response.code()));
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

  // A message that does not parse ends the reading: the requests before it are answered, then the
  // stream ends with INVALID_ARGUMENT (not OK, as if the client had finished).
  grpc::Status malformed;
  for (;;) {
    auto message = std::make_unique<tp::v1::StreamRequest>();
    if (!ReadMessage(stream, message.get(), &malformed)) break;
    const tp::v1::StreamRequest& request = *message;
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
    if (request.has_echo() && request.echo().response_bytes() < 0) {
      converted = absl::InvalidArgumentError(kNegativeResponseBytes);  // answered with this code, no echo
    } else if (request.has_echo()) {
      entry->echo.emplace();
      absl::Status echoed = AnswerEcho(env_, message->mutable_echo(), &*entry->echo, &entry->memory);
      if (echoed.ok()) {
        converted = InferenceRequest{};  // placeholder: answered without the core
      } else {
        entry->echo.reset();
        converted = echoed;
      }
    } else if (request.has_forward()) {
      entry->forward = true;
      entry->dtype = ResultDType(request.forward().output_dtype(), request.forward().x1());
      converted = FromProto(request.forward(), wire::Decode::kBorrow);
    } else if (request.has_backward()) {
      entry->forward = false;
      entry->accumulates = request.backward().weight_grad() == tp::v1::WEIGHT_GRAD_ACCUMULATE;
      entry->dtype = ResultDType(request.backward().output_dtype(), request.backward().x1());
      if (request.backward().weight_grad() == tp::v1::WEIGHT_GRAD_RETURN) {
        converted = absl::InvalidArgumentError(
            "WEIGHT_GRAD_RETURN is not available on streams; use WEIGHT_GRAD_ACCUMULATE or BackwardChunked");
      } else {
        converted = FromProto(request.backward(), wire::Decode::kBorrow);
      }
    }
    {
      std::unique_lock<std::mutex> lock(state->mu);
      state->cv.wait(lock, [&] {
        return state->writer_failed || static_cast<int64_t>(state->entries.size()) < env_.stream_max_in_flight;
      });
      if (state->writer_failed) {
        record(*entry, grpc::StatusCode::CANCELLED);
        break;
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
    converted->cancelled = cancelled;
    entry->message = std::move(message);  // kept with the entry: the core borrows its tensors
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
  // Requests admitted but never answered (the client cancelled, or went away): counted once the
  // core is done with them (queued ones are dropped as cancelled; one already launched finishes),
  // so that none stays in tp_in_flight_requests: CANCELLED, except an accumulation that was
  // applied, which is counted OK (what the server did; docs/SERVER.md).
  std::deque<std::shared_ptr<Entry>> unanswered;
  {
    std::unique_lock<std::mutex> lock(state->mu);
    state->cv.wait(lock, [&] {
      return std::all_of(state->entries.begin(), state->entries.end(),
                         [](const std::shared_ptr<Entry>& entry) { return entry->result.has_value(); });
    });
    unanswered.swap(state->entries);
  }
  for (const auto& entry : unanswered) {
    const bool applied = entry->accumulates && entry->result->ok();
    record(*entry, applied ? grpc::StatusCode::OK : grpc::StatusCode::CANCELLED);
  }
  if (state->writer_failed) return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
  if (!malformed.ok()) return scope.Finish(malformed);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status ComputeServiceImpl::Echo(grpc::ServerContext* context, const tp::v1::EchoRequest* request,
                                      tp::v1::EchoResponse* response) {
  RpcScope scope(env_, "Echo", context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  if (request->response_bytes() < 0) return scope.Finish(absl::InvalidArgumentError(kNegativeResponseBytes));
  // The generated handler hands us a const request; its payload is copied as before.
  tp::v1::EchoRequest sized;
  sized.set_response_bytes(request->response_bytes());
  if (request->response_bytes() <= 0) *sized.mutable_payload() = request->payload();
  MemoryBudget::Reservation memory;
  return scope.Finish(AnswerEcho(env_, &sized, response, &memory));
}

}  // namespace tpserve::server
