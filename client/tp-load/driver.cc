#include "client/tp-load/driver.h"

#include <algorithm>

namespace tpserve::load {

LoadDriver::LoadDriver(const DriverContext& context, LoopMode mode, double level)
    : context_(context), start_(Clock::now()) {
  const LoadOptions& options = *context.options;
  const bool stream = options.transport == Transport::kStream;
  if (mode == LoopMode::kOpen) {
    schedule_ = std::make_unique<ArrivalSchedule>(options.arrivals, level, options.seed);
  }
  ArrivalSchedule* schedule = schedule_.get();
  const int concurrency = std::max(1, static_cast<int>(level + 0.5));
  if (!stream) {
    const int threads = mode == LoopMode::kClosed ? concurrency : std::max(1, options.max_outstanding);
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, schedule] { UnaryWorker(schedule); });
    return;
  }
  // Streams share the in-flight requests: a closed loop's N, or an open loop's --max_outstanding.
  const int in_flight = mode == LoopMode::kClosed ? concurrency : std::max(1, options.max_outstanding);
  const int streams = std::clamp(options.streams, 1, in_flight);
  for (int s = 0; s < streams; ++s) {
    const int window = in_flight / streams + (s < in_flight % streams ? 1 : 0);
    threads_.emplace_back([this, window, schedule] { StreamWorker(window, schedule); });
  }
}

LoadDriver::~LoadDriver() { Stop(); }

void LoadDriver::Stop() {
  stop_ = true;
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

bool LoadDriver::SleepUntil(Clock::time_point when) const {
  while (!stop_.load()) {
    auto now = Clock::now();
    if (now >= when) return true;
    std::this_thread::sleep_for(std::min<Clock::duration>(when - now, std::chrono::milliseconds(50)));
  }
  return false;
}

bool LoadDriver::IsBackward(uint64_t sequence) const {
  switch (context_.options->operation) {
    case Operation::kForward: return false;
    case Operation::kBackward: return true;
    case Operation::kEcho: return false;
    case Operation::kMixed: break;
  }
  // An even spread of the fraction over sequence numbers (multiplicative hash, as the checker's).
  return static_cast<double>((sequence * 2246822519u + 1) % 1000003u) < context_.options->backward_fraction * 1000003.0;
}

int LoadDriver::InputIndex(uint64_t sequence) const {
  return static_cast<int>(sequence % context_.workload->forwards.size());
}

LoadDriver::Outcome LoadDriver::CallUnary(uint64_t sequence) {
  const Workload& w = *context_.workload;
  const int index = InputIndex(sequence);
  const bool check = context_.checker->Wants(sequence);
  Outcome outcome;
  if (context_.options->operation == Operation::kEcho) {
    outcome.code = static_cast<int>(context_.client->Echo(w.echo).status().code());
    outcome.bytes = w.forward_bytes;
    return outcome;
  }
  if (IsBackward(sequence)) {
    absl::StatusOr<tp::v1::BackwardResponse> r = context_.client->Backward(w.backwards[index]);
    outcome.code = static_cast<int>(r.status().code());
    if (r.ok() && check) context_.checker->CheckBackward(index, *r);
    outcome.bytes = w.backward_bytes;
  } else {
    absl::StatusOr<tp::v1::ForwardResponse> r = context_.client->Forward(w.forwards[index]);
    outcome.code = static_cast<int>(r.status().code());
    if (r.ok() && check) context_.checker->CheckForward(index, *r);
    outcome.bytes = w.forward_bytes;
  }
  outcome.samples = w.forwards[index].x1().shape(0);
  return outcome;
}

void LoadDriver::UnaryWorker(ArrivalSchedule* schedule) {
  while (!stop_.load()) {
    Clock::time_point scheduled = Clock::now();
    if (schedule != nullptr) {
      scheduled = start_ + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(schedule->NextOffsetSeconds()));
      if (!SleepUntil(scheduled)) return;
    }
    const bool late = Clock::now() - scheduled > kLateSend;
    const Outcome outcome = CallUnary(sequence_++);
    context_.recorder->Record(MillisecondsSince(scheduled), outcome.code, outcome.samples, outcome.bytes, late);
  }
}

}  // namespace tpserve::load
