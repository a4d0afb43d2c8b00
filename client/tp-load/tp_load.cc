// tp-load: load and latency benchmark of a running tpserve.
//
//   1. verify: one Forward on the server against the same tensor product computed locally (CPU
//      backend, the model's downloaded weights); refuses to time a wrong answer;
//   2. latency: one client, unary Forward at --batch, back to back: p50/p90/p99 end to end;
//   3. throughput: --streams concurrent bidirectional Streams, each keeping --window Forward
//      requests in flight, for --duration_s; then the same streams carrying Echo messages of the
//      same request and response bytes (the transport's own ceiling), and unary Echo for
//      reference; the ratio Forward / stream Echo.
// Prints a table and writes JSON (--json). Creates the model (seeded) when it does not exist.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "client/lib/tp_client.h"
#include "kernels/backend_factory.h"
#include "nlohmann/json.hpp"
#include "server/grpc/tensor_codec.h"
#include "server/malloc_tuning.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "tpserve address");
ABSL_FLAG(std::string, token, "", "bearer token");
ABSL_FLAG(bool, tls, false, "TLS channel");
ABSL_FLAG(std::string, tls_ca, "", "PEM roots for --tls");
ABSL_FLAG(std::string, model, "seed", "model to load (created, seeded, when missing)");
ABSL_FLAG(std::string, irreps, "128x0e + 128x1e + 128x2e", "irreps_in1 = irreps_in2 = irreps_out of a created model");
ABSL_FLAG(int64_t, batch, 64, "samples per request");
ABSL_FLAG(int, latency_iters, 200, "timed unary Forward calls (after 10 warm-up calls)");
ABSL_FLAG(int, paired_iters, -1,
          "Forward/Echo pairs, called alternately, for the server's own cost (Forward minus Echo of the same "
          "bytes, pair by pair: host drift cancels); -1: latency_iters, 0: skip");
ABSL_FLAG(int, streams, 32, "concurrent streams in the throughput test (0: skip it)");
ABSL_FLAG(int, window, 4, "requests in flight per stream");
ABSL_FLAG(double, duration_s, 10, "seconds per throughput measurement");
ABSL_FLAG(std::string, precision, "fp32", "fp32 | tf32 | bf16");
ABSL_FLAG(bool, verify_only, false, "stop after the verification");
ABSL_FLAG(std::string, json, "", "write the results here");

namespace tpserve {
namespace {

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(q * (values.size() - 1) + 0.5))];
}

tp::v1::Tensor RandomTensor(int64_t rows, int64_t cols, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (float& v : values) v = normal(rng);
  tp::v1::Tensor t;
  t.add_shape(rows);
  t.add_shape(cols);
  t.set_dtype(tp::v1::DTYPE_FLOAT32);
  wire::FloatsToBytes(values.data(), values.size(), tp::v1::DTYPE_FLOAT32, t.mutable_data());
  return t;
}

const float* Floats(const tp::v1::Tensor& t) { return reinterpret_cast<const float*>(t.data().data()); }

// The server's answer against the CPU backend's on the same weights and inputs.
absl::Status Verify(client::TpClient& client, const tp::v1::ModelInfo& info, const tp::v1::ForwardRequest& request,
                    const tp::v1::ForwardResponse& response, double tolerance, double* error_out) {
  absl::StatusOr<std::vector<float>> weights = client.DownloadWeights(info.name());
  if (!weights.ok()) return weights.status();
  auto plan = TensorProductPlan::FullyConnected(info.spec().irreps_in1(), info.spec().irreps_in2(),
                                                info.spec().irreps_out());
  if (!plan.ok()) return plan.status();
  auto backend = MakeBackend("cpu");
  if (!backend.ok()) return backend.status();
  auto prepared = (*backend)->Prepare(*plan);
  if (!prepared.ok()) return prepared.status();
  int64_t batch = request.x1().shape(0);
  std::vector<float> out(static_cast<size_t>(batch * plan->dim_out()));
  ConstTensorView w{weights->data(), DType::kFloat32, {plan->weight_numel()}};
  ConstTensorView x1{Floats(request.x1()), DType::kFloat32, {batch, plan->dim_in1()}};
  ConstTensorView x2{Floats(request.x2()), DType::kFloat32, {batch, plan->dim_in2()}};
  TensorView o{out.data(), DType::kFloat32, {batch, plan->dim_out()}};
  if (auto s = (*backend)->Forward(**prepared, w, x1, x2, o, {}); !s.ok()) return s;
  const float* got = Floats(response.out());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    diff += (got[i] - out[i]) * double(got[i] - out[i]);
    norm += out[i] * double(out[i]);
  }
  *error_out = std::sqrt(diff / std::max(norm, 1e-30));
  if (!(*error_out <= tolerance)) {
    return absl::InternalError(absl::StrFormat("server result differs from the CPU reference: relative error %.3g > %.3g",
                                               *error_out, tolerance));
  }
  return absl::OkStatus();
}

struct Throughput {
  double requests_per_s = 0, samples_per_s = 0, bytes_per_s = 0;
  int64_t requests = 0, errors = 0;
};

// `streams` bidirectional Streams, each keeping `window` copies of `message` in flight.
Throughput StreamLoad(client::TpClient& client, const tp::v1::StreamRequest& prototype, int64_t samples_per_request,
                      int streams, int window, double seconds, int64_t bytes_per_request) {
  std::atomic<int64_t> done{0}, errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&] {
      client::TpClient::Stream stream = client.OpenStream();
      std::mutex mu;
      std::condition_variable cv;
      int outstanding = 0;
      std::thread writer([&] {
        tp::v1::StreamRequest message = prototype;
        for (uint64_t id = 0; !stop; ++id) {
          {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return outstanding < window; });
            if (outstanding >= window) continue;
            ++outstanding;
          }
          message.set_request_id(id);
          if (!stream.rpc->Write(message)) break;
        }
        stream.rpc->WritesDone();
      });
      tp::v1::StreamResponse response;
      while (stream.rpc->Read(&response)) {
        if (response.code() != 0) ++errors;
        ++done;
        std::lock_guard<std::mutex> lock(mu);
        --outstanding;
        cv.notify_one();
      }
      writer.join();
      stream.rpc->Finish();
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  int64_t at_stop = done.load();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  for (auto& t : threads) t.join();
  Throughput result;
  result.requests = at_stop;
  result.errors = errors;
  result.requests_per_s = at_stop / elapsed;
  result.samples_per_s = result.requests_per_s * samples_per_request;
  result.bytes_per_s = result.requests_per_s * bytes_per_request;
  return result;
}

// `callers` threads calling unary Echo back to back with the given request/response sizes.
Throughput UnaryEcho(client::TpClient& client, int callers, double seconds, int64_t request_bytes,
                     int64_t response_bytes) {
  tp::v1::EchoRequest request;
  request.set_payload(std::string(static_cast<size_t>(request_bytes), 'x'));
  request.set_response_bytes(response_bytes);
  std::atomic<int64_t> done{0}, errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&] {
      while (!stop) {
        if (client.Echo(request).ok()) ++done; else ++errors;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  int64_t at_stop = done.load();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  for (auto& t : threads) t.join();
  Throughput result;
  result.requests = at_stop;
  result.errors = errors;
  result.requests_per_s = at_stop / elapsed;
  result.bytes_per_s = result.requests_per_s * (request_bytes + response_bytes);
  return result;
}

int Main() {
  client::ClientOptions options;
  options.target = absl::GetFlag(FLAGS_server);
  options.auth_token = absl::GetFlag(FLAGS_token);
  options.tls = absl::GetFlag(FLAGS_tls);
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.max_message_bytes = 256 << 20;
  auto connected = client::TpClient::Connect(options);
  if (!connected.ok()) {
    std::cerr << "tp-load: " << connected.status() << "\n";
    return 1;
  }
  client::TpClient& client = **connected;
  const std::string name = absl::GetFlag(FLAGS_model);
  auto info = client.GetModel(name);
  if (info.status().code() == absl::StatusCode::kNotFound) {
    tp::v1::ModelSpec spec;
    spec.set_irreps_in1(absl::GetFlag(FLAGS_irreps));
    spec.set_irreps_in2(absl::GetFlag(FLAGS_irreps));
    spec.set_irreps_out(absl::GetFlag(FLAGS_irreps));
    info = client.CreateModel(name, spec, nullptr, /*seed=*/0);
  }
  if (!info.ok()) {
    std::cerr << "tp-load: model " << name << ": " << info.status() << "\n";
    return 1;
  }
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  std::mt19937_64 rng(42);
  tp::v1::ForwardRequest request;
  request.set_model(name);
  *request.mutable_x1() = RandomTensor(batch, info->dim_in1(), rng);
  *request.mutable_x2() = RandomTensor(batch, info->dim_in2(), rng);
  const std::string precision = absl::GetFlag(FLAGS_precision);
  request.set_precision(precision == "tf32" ? tp::v1::PRECISION_TF32
                        : precision == "bf16" ? tp::v1::PRECISION_BF16
                                              : tp::v1::PRECISION_FP32);
  const double tolerance = precision == "bf16" ? 3e-2 : precision == "tf32" ? 5e-3 : 1e-4;

  auto first = client.Forward(request);
  if (!first.ok()) {
    std::cerr << "tp-load: forward: " << first.status() << "\n";
    return 1;
  }
  double error = 0;
  if (auto s = Verify(client, *info, request, *first, tolerance, &error); !s.ok()) {
    std::cerr << "tp-load: " << s << "\n";
    return 1;
  }
  const int64_t request_bytes = static_cast<int64_t>(request.ByteSizeLong());
  const int64_t response_bytes = static_cast<int64_t>(first->ByteSizeLong());
  std::cout << absl::StrFormat(
      "tp-load: model %s (%s, %d weights) on %s, batch %d, %s; request %d B, response %d B\n"
      "  verify: relative error vs local CPU backend %.2e (<= %.0e)  OK\n",
      name, info->spec().irreps_in1(), info->weight_numel(), first->device(), batch, precision, request_bytes,
      response_bytes, error, tolerance);
  nlohmann::json json = {{"server", options.target},     {"model", name},
                         {"irreps", info->spec().irreps_in1()}, {"weight_numel", info->weight_numel()},
                         {"device", first->device()},    {"batch", batch},
                         {"precision", precision},       {"verify_relative_error", error},
                         {"request_bytes", request_bytes}, {"response_bytes", response_bytes}};
  if (absl::GetFlag(FLAGS_verify_only)) return 0;

  // Latency: one client, back to back.
  std::vector<double> latencies_ms;
  const int iters = absl::GetFlag(FLAGS_latency_iters);
  for (int i = 0; i < 10 + iters; ++i) {
    auto start = Clock::now();
    auto r = client.Forward(request);
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (!r.ok()) {
      std::cerr << "tp-load: forward: " << r.status() << "\n";
      return 1;
    }
    if (i >= 10) latencies_ms.push_back(ms);
  }
  double mean = 0;
  for (double v : latencies_ms) mean += v / latencies_ms.size();
  std::cout << absl::StrFormat("  unary Forward latency (%d calls): p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  mean %.3f ms\n",
                               iters, Percentile(latencies_ms, 0.5), Percentile(latencies_ms, 0.9),
                               Percentile(latencies_ms, 0.99), mean);
  json["latency_ms"] = {{"p50", Percentile(latencies_ms, 0.5)},
                        {"p90", Percentile(latencies_ms, 0.9)},
                        {"p99", Percentile(latencies_ms, 0.99)},
                        {"mean", mean},
                        {"calls", iters}};

  // The transport's floor for this size: unary Echo with the same request and response bytes.
  tp::v1::EchoRequest echo_request;
  echo_request.set_payload(std::string(static_cast<size_t>(request_bytes), 'x'));
  echo_request.set_response_bytes(response_bytes);
  {
    std::vector<double> echo_ms;
    for (int i = 0; i < 10 + iters; ++i) {
      auto start = Clock::now();
      if (!client.Echo(echo_request).ok()) break;
      if (i >= 10) echo_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
    if (!echo_ms.empty()) {
      std::cout << absl::StrFormat("  unary Echo latency, same bytes (%d calls): p50 %.3f ms  p90 %.3f ms  p99 %.3f ms\n",
                                   echo_ms.size(), Percentile(echo_ms, 0.5), Percentile(echo_ms, 0.9),
                                   Percentile(echo_ms, 0.99));
      json["echo_latency_ms"] = {{"p50", Percentile(echo_ms, 0.5)},
                                 {"p90", Percentile(echo_ms, 0.9)},
                                 {"p99", Percentile(echo_ms, 0.99)}};
    }
  }

  // Forward and Echo alternately: both see the same host state, so the per-pair difference is the
  // server's own cost (decode, checks, launch, copies, encode) with the transport's drift removed.
  {
    const int pairs = absl::GetFlag(FLAGS_paired_iters) < 0 ? iters : absl::GetFlag(FLAGS_paired_iters);
    std::vector<double> forward_ms, echo_ms, difference_ms;
    for (int i = 0; i < 10 + pairs; ++i) {
      auto start = Clock::now();
      auto r = client.Forward(request);
      auto middle = Clock::now();
      absl::Status e = client.Echo(echo_request).status();
      auto end = Clock::now();
      if (!r.ok() || !e.ok()) {
        std::cerr << "tp-load: paired calls: " << (r.ok() ? e : r.status()) << "\n";
        return 1;
      }
      if (i < 10) continue;
      forward_ms.push_back(std::chrono::duration<double, std::milli>(middle - start).count());
      echo_ms.push_back(std::chrono::duration<double, std::milli>(end - middle).count());
      difference_ms.push_back(forward_ms.back() - echo_ms.back());
    }
    if (pairs > 0) {
      std::cout << absl::StrFormat(
          "  paired, alternating (%d pairs): Forward p50 %.3f ms, Echo p50 %.3f ms, Forward - Echo p50 %.3f ms\n",
          pairs, Percentile(forward_ms, 0.5), Percentile(echo_ms, 0.5), Percentile(difference_ms, 0.5));
      json["paired_ms"] = {{"forward_p50", Percentile(forward_ms, 0.5)},
                           {"echo_p50", Percentile(echo_ms, 0.5)},
                           {"forward_minus_echo_p50", Percentile(difference_ms, 0.5)},
                           {"forward_minus_echo_p90", Percentile(difference_ms, 0.9)},
                           {"pairs", pairs}};
    }
  }

  const int streams = absl::GetFlag(FLAGS_streams);
  if (streams > 0) {
    const double seconds = absl::GetFlag(FLAGS_duration_s);
    const int window = absl::GetFlag(FLAGS_window);
    tp::v1::StreamRequest forward_message;
    *forward_message.mutable_forward() = request;
    Throughput tp = StreamLoad(client, forward_message, batch, streams, window, seconds,
                               request_bytes + response_bytes);
    // The no-op of the same size: the same streams, Echo messages as large as the Forward ones.
    tp::v1::StreamRequest echo_message;
    echo_message.mutable_echo()->set_payload(std::string(static_cast<size_t>(request_bytes), 'x'));
    echo_message.mutable_echo()->set_response_bytes(response_bytes);
    Throughput echo = StreamLoad(client, echo_message, 0, streams, window, seconds, request_bytes + response_bytes);
    Throughput unary_echo = UnaryEcho(client, streams * window, seconds, request_bytes, response_bytes);
    double ratio = echo.requests_per_s > 0 ? tp.requests_per_s / echo.requests_per_s : 0;
    std::cout << absl::StrFormat(
        "  %d streams x %d in flight, Forward: %9.1f req/s  %10.0f samples/s  %7.1f MB/s  (%d errors)\n"
        "  same streams, Echo of the same bytes: %9.1f req/s  %7.1f MB/s  (%d errors)\n"
        "  %d callers, unary Echo, same bytes:  %9.1f req/s  %7.1f MB/s  (%d errors)\n"
        "  Forward / stream Echo throughput: %.1f%%\n",
        streams, window, tp.requests_per_s, tp.samples_per_s, tp.bytes_per_s / 1e6, tp.errors, echo.requests_per_s,
        echo.bytes_per_s / 1e6, echo.errors, streams * window, unary_echo.requests_per_s,
        unary_echo.bytes_per_s / 1e6, unary_echo.errors, 100 * ratio);
    json["throughput"] = {{"streams", streams},
                          {"window", window},
                          {"duration_s", seconds},
                          {"forward_requests_per_s", tp.requests_per_s},
                          {"forward_samples_per_s", tp.samples_per_s},
                          {"forward_errors", tp.errors},
                          {"stream_echo_requests_per_s", echo.requests_per_s},
                          {"unary_echo_requests_per_s", unary_echo.requests_per_s},
                          {"forward_over_stream_echo", ratio}};
  }
  if (!absl::GetFlag(FLAGS_json).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_json)) << json.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  tpserve::KeepLargeBuffersInTheHeap();  // as tpserve does: a client's faults count in its latency
  absl::ParseCommandLine(argc, argv);
  return tpserve::Main();
}
