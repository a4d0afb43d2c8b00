// The bidirectional Stream call as a callback-API reactor (one small object per call, no thread
// of its own): requests are read and admitted into the core as they arrive, so several can be
// batched or in flight at once, and answered strictly in arrival order. At most
// stream_max_in_flight requests are outstanding; reading pauses until the oldest is answered.
// A failed request is answered with its status code and does not end the stream.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "grpcpp/grpcpp.h"
#include "server/grpc/rpc_scope.h"
#include "tp/v1/tensor_product.grpc.pb.h"

namespace tpserve::server {

class StreamReactor final : public grpc::ServerBidiReactor<tp::v1::StreamRequest, tp::v1::StreamResponse> {
 public:
  // Deletes itself when gRPC is done with it and no core callback can still reach it.
  StreamReactor(const ServiceEnv& env, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  struct Entry {
    uint64_t request_id = 0;
    bool forward = true;
    tp::v1::DType dtype = tp::v1::DTYPE_FLOAT32;
    std::optional<absl::StatusOr<InferenceResult>> result;  // set when it may be answered
    std::optional<tp::v1::EchoResponse> echo;
    // Each request on a stream is also counted on its own ("Stream/Forward", ...).
    const char* method = "Stream/Echo";
    std::string model;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  };
  // What to do once mu_ is released (gRPC calls are never made under our lock).
  struct Actions {
    bool read = false, write = false, finish = false;
    grpc::Status status;
  };

  ~StreamReactor() override = default;
  std::shared_ptr<Entry> Admit(tp::v1::StreamRequest& request);  // converts; submits to the core
  Actions Step();  // with mu_ held: the next read / write / finish that may start now
  void Run(const Actions& actions);
  void RecordAnswered(const Entry& entry, bool written, int code);
  void ReleaseReference();  // drops a core callback's reference; deletes when the last is gone

  const ServiceEnv& env_;
  RpcScope scope_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);

  std::mutex mu_;
  std::deque<std::shared_ptr<Entry>> entries_;  // arrival order, unanswered
  std::shared_ptr<Entry> writing_entry_;        // the one whose response is being written
  bool reading_ = false, reads_done_ = false, finished_ = false, failed_ = false, done_ = false;
  int references_ = 0;  // core callbacks still to come
  tp::v1::StreamRequest request_;
  tp::v1::StreamResponse response_;
};

}  // namespace tpserve::server
