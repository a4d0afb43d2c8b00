// kserve-probe: the latency of one unary call through the Open Inference Protocol (ModelInfer,
// raw FP32 tensors) against tp.v1 Forward, on the same server, model, inputs and channel. It
// checks first that both answer the same `out`, then times N calls of each, alternating (so that
// drift in the machine's state hits both alike), and prints p50 / p90 / p99 / mean per method.
//
//   kserve-probe --target 127.0.0.1:50051 [--model seed] [--batch 64] [--calls 2000] [--warmup 200]
//                [--token T] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "client/lib/tp_client.h"
#include "inference/grpc_service.grpc.pb.h"
#include "wire/malloc_tuning.h"

namespace {

struct Options {
  std::string target = "127.0.0.1:50051";
  std::string model = "seed";
  int64_t batch = 64;
  int calls = 2000;
  int warmup = 200;
  std::string token;
  std::string json;
};

struct Summary {
  double p50, p90, p99, mean;
};

Summary Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * (ms.size() - 1) + 0.5))]; };
  double sum = 0;
  for (double v : ms) sum += v;
  return {at(0.5), at(0.9), at(0.99), sum / ms.size()};
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "kserve-probe: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--target") o.target = value;
    else if (flag == "--model") o.model = value;
    else if (flag == "--batch") o.batch = std::atol(value.c_str());
    else if (flag == "--calls") o.calls = std::atoi(value.c_str());
    else if (flag == "--warmup") o.warmup = std::atoi(value.c_str());
    else if (flag == "--token") o.token = value;
    else if (flag == "--json") o.json = value;
    else return Fail("unknown flag " + flag + " (see the comment at the top of kserve_probe.cc)");
  }
  if (o.batch < 1 || o.calls < 1) return Fail("--batch and --calls must be >= 1");
  tpserve::KeepLargeBuffersInTheHeap();

  tpserve::client::ClientOptions client_options;
  client_options.target = o.target;
  client_options.auth_token = o.token;
  auto client = tpserve::client::TpClient::Connect(client_options);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  auto info = (*client)->GetModel(o.model);
  if (!info.ok()) return Fail(std::string(info.status().message()));
  // The same channel (tp_client's tuned transport) carries both protocols.
  auto stub = inference::GRPCInferenceService::NewStub((*client)->channel());

  std::mt19937 rng(12345);
  std::normal_distribution<float> normal;
  std::vector<float> x1(o.batch * info->dim_in1()), x2(o.batch * info->dim_in2());
  for (float& v : x1) v = normal(rng);
  for (float& v : x2) v = normal(rng);

  tp::v1::ForwardRequest forward;
  forward.set_model(o.model);
  for (auto [tensor, values, dim] : {std::make_tuple(forward.mutable_x1(), &x1, info->dim_in1()),
                                     std::make_tuple(forward.mutable_x2(), &x2, info->dim_in2())}) {
    tensor->add_shape(o.batch);
    tensor->add_shape(dim);
    tensor->set_dtype(tp::v1::DTYPE_FLOAT32);
    tensor->set_data(values->data(), values->size() * sizeof(float));
  }
  inference::ModelInferRequest infer;
  infer.set_model_name(o.model);
  for (auto [name, values, dim] : {std::make_tuple("x1", &x1, info->dim_in1()),
                                   std::make_tuple("x2", &x2, info->dim_in2())}) {
    auto* input = infer.add_inputs();
    input->set_name(name);
    input->set_datatype("FP32");
    input->add_shape(o.batch);
    input->add_shape(dim);
    infer.add_raw_input_contents(values->data(), values->size() * sizeof(float));
  }

  auto call_forward = [&]() -> absl::StatusOr<tp::v1::ForwardResponse> { return (*client)->Forward(forward); };
  auto call_infer = [&](inference::ModelInferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!o.token.empty()) context.AddMetadata("authorization", "Bearer " + o.token);
    return stub->ModelInfer(&context, infer, response);
  };

  // Verify: both protocols give the same `out`.
  auto want = call_forward();
  if (!want.ok()) return Fail("Forward: " + std::string(want.status().message()));
  inference::ModelInferResponse got;
  grpc::Status status = call_infer(&got);
  if (!status.ok()) return Fail("ModelInfer: " + status.error_message());
  if (got.raw_output_contents_size() != 1 || got.raw_output_contents(0).size() != want->out().data().size()) {
    return Fail("ModelInfer's out has another size than Forward's");
  }
  const float* a = reinterpret_cast<const float*>(want->out().data().data());
  const float* b = reinterpret_cast<const float*>(got.raw_output_contents(0).data());
  const size_t n = want->out().data().size() / sizeof(float);
  double max_diff = 0, max_abs = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    max_diff = std::max(max_diff, std::fabs(double(a[i]) - b[i]));
    max_abs = std::max(max_abs, std::fabs(double(a[i])));
  }
  if (max_diff / max_abs > 1e-5) return Fail("ModelInfer and Forward disagree: max relative error " +
                                             std::to_string(max_diff / max_abs));

  std::vector<double> forward_ms, infer_ms;
  for (int i = 0; i < o.warmup + o.calls; ++i) {
    // Alternate which goes first, so neither always follows the other.
    for (int k = 0; k < 2; ++k) {
      const bool do_forward = (k == 0) == (i % 2 == 0);
      const auto start = std::chrono::steady_clock::now();
      if (do_forward) {
        auto response = call_forward();
        if (!response.ok()) return Fail("Forward: " + std::string(response.status().message()));
      } else {
        inference::ModelInferResponse response;
        grpc::Status s = call_infer(&response);
        if (!s.ok()) return Fail("ModelInfer: " + s.error_message());
      }
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (i >= o.warmup) (do_forward ? forward_ms : infer_ms).push_back(ms);
    }
  }
  const Summary f = Summarize(forward_ms), m = Summarize(infer_ms);
  std::printf("model %s, batch %ld, %d calls each (alternating, after %d warm-up), verified (max rel err %.2g)\n",
              o.model.c_str(), static_cast<long>(o.batch), o.calls, o.warmup, max_diff / max_abs);
  std::printf("%-28s %9s %9s %9s %9s\n", "method", "p50 ms", "p90 ms", "p99 ms", "mean ms");
  std::printf("%-28s %9.3f %9.3f %9.3f %9.3f\n", "tp.v1 Forward", f.p50, f.p90, f.p99, f.mean);
  std::printf("%-28s %9.3f %9.3f %9.3f %9.3f\n", "inference ModelInfer (raw)", m.p50, m.p90, m.p99, m.mean);
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    char buffer[512];
    std::snprintf(buffer, sizeof(buffer),
                  "{\"model\": \"%s\", \"batch\": %ld, \"calls\": %d,\n"
                  " \"forward_ms\": {\"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, \"mean\": %.4f},\n"
                  " \"model_infer_ms\": {\"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, \"mean\": %.4f}}\n",
                  o.model.c_str(), static_cast<long>(o.batch), o.calls, f.p50, f.p90, f.p99, f.mean, m.p50, m.p90,
                  m.p99, m.mean);
    out << buffer;
  }
  return 0;
}
