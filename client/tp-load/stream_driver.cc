// LoadDriver's stream transport: each worker keeps one bidirectional Stream with up to `window`
// requests in flight. Responses come back in request order, so the reader pairs each with the
// oldest request waiting; a response whose request_id is not that one (out of order, or a second
// answer) is counted as DATA_LOSS. A broken stream fails its waiting requests with the stream's
// status and the worker opens a new one (gRPC does not retry streams).
#include <condition_variable>
#include <deque>
#include <mutex>

#include "client/tp-load/driver.h"

namespace tpserve::load {

struct StreamPending {
  uint64_t sequence = 0;
  int index = 0;
  bool backward = false, late = false;
  Clock::time_point scheduled;
};

struct StreamState {
  std::mutex mu;
  std::condition_variable window_open;
  std::deque<StreamPending> pending;
  bool broken = false;
};

void LoadDriver::StreamWorker(int window, ArrivalSchedule* schedule) {
  while (!stop_.load()) {
    client::TpClient::Stream stream = context_.client->OpenStream();
    StreamState state;
    std::thread reader([&] { ReadStream(stream, state); });
    WriteStream(stream, state, window, schedule);
    stream.rpc->WritesDone();
    {
      // The answers still due get one request deadline; a server that hangs is cut off.
      std::unique_lock<std::mutex> lock(state.mu);
      const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(context_.options->deadline_s));
      while (!state.broken && !state.pending.empty() && Clock::now() < deadline) {
        state.window_open.wait_for(lock, std::chrono::milliseconds(50));
      }
      if (!state.broken && !state.pending.empty()) stream.context->TryCancel();
    }
    reader.join();
    FailPending(state, stream.rpc->Finish());
    if (!stop_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void LoadDriver::WriteStream(client::TpClient::Stream& stream, StreamState& state, int window,
                             ArrivalSchedule* schedule) {
  // Own copies: request_id is set on the message before each Write (which serializes it at once).
  std::vector<tp::v1::StreamRequest> forwards = context_.workload->stream_forwards;
  std::vector<tp::v1::StreamRequest> backwards = context_.workload->stream_backwards;
  tp::v1::StreamRequest echo = context_.workload->stream_echo;
  const bool echoes = context_.options->operation == Operation::kEcho;
  while (!stop_.load()) {
    Clock::time_point scheduled = Clock::now();
    if (schedule != nullptr) {
      scheduled = start_ + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(schedule->NextOffsetSeconds()));
      if (!SleepUntil(scheduled)) return;
    }
    StreamPending p;
    {
      std::unique_lock<std::mutex> lock(state.mu);
      while (static_cast<int>(state.pending.size()) >= window && !state.broken && !stop_.load()) {
        state.window_open.wait_for(lock, std::chrono::milliseconds(50));
      }
      if (state.broken || stop_.load()) return;
      if (schedule == nullptr) scheduled = Clock::now();  // closed loop: sent as a slot frees
      p = {sequence_++, 0, false, Clock::now() - scheduled > kLateSend, scheduled};
      p.index = InputIndex(p.sequence);
      p.backward = IsBackward(p.sequence);
      state.pending.push_back(p);
    }
    tp::v1::StreamRequest& message =
        echoes ? echo : (p.backward ? backwards : forwards)[static_cast<size_t>(p.index)];
    message.set_request_id(p.sequence);
    if (!stream.rpc->Write(message)) return;
  }
}

void LoadDriver::ReadStream(client::TpClient::Stream& stream, StreamState& state) {
  tp::v1::StreamResponse response;
  while (stream.rpc->Read(&response)) {
    StreamPending p;
    bool unexpected = false;
    {
      std::lock_guard<std::mutex> lock(state.mu);
      unexpected = state.pending.empty();
      if (!unexpected) {
        p = state.pending.front();
        state.pending.pop_front();
      }
    }
    state.window_open.notify_all();
    if (unexpected) {
      context_.recorder->Record(0, static_cast<int>(grpc::StatusCode::DATA_LOSS), 0, 0, false);
      continue;
    }
    RecordStreamResponse(response, p);
  }
  std::lock_guard<std::mutex> lock(state.mu);
  state.broken = true;
  state.window_open.notify_all();
}

void LoadDriver::RecordStreamResponse(const tp::v1::StreamResponse& response, const StreamPending& p) {
  const Workload& w = *context_.workload;
  int code = response.code();
  if (response.request_id() != p.sequence) code = static_cast<int>(grpc::StatusCode::DATA_LOSS);
  const bool echo = context_.options->operation == Operation::kEcho;
  if (code == 0 && !echo && context_.checker->Wants(p.sequence)) {
    if (p.backward) context_.checker->CheckBackward(p.index, response.backward());
    else context_.checker->CheckForward(p.index, response.forward());
  }
  const int64_t samples = echo ? 0 : w.forwards[static_cast<size_t>(p.index)].x1().shape(0);
  context_.recorder->Record(MillisecondsSince(p.scheduled), code, samples,
                            p.backward ? w.backward_bytes : w.forward_bytes, p.late);
}

void LoadDriver::FailPending(StreamState& state, const grpc::Status& status) {
  const int code = status.ok() ? static_cast<int>(grpc::StatusCode::UNAVAILABLE) : status.error_code();
  std::lock_guard<std::mutex> lock(state.mu);
  for (const StreamPending& p : state.pending) {
    context_.recorder->Record(MillisecondsSince(p.scheduled), code, 0, 0, p.late);
  }
  state.pending.clear();
}

}  // namespace tpserve::load
