// What tp-load sends: a few random requests of the configured kind, built once and cycled, with
// the CPU backend's answer to each (computed at start from the model's downloaded weights) so that
// a sample of the server's responses can be checked while the load runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/lib/tp_client.h"
#include "client/tp-load/options.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::load {

// The model `options.model` on the server behind `client`, created (seeded 0) when missing.
absl::StatusOr<tp::v1::ModelInfo> EnsureModel(client::TpClient& client, const LoadOptions& options);

// The CPU backend's results for one input: forward `out`, and the gradients a Backward returns.
struct Reference {
  std::vector<float> out, grad_x1, grad_x2;
};

struct Workload {
  tp::v1::ModelInfo model;
  std::vector<tp::v1::ForwardRequest> forwards;
  std::vector<tp::v1::BackwardRequest> backwards;
  std::vector<tp::v1::StreamRequest> stream_forwards, stream_backwards;  // the same, wrapped
  tp::v1::EchoRequest echo;            // a Forward's request and response bytes, no compute
  tp::v1::StreamRequest stream_echo;
  std::vector<Reference> references;  // per input; empty when verification is off
  int64_t forward_bytes = 0;           // request + response bytes of one Forward
  int64_t backward_bytes = 0;          // of one Backward
  double tolerance = 1e-4;             // relative L2 error a checked response may have
};

// Random inputs (seeded) for `model`, and their references when `weights` is not empty.
absl::StatusOr<Workload> BuildWorkload(const tp::v1::ModelInfo& model, const std::vector<float>& weights,
                                       const LoadOptions& options);

// Relative L2 error of a response against the reference of input `index`.
double ForwardError(const Workload& workload, int index, const tp::v1::ForwardResponse& response);
double BackwardError(const Workload& workload, int index, const tp::v1::BackwardResponse& response);

// Checks a sample of the responses (thread-safe): `fraction` of them, at most `limit` in all.
class ResponseChecker {
 public:
  ResponseChecker(const Workload* workload, double fraction, int limit)
      : workload_(workload), fraction_(fraction), limit_(limit) {}
  // Whether the response with this sequence number is one to check.
  bool Wants(uint64_t sequence) const;
  void CheckForward(int index, const tp::v1::ForwardResponse& response);
  void CheckBackward(int index, const tp::v1::BackwardResponse& response);

  int checked() const { return checked_.load(); }
  int failed() const { return failed_.load(); }
  double max_error() const;

 private:
  void Note(double error, double tolerance);
  const Workload* workload_;
  double fraction_;
  int limit_;
  std::atomic<int> checked_{0}, failed_{0};
  mutable std::mutex mu_;
  double max_error_ = 0;
};

}  // namespace tpserve::load
