// tpserve: the tensor-product gRPC server. Reads flags (and an optional JSON config file whose
// keys are the flag names), prints its configuration, serves until SIGINT/SIGTERM, then stops
// accepting calls and finishes the ones in flight.
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "kernels/backend_factory.h"
#include "server/core/inference_core.h"
#include "server/grpc/grpc_server.h"
#include "wire/malloc_tuning.h"
#include "server/metrics/metrics.h"
#include "server/server_config.h"

ABSL_FLAG(std::string, config, "", "JSON config file (keys = flag names); flags given on the command line win");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC address (port 0: any free port)");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9090", "Prometheus /metrics address (\"\": off)");
ABSL_FLAG(std::string, model_dir, "", "model repository directory (\"\": in memory only)");
ABSL_FLAG(std::string, backend, "auto", "auto | cpu | cuda | cuda:0,cuda:1,...");
ABSL_FLAG(int, workers_per_gpu, 2, "workers (streams, weight replicas) per GPU; 2 (default): copies of one overlap compute of the other");
ABSL_FLAG(std::string, forward_kernel, "auto",
          "CUDA forward kernel: auto (wgmma where usable) | factored-mma | factored-3xtf32 | gemm");
ABSL_FLAG(int, factored_warp_cols, 32, "CUDA factored forward (mma.sync): output columns per warp, 16 or 32");
ABSL_FLAG(int, factored_blocks_per_sm, 0, "CUDA factored forward work split: blocks per SM (0: chosen per batch)");
ABSL_FLAG(int64_t, max_batch_size, 4096, "most samples per launch and per request");
ABSL_FLAG(int64_t, max_queue_delay_us, 0, "how long a request may wait for others to batch with (0: greedy)");
ABSL_FLAG(int64_t, max_queued_requests, 1024, "admitted requests waiting; beyond: RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_queued_bytes, int64_t{4} << 30, "input bytes of the waiting requests; beyond: RESOURCE_EXHAUSTED");
ABSL_FLAG(std::string, non_finite, "reject", "NaN/Inf in inputs: reject (INVALID_ARGUMENT) | pass");
ABSL_FLAG(int64_t, max_inline_grad_bytes, 4 << 20, "largest weight gradient a unary Backward returns");
ABSL_FLAG(int64_t, max_pinned_host_bytes, int64_t{256} << 20,
          "page-locked host memory for unary Forward tensors (reused); past it, ordinary memory");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain (with --tls_key: TLS on)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key");
ABSL_FLAG(std::string, auth_token, "", "bearer token every tp.v1 call must carry (\"\": no auth)");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "max gRPC message size, both directions");
ABSL_FLAG(bool, reflection, true, "serve grpc.reflection");
ABSL_FLAG(int64_t, chunk_elements, 262144, "default float32 elements per streamed weights chunk");
ABSL_FLAG(int64_t, stream_max_in_flight, 64, "outstanding requests per Stream call");
ABSL_FLAG(int64_t, max_streams, 256, "Stream calls open at once (each holds two threads); more: RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_threads, 1024, "threads gRPC may run calls on; calls past it: RESOURCE_EXHAUSTED");
ABSL_FLAG(std::string, demo_model, "", "create this seeded model at start unless it exists");
ABSL_FLAG(std::string, demo_irreps_in1, "128x0e + 128x1e + 128x2e", "demo model irreps_in1");
ABSL_FLAG(std::string, demo_irreps_in2, "128x0e + 128x1e + 128x2e", "demo model irreps_in2");
ABSL_FLAG(std::string, demo_irreps_out, "128x0e + 128x1e + 128x2e", "demo model irreps_out");
ABSL_FLAG(uint64_t, demo_seed, 0, "seed of the demo model's weights");
ABSL_FLAG(double, shutdown_grace_seconds, 30, "time calls in flight get to finish at shutdown");

namespace tpserve::server {
namespace {

bool Given(const char* name) {
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  // This Abseil keeps IsSpecifiedOnCommandLine private: a flag counts as given when it differs
  // from its default.
  return flag != nullptr && flag->CurrentValue() != flag->DefaultValue();
}

absl::StatusOr<ServerConfig> LoadConfig() {
  ServerConfig c;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    if (auto s = ApplyConfigFile(absl::GetFlag(FLAGS_config), &c); !s.ok()) return s;
  }
  // Defaults apply only where the file said nothing; command-line flags always win.
  auto take = [](const char* name, auto& field, const auto& value) {
    if (Given(name)) field = value;
  };
  take("listen", c.transport.listen_address, absl::GetFlag(FLAGS_listen));
  take("metrics_address", c.metrics_address, absl::GetFlag(FLAGS_metrics_address));
  take("model_dir", c.core.model_dir, absl::GetFlag(FLAGS_model_dir));
  take("backend", c.backend, absl::GetFlag(FLAGS_backend));
  take("workers_per_gpu", c.workers_per_gpu, absl::GetFlag(FLAGS_workers_per_gpu));
  if (c.workers_per_gpu < 1) return absl::InvalidArgumentError("--workers_per_gpu: expected >= 1");
  if (Given("forward_kernel")) {
    absl::StatusOr<CudaBackendOptions::ForwardKernel> kernel = ParseForwardKernel(absl::GetFlag(FLAGS_forward_kernel));
    if (!kernel.ok()) return absl::InvalidArgumentError(absl::StrCat("--", kernel.status().message()));
    c.cuda.forward_kernel = *kernel;
  }
  take("factored_warp_cols", c.cuda.factored_warp_cols, absl::GetFlag(FLAGS_factored_warp_cols));
  take("factored_blocks_per_sm", c.cuda.factored_blocks_per_sm, absl::GetFlag(FLAGS_factored_blocks_per_sm));
  if (auto s = ValidateCudaBackendOptions(c.cuda); !s.ok()) return s;
  take("max_batch_size", c.core.max_batch_size, absl::GetFlag(FLAGS_max_batch_size));
  take("max_queue_delay_us", c.core.max_queue_delay_us, absl::GetFlag(FLAGS_max_queue_delay_us));
  take("max_queued_requests", c.core.max_queued_requests, absl::GetFlag(FLAGS_max_queued_requests));
  take("max_queued_bytes", c.core.max_queued_bytes, absl::GetFlag(FLAGS_max_queued_bytes));
  if (Given("non_finite")) {
    std::string policy = absl::GetFlag(FLAGS_non_finite);
    if (policy != "reject" && policy != "pass") {
      return absl::InvalidArgumentError("--non_finite: expected reject or pass");
    }
    c.core.reject_non_finite = policy == "reject";
  }
  take("max_inline_grad_bytes", c.core.max_inline_grad_bytes, absl::GetFlag(FLAGS_max_inline_grad_bytes));
  take("max_pinned_host_bytes", c.core.max_pinned_host_bytes, absl::GetFlag(FLAGS_max_pinned_host_bytes));
  take("tls_cert", c.transport.tls_cert_file, absl::GetFlag(FLAGS_tls_cert));
  take("tls_key", c.transport.tls_key_file, absl::GetFlag(FLAGS_tls_key));
  take("auth_token", c.transport.auth_token, absl::GetFlag(FLAGS_auth_token));
  take("max_message_bytes", c.transport.max_message_bytes, absl::GetFlag(FLAGS_max_message_bytes));
  take("reflection", c.transport.reflection, absl::GetFlag(FLAGS_reflection));
  take("chunk_elements", c.transport.chunk_elements, absl::GetFlag(FLAGS_chunk_elements));
  take("stream_max_in_flight", c.transport.stream_max_in_flight, absl::GetFlag(FLAGS_stream_max_in_flight));
  take("max_streams", c.transport.max_streams, absl::GetFlag(FLAGS_max_streams));
  take("max_threads", c.transport.max_threads, absl::GetFlag(FLAGS_max_threads));
  take("demo_model", c.demo_model, absl::GetFlag(FLAGS_demo_model));
  take("demo_irreps_in1", c.demo_spec.irreps_in1, absl::GetFlag(FLAGS_demo_irreps_in1));
  take("demo_irreps_in2", c.demo_spec.irreps_in2, absl::GetFlag(FLAGS_demo_irreps_in2));
  take("demo_irreps_out", c.demo_spec.irreps_out, absl::GetFlag(FLAGS_demo_irreps_out));
  take("demo_seed", c.demo_seed, absl::GetFlag(FLAGS_demo_seed));
  take("shutdown_grace_seconds", c.shutdown_grace_seconds, absl::GetFlag(FLAGS_shutdown_grace_seconds));
  return c;
}

absl::StatusOr<std::vector<std::unique_ptr<Backend>>> MakeBackends(const std::string& spec, int workers_per_gpu,
                                                                     const CudaBackendOptions& cuda_options) {
  std::vector<std::string> names;
  if (spec == "auto" || spec == "cuda") {
    for (int i = 0; i < CudaDeviceCount(); ++i) names.push_back("cuda:" + std::to_string(i));
    if (names.empty() && spec == "cuda") return absl::UnavailableError("--backend=cuda: no CUDA device");
    if (names.empty()) names.push_back("cpu");
  } else {
    names = absl::StrSplit(spec, ',', absl::SkipEmpty());
  }
  std::vector<std::unique_ptr<Backend>> backends;
  for (const std::string& name : names) {
    const int copies = absl::StartsWith(name, "cuda") ? workers_per_gpu : 1;
    for (int i = 0; i < copies; ++i) {
      absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(name, cuda_options);
      if (!backend.ok()) return backend.status();
      backends.push_back(*std::move(backend));
    }
  }
  return backends;
}

int Main() {
  KeepLargeBuffersInTheHeap();
  absl::StatusOr<ServerConfig> config = LoadConfig();
  if (!config.ok()) {
    std::cerr << "tpserve: " << config.status() << "\n";
    return 2;
  }
  std::cout << config->DebugString() << std::endl;

  // Signals are taken synchronously by this thread; every thread started later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Metrics metrics;
  if (!config->metrics_address.empty()) {
    if (auto s = metrics.StartHttp(config->metrics_address); !s.ok()) {
      std::cerr << "tpserve: " << s << "\n";
      return 1;
    }
  }
  auto backends = MakeBackends(config->backend, config->workers_per_gpu, config->cuda);
  if (!backends.ok()) {
    std::cerr << "tpserve: " << backends.status() << "\n";
    return 1;
  }
  auto core = InferenceCore::Create(config->core, *std::move(backends), &metrics);
  if (!core.ok()) {
    std::cerr << "tpserve: " << core.status() << "\n";
    return 1;
  }
  if (!config->demo_model.empty() && !(*core)->FindModel(config->demo_model).ok()) {
    auto info = (*core)->CreateModel(config->demo_model, config->demo_spec, std::nullopt, config->demo_seed);
    if (!info.ok()) {
      std::cerr << "tpserve: demo model: " << info.status() << "\n";
      return 1;
    }
  }
  auto server = GrpcServer::Start(config->transport, core->get(), &metrics);
  if (!server.ok()) {
    std::cerr << "tpserve: " << server.status() << "\n";
    return 1;
  }
  std::string devices;
  for (const std::string& d : (*core)->devices()) devices += (devices.empty() ? "" : ",") + d;
  std::cout << "tpserve: serving on port " << (*server)->port() << " (metrics port " << metrics.port()
            << ", devices " << devices << ", " << (*core)->ListModels().size() << " models)" << std::endl;

  int signal = 0;
  sigwait(&signals, &signal);
  std::cout << "tpserve: signal " << signal << ", finishing calls in flight" << std::endl;
  (*server)->Shutdown(absl::Seconds(config->shutdown_grace_seconds));
  (*server)->Wait();
  (*core)->Shutdown();
  std::cout << "tpserve: stopped" << std::endl;
  return 0;
}

}  // namespace
}  // namespace tpserve::server

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return tpserve::server::Main();
}
