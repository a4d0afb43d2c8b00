// tpserve: the tensor-product gRPC server. Reads flags (and an optional JSON config file whose
// keys are the flag names), prints its configuration, serves until SIGINT/SIGTERM, then stops
// accepting calls and finishes the ones in flight. SIGHUP re-reads the TLS certificates.
// Exit codes: 0 after a signal, 2 for a configuration or model repository it cannot start with
// (one line on stderr naming what is wrong), 1 for anything else.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <set>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/backend_factory.h"
#include "server/core/inference_core.h"
#include "server/grpc/grpc_server.h"
#include "server/injected_fault.h"
#include "wire/malloc_tuning.h"
#include "server/metrics/metrics.h"
#include "server/network_device.h"
#include "server/server_config.h"

ABSL_FLAG(std::string, config, "", "JSON config file (keys = flag names); flags given on the command line win");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC address (port 0: any free port)");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9090", "Prometheus /metrics address (\"\": off)");
ABSL_FLAG(std::string, model_dir, "", "model repository directory (\"\": in memory only)");
ABSL_FLAG(std::string, backend, "auto", "auto | cpu | cuda | cuda:0,cuda:1,... (cpu:0,cpu:1,...: CPU stand-ins for several devices, a testing aid)");
ABSL_FLAG(std::string, network_device, "auto",
          "where network models (kind qm9) compute: auto (the first CUDA device of --backend, else cpu) | cpu | "
          "cuda | cuda:N");
// A string, read by LoadConfig: a value that is not a number is then tpserve's own start-up error
// (exit 2, naming the flag) rather than Abseil's (exit 1).
ABSL_FLAG(std::string, network_save_every, "1",
          "network models: a TrainStep is written to --model_dir (fsynced) before it is served when it makes N "
          "steps since the version on disk; the others are served from memory at once. 1: every step durable; "
          "N > 1: kill -9 loses at most the last N-1 steps, SIGTERM/SIGINT saves them");
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
ABSL_FLAG(std::string, auth_token, "",
          "bearer token every tp.v1 call must carry (\"\": no auth; visible in ps: prefer --auth_token_file or "
          "the TPSERVE_AUTH_TOKEN environment variable)");
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
// ---- startup and security (issue 16: items 1, 10, 15) ----
ABSL_FLAG(bool, skip_damaged_models, false,
          "a model of --model_dir that fails its checks: false refuses to start (exit 2); true logs it, moves its "
          "directory aside (.damaged-<name>-*) and serves the rest");
ABSL_FLAG(std::string, auth_token_file, "", "file holding the bearer token (instead of --auth_token)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM roots: clients must present a certificate they sign (mutual TLS; needs --tls_cert/--tls_key)");
ABSL_FLAG(int, tls_reload_seconds, 1, "how soon a certificate re-read on SIGHUP is served (seconds)");
ABSL_FLAG(bool, metrics_auth, false, "/metrics requires 'Authorization: Bearer <token>' (the gRPC token)");
ABSL_FLAG(bool, metrics_tls, false, "/metrics over HTTPS with --tls_cert/--tls_key");
// ---- limits against clients that exhaust the server (docs/SERVER.md, "Limits") ----
ABSL_FLAG(int64_t, max_paths, 16384, "paths a created model may have; more: INVALID_ARGUMENT before any work");
ABSL_FLAG(int64_t, max_graph_nodes, 100000, "network models: most nodes in one Predict/TrainStep request");
ABSL_FLAG(int64_t, max_graph_edges, 1000000, "network models: most directed edges in one Predict/TrainStep request");
ABSL_FLAG(int64_t, max_memory_bytes, 0,
          "memory budget for weights, uploads, unread results, downloads, gradients (0: half of RAM); "
          "past it: RESOURCE_EXHAUSTED");
ABSL_FLAG(double, upload_idle_seconds, 60, "an upload with no chunk for this long is dropped (0: never)");
ABSL_FLAG(double, idle_release_seconds, 30, "idle this long: pooled memory goes back to the system (0: never)");
ABSL_FLAG(int64_t, max_open_watch_streams, 32,
          "open Health.Watch + reflection streams (no token; each holds a thread; at most max_threads/4)");
ABSL_FLAG(int64_t, max_concurrent_streams, 128, "calls at once per client connection");
ABSL_FLAG(double, keepalive_time_seconds, 60, "the server pings an idle connection this often");
ABSL_FLAG(double, keepalive_timeout_seconds, 20, "an unanswered keepalive ping closes the connection after this");
ABSL_FLAG(double, min_client_ping_interval_seconds, 10, "clients pinging more often are disconnected (too_many_pings)");
ABSL_FLAG(double, max_connection_idle_seconds, 1800, "a connection without calls for this long is closed (0: never)");
ABSL_FLAG(double, max_connection_age_seconds, 0, "connections are closed after this long (0: never)");
ABSL_FLAG(double, max_connection_age_grace_seconds, 30, "calls of a connection closed for age get this long");

namespace tpserve::server {
namespace {

// Flags named on the command line (FlagsOnCommandLine, read before Abseil parses): these win over
// the config file even when they repeat the default.
std::set<std::string>& CommandLineFlags() {
  static std::set<std::string> names;
  return names;
}

bool Given(const char* name) {
  if (CommandLineFlags().count(name) > 0) return true;
  // A flag that --flagfile set is not in argv; it still counts when it differs from its default.
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  return flag != nullptr && flag->CurrentValue() != flag->DefaultValue();
}

// `tpserve --help` lists the flags of this file (Abseil's default shows only a file named after
// the binary, tpserve.cc, and found none), each with its default.
void ConfigureHelp() {
  absl::FlagsUsageConfig usage;
  auto ours = [](absl::string_view file) { return absl::EndsWith(file, "server/main.cc"); };
  usage.contains_help_flags = ours;
  usage.contains_helpshort_flags = ours;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "the tensor-product gRPC server (docs/SERVER.md).\n"
      "usage: tpserve [--config FILE.json] [--flag=value ...]   (command-line flags win over the file)\n"
      "secure setup: --tls_cert C --tls_key K [--tls_client_ca CA] --auth_token_file F "
      "--metrics_address 127.0.0.1:9090");
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
  take("network_device", c.network_device, absl::GetFlag(FLAGS_network_device));
  take("workers_per_gpu", c.workers_per_gpu, absl::GetFlag(FLAGS_workers_per_gpu));
  if (Given("network_save_every")) {
    const std::string every = absl::GetFlag(FLAGS_network_save_every);
    if (!absl::SimpleAtoi(every, &c.core.network_save_every)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--network_save_every '", every, "': expected a whole number >= 1 (1: every step saved)"));
    }
  }
  if (Given("forward_kernel")) {
    absl::StatusOr<CudaBackendOptions::ForwardKernel> kernel = ParseForwardKernel(absl::GetFlag(FLAGS_forward_kernel));
    if (!kernel.ok()) return absl::InvalidArgumentError(absl::StrCat("--", kernel.status().message()));
    c.cuda.forward_kernel = *kernel;
  }
  take("factored_warp_cols", c.cuda.factored_warp_cols, absl::GetFlag(FLAGS_factored_warp_cols));
  take("factored_blocks_per_sm", c.cuda.factored_blocks_per_sm, absl::GetFlag(FLAGS_factored_blocks_per_sm));
  take("max_batch_size", c.core.max_batch_size, absl::GetFlag(FLAGS_max_batch_size));
  take("max_queue_delay_us", c.core.max_queue_delay_us, absl::GetFlag(FLAGS_max_queue_delay_us));
  take("max_queued_requests", c.core.max_queued_requests, absl::GetFlag(FLAGS_max_queued_requests));
  take("max_queued_bytes", c.core.max_queued_bytes, absl::GetFlag(FLAGS_max_queued_bytes));
  if (Given("non_finite")) {
    if (auto s = SetNonFinitePolicy(absl::GetFlag(FLAGS_non_finite), &c); !s.ok()) return s;
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
  // ---- startup and security (issue 16: items 1, 10, 15) ----
  take("skip_damaged_models", c.core.skip_damaged_models, absl::GetFlag(FLAGS_skip_damaged_models));
  take("auth_token_file", c.auth_token_file, absl::GetFlag(FLAGS_auth_token_file));
  take("tls_client_ca", c.transport.tls_client_ca_file, absl::GetFlag(FLAGS_tls_client_ca));
  take("tls_reload_seconds", c.transport.tls_reload_seconds, absl::GetFlag(FLAGS_tls_reload_seconds));
  take("metrics_auth", c.metrics_auth, absl::GetFlag(FLAGS_metrics_auth));
  take("metrics_tls", c.metrics_tls, absl::GetFlag(FLAGS_metrics_tls));
  if (Given("auth_token") && Given("auth_token_file")) {
    return absl::InvalidArgumentError("--auth_token and --auth_token_file: expected at most one of them");
  }
  if (Given("auth_token_file")) c.transport.auth_token.clear();  // the file's token replaces one from the config
  if (auto s = ResolveAuthToken(&c, std::getenv("TPSERVE_AUTH_TOKEN")); !s.ok()) return s;
  // ---- limits ----
  take("max_paths", c.core.max_paths, absl::GetFlag(FLAGS_max_paths));
  take("max_memory_bytes", c.core.max_memory_bytes, absl::GetFlag(FLAGS_max_memory_bytes));
  take("max_graph_nodes", c.core.max_graph_nodes, absl::GetFlag(FLAGS_max_graph_nodes));
  take("max_graph_edges", c.core.max_graph_edges, absl::GetFlag(FLAGS_max_graph_edges));
  take("upload_idle_seconds", c.transport.upload_idle_seconds, absl::GetFlag(FLAGS_upload_idle_seconds));
  take("idle_release_seconds", c.transport.idle_release_seconds, absl::GetFlag(FLAGS_idle_release_seconds));
  take("max_open_watch_streams", c.transport.max_open_watch_streams, absl::GetFlag(FLAGS_max_open_watch_streams));
  take("max_concurrent_streams", c.transport.max_concurrent_streams, absl::GetFlag(FLAGS_max_concurrent_streams));
  take("keepalive_time_seconds", c.transport.keepalive_time_seconds, absl::GetFlag(FLAGS_keepalive_time_seconds));
  take("keepalive_timeout_seconds", c.transport.keepalive_timeout_seconds,
       absl::GetFlag(FLAGS_keepalive_timeout_seconds));
  take("min_client_ping_interval_seconds", c.transport.min_client_ping_interval_seconds,
       absl::GetFlag(FLAGS_min_client_ping_interval_seconds));
  take("max_connection_idle_seconds", c.transport.max_connection_idle_seconds,
       absl::GetFlag(FLAGS_max_connection_idle_seconds));
  take("max_connection_age_seconds", c.transport.max_connection_age_seconds,
       absl::GetFlag(FLAGS_max_connection_age_seconds));
  take("max_connection_age_grace_seconds", c.transport.max_connection_age_grace_seconds,
       absl::GetFlag(FLAGS_max_connection_age_grace_seconds));
  if (c.core.max_graph_nodes < 1 || c.core.max_graph_edges < 0) {
    return absl::InvalidArgumentError("--max_graph_nodes: expected >= 1; --max_graph_edges: expected >= 0");
  }
  if (c.core.max_paths < 1 || c.core.max_memory_bytes < 0) {
    return absl::InvalidArgumentError("--max_paths: expected >= 1; --max_memory_bytes: expected >= 0 (0: half of RAM)");
  }
  if (auto s = ValidateConfig(c); !s.ok()) return s;
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
    std::cerr << "tpserve: " << config.status().message() << "\n";
    return 2;
  }
  std::cout << config->DebugString() << std::endl;
  for (const std::string& warning : ConfigWarnings(*config)) std::cerr << "tpserve: warning: " << warning << "\n";

  // Signals are taken synchronously by this thread; every thread started later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Metrics metrics;
  if (!config->metrics_address.empty()) {
    HttpExposerOptions http;
    http.address = config->metrics_address;
    if (config->metrics_auth) http.bearer_token = config->transport.auth_token;
    if (config->metrics_tls) {
      http.tls_cert_file = config->transport.tls_cert_file;
      http.tls_key_file = config->transport.tls_key_file;
    }
    if (auto s = metrics.StartHttp(http); !s.ok()) {
      std::cerr << "tpserve: " << s.message() << "\n";
      return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
  }
  auto backends = MakeBackends(config->backend, config->workers_per_gpu, config->cuda);
  if (!backends.ok()) {
    std::cerr << "tpserve: " << backends.status() << "\n";
    return 1;
  }
  absl::StatusOr<std::string> injected = InjectDeviceFault(std::getenv(kInjectDeviceFaultEnv), *backends);
  if (!injected.ok()) {
    std::cerr << "tpserve: " << injected.status().message() << "\n";
    return 2;
  }
  if (!injected->empty()) std::cerr << "tpserve: warning: " << *injected << "\n";
  // Network models: a CPU backend of their own builds (and, on the CPU, computes) them; with
  // --network_device a CUDA device computes them instead.
  auto network_backend = MakeBackend("cpu");
  if (!network_backend.ok()) {
    std::cerr << "tpserve: " << network_backend.status() << "\n";
    return 1;
  }
  std::vector<std::string> backend_devices;
  for (const auto& backend : *backends) backend_devices.push_back(backend->name());
  auto network_runners = MakeNetworkRunners(config->network_device, backend_devices);
  if (!network_runners.ok()) {
    std::cerr << "tpserve: " << network_runners.status().message() << "\n";
    return 2;
  }
  std::cout << "tpserve: network models compute on " << (*network_runners)->device() << std::endl;
  if (config->core.network_save_every > 1) {
    std::cout << "tpserve: network models: a training step is saved when it makes "
              << config->core.network_save_every << " steps since the version on disk (kill -9 loses at most "
              << config->core.network_save_every - 1 << " steps; SIGTERM/SIGINT saves them)" << std::endl;
  }
  auto core = InferenceCore::Create(config->core, *std::move(backends), &metrics, *std::move(network_backend),
                                    *std::move(network_runners));
  if (!core.ok()) {
    // A damaged repository: one line naming the file and what is wrong.
    std::cerr << "tpserve: " << core.status().message()
              << (core.status().code() == absl::StatusCode::kDataLoss
                      ? " (--skip_damaged_models moves damaged models aside and serves the rest)"
                      : "")
              << "\n";
    return 2;
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
    std::cerr << "tpserve: " << server.status().message() << "\n";
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::string devices;
  for (const std::string& d : (*core)->devices()) devices += (devices.empty() ? "" : ",") + d;
  std::cout << "tpserve: serving on port " << (*server)->port() << " (metrics port " << metrics.port()
            << ", devices " << devices << ", " << (*core)->ListModels().size() << " models)" << std::endl;

  int signal = 0;
  while (sigwait(&signals, &signal) == 0 && signal == SIGHUP) {
    if (!config->transport.tls()) {
      std::cout << "tpserve: SIGHUP: no TLS certificate to reload" << std::endl;
      continue;
    }
    absl::Status grpc_tls = (*server)->ReloadCertificates();
    absl::Status http_tls = metrics.ReloadHttpTls();
    if (grpc_tls.ok() && http_tls.ok()) {
      std::cout << "tpserve: SIGHUP: certificates reloaded from " << config->transport.tls_cert_file << std::endl;
    } else {
      std::cerr << "tpserve: SIGHUP: certificates not reloaded, the previous ones stay in use: "
                << (grpc_tls.ok() ? http_tls : grpc_tls).message() << std::endl;
    }
  }
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
  tpserve::server::ConfigureHelp();
  tpserve::server::CommandLineFlags() =
      tpserve::server::FlagsOnCommandLine(std::vector<std::string>(argv + 1, argv + argc), [](const std::string& name) {
        absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
        return flag != nullptr && flag->IsOfType<bool>();
      });
  absl::ParseCommandLine(argc, argv);
  return tpserve::server::Main();
}
