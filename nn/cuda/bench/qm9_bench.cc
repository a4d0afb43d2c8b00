// qm9-bench: times the QM9 network's training step (forward, backward, SGD with momentum) and
// Predict (forward) on a CUDA device, on a generated batch of QM9-shaped molecules, with CUDA
// events (median and min after warm-up), and prints each figure against its floor
// (TrainingStepFlops / PredictFlops / TrainingStepBytes of nn/). --cpu times the CPU network
// (fp32, host backend) instead, for small shapes.
//
//   qm9-bench [--shapes 1x128,1x256,2x128,2x512] [--layers 6] [--graphs 27] [--iters 30] [--warmup 5]
//             [--precision fp32|tf32] [--fctp auto|species|dense] [--graph] [--batch qm9|chain] [--json FILE] [--cpu]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/cpu_backend.h"
#include "nn/cuda/qm9_cuda_network.h"
#include "nn/qm9_network.h"
#include "nn/random_batch.h"
#include "nn/sgd.h"

namespace {

using tpserve::nn::GraphBatch;
using tpserve::nn::Qm9NetworkConfig;

// H100 SXM datasheet peaks (not measured): fp32 CUDA cores, tf32 dense tensor cores, HBM3.
constexpr double kFp32Peak = 67e12, kTf32Peak = 495e12, kHbmBandwidth = 3.35e12;

// QM9-shaped molecules: 18 atoms each (9 heavy atoms C/N/O/F, 9 H, the mean of QM9), bonded as a
// random tree (each atom to an earlier one, heavy atoms to heavy atoms, H to a heavy atom) with
// bond lengths 0.95..1.55 A; edges are the bonds, both ways: 34 directed edges per molecule.
GraphBatch Qm9ShapedBatch(std::mt19937_64& rng, int num_graphs) {
  GraphBatch batch;
  batch.num_graphs = num_graphs;
  std::uniform_int_distribution<int> heavy_species(1, 4), pick;
  std::uniform_real_distribution<double> bond(0.95, 1.55);
  std::normal_distribution<double> normal;
  for (int g = 0; g < num_graphs; ++g) {
    const int base = static_cast<int>(batch.num_nodes());
    for (int a = 0; a < 18; ++a) {
      const bool heavy = a < 9;
      batch.species.push_back(heavy ? heavy_species(rng) : 0);
      batch.graph_index.push_back(g);
      double p[3] = {0, 0, 0};
      if (a > 0) {
        const int parent = base + (heavy ? pick(rng) % a : pick(rng) % 9);
        double d[3] = {normal(rng), normal(rng), normal(rng)};
        const double norm = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) + 1e-12;
        const double length = bond(rng);
        for (int k = 0; k < 3; ++k) p[k] = batch.positions[3 * parent + k] + length * d[k] / norm;
        batch.edge_src.push_back(parent);
        batch.edge_dst.push_back(base + a);
        batch.edge_src.push_back(base + a);
        batch.edge_dst.push_back(parent);
      }
      batch.positions.insert(batch.positions.end(), p, p + 3);
    }
  }
  return batch;
}

// The batch as JSON (the keys of tools/qm9_reference/qm9_molecules.py's batches), so that the e3nn
// anchors (--batch_json) time the same molecules.
bool SaveBatchJson(const GraphBatch& batch, const std::string& path) {
  std::ofstream out(path);
  auto list = [&out](const char* key, const auto& values, const char* tail) {
    out << "\"" << key << "\": [";
    for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
    out << "]" << tail;
  };
  out.precision(17);
  out << "{";
  list("species", batch.species, ", ");
  list("positions", batch.positions, ", ");
  list("edge_src", batch.edge_src, ", ");
  list("edge_dst", batch.edge_dst, ", ");
  list("graph_index", batch.graph_index, ", ");
  out << "\"num_graphs\": " << batch.num_graphs << "}\n";
  return static_cast<bool>(out);
}

struct Timing {
  double median_ms = 0, min_ms = 0;
  int samples = 0;
};

Timing Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.samples = static_cast<int>(ms.size());
  if (ms.empty()) return t;
  t.min_ms = ms.front();
  t.median_ms = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  return t;
}

#define BENCH_CHECK(expr)                                                          \
  do {                                                                             \
    auto _s = (expr);                                                              \
    if (!_s.ok()) {                                                                \
      std::fprintf(stderr, "error: %s: %s\n", #expr, std::string(_s.message()).c_str()); \
      return false;                                                                \
    }                                                                              \
  } while (0)

// Times fn with CUDA events on `stream`, `warmup` untimed calls first.
bool TimeCuda(void* stream, int warmup, int iters, const std::function<absl::Status()>& fn, Timing* out) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  for (int i = 0; i < warmup; ++i) BENCH_CHECK(fn());
  if (cudaStreamSynchronize(s) != cudaSuccess) return false;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(start, s);
    BENCH_CHECK(fn());
    cudaEventRecord(stop, s);
    cudaEventSynchronize(stop);
    float elapsed = 0;
    cudaEventElapsedTime(&elapsed, start, stop);
    ms.push_back(elapsed);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  *out = Summarize(ms);
  return true;
}

struct Result {
  int lmax, mul, layers;
  int64_t params, nodes, edges, graphs;
  Timing step, predict;
  double step_flops, predict_flops, step_bytes;
  float loss_first = 0, loss_last = 0;
  std::string device;
};

std::string ResultJson(const Result& r, const std::string& precision) {
  const double peak = precision == "tf32" ? kTf32Peak : kFp32Peak;
  return absl::StrFormat(
      "{\"lmax\": %d, \"mul\": %d, \"layers\": %d, \"device\": \"%s\", \"precision\": \"%s\", \"parameters\": %d, "
      "\"graphs\": %d, \"nodes\": %d, \"edges\": %d, "
      "\"step_ms\": {\"median\": %.4f, \"min\": %.4f, \"samples\": %d}, "
      "\"predict_ms\": {\"median\": %.4f, \"min\": %.4f, \"samples\": %d}, "
      "\"step_flops\": %.6g, \"predict_flops\": %.6g, \"step_bytes\": %.6g, "
      "\"step_flop_floor_ms\": %.4f, \"predict_flop_floor_ms\": %.4f, \"step_byte_floor_ms\": %.4f, \"peak_flops\": %.4g, "
      "\"bandwidth\": %.4g, \"predict_molecules_per_s\": %.1f, \"train_molecules_per_s\": %.1f, "
      "\"loss_first\": %.6g, \"loss_last\": %.6g}",
      r.lmax, r.mul, r.layers, r.device, precision, r.params, r.graphs, r.nodes, r.edges, r.step.median_ms, r.step.min_ms,
      r.step.samples, r.predict.median_ms, r.predict.min_ms, r.predict.samples, r.step_flops, r.predict_flops,
      r.step_bytes, r.step_flops / peak * 1e3, r.predict_flops / peak * 1e3, r.step_bytes / kHbmBandwidth * 1e3,
      peak, kHbmBandwidth, r.graphs / (r.predict.median_ms * 1e-3), r.graphs / (r.step.median_ms * 1e-3),
      r.loss_first, r.loss_last);
}

void PrintResult(const Result& r, const std::string& precision) {
  const double peak = precision == "tf32" ? kTf32Peak : kFp32Peak;
  std::printf(
      "lmax %d mul %d (%d layers, %lld params, %lld nodes, %lld edges) on %s, %s:\n"
      "  train step: median %.3f ms, min %.3f ms (%d samples); %.1f molecules/s; loss %.5g -> %.5g\n"
      "    floor: %.3g FLOP -> %.3f ms at %.0f TFLOP/s (%.1fx above), %.3g B -> %.3f ms at %.2f TB/s\n"
      "  predict:    median %.3f ms, min %.3f ms; %.1f molecules/s; floor %.3f ms (%.1fx above)\n",
      r.lmax, r.mul, r.layers, static_cast<long long>(r.params), static_cast<long long>(r.nodes),
      static_cast<long long>(r.edges), r.device.c_str(), precision.c_str(), r.step.median_ms, r.step.min_ms,
      r.step.samples, r.graphs / (r.step.median_ms * 1e-3), r.loss_first, r.loss_last, r.step_flops,
      r.step_flops / peak * 1e3, peak * 1e-12, r.step.median_ms / (r.step_flops / peak * 1e3), r.step_bytes,
      r.step_bytes / kHbmBandwidth * 1e3, kHbmBandwidth * 1e-12, r.predict.median_ms, r.predict.min_ms,
      r.graphs / (r.predict.median_ms * 1e-3), r.predict_flops / peak * 1e3,
      r.predict.median_ms / (r.predict_flops / peak * 1e3));
  std::fflush(stdout);
}

std::string g_fctp = "auto";  // --fctp species|dense|auto (the network's default)
bool g_graph = false;  // replay the step as a CUDA graph (captured once) instead of launching it

// Captures fn's launches on `stream` into an executable graph; nullptr (and a message) when the
// capture fails, e.g. because something in fn synchronizes.
cudaGraphExec_t Capture(void* stream, const std::function<absl::Status()>& fn) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return nullptr;
  const absl::Status status = fn();
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(s, &graph);
  cudaGetLastError();
  if (!status.ok() || end != cudaSuccess || graph == nullptr) {
    std::fprintf(stderr, "graph capture failed (%s; %s): launching instead\n", std::string(status.message()).c_str(),
                 cudaGetErrorString(end));
    if (graph) cudaGraphDestroy(graph);
    return nullptr;
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (inst != cudaSuccess) {
    std::fprintf(stderr, "graph instantiate failed: %s\n", cudaGetErrorString(inst));
    cudaGetLastError();
    return nullptr;
  }
  return exec;
}

// fn, or a graph of it when --graph and the capture works; *graphed says which.
std::function<absl::Status()> MaybeGraph(void* stream, std::function<absl::Status()> fn, bool* graphed) {
  *graphed = false;
  if (!g_graph) return fn;
  cudaGraphExec_t exec = Capture(stream, fn);
  if (exec == nullptr) return fn;
  *graphed = true;
  return [exec, stream]() -> absl::Status {
    const cudaError_t error = cudaGraphLaunch(exec, static_cast<cudaStream_t>(stream));
    if (error != cudaSuccess) return absl::InternalError(cudaGetErrorString(error));
    return absl::OkStatus();
  };  // the exec lives until the process ends (a few per run)
}

bool RunCuda(const Qm9NetworkConfig& config, const GraphBatch& batch, const std::string& precision, int warmup,
             int iters, Result* r) {
  tpserve::nn::Qm9CudaOptions options;
  options.fctp = g_fctp == "dense"     ? tpserve::nn::Qm9CudaOptions::FctpMode::kDense
                 : g_fctp == "species" ? tpserve::nn::Qm9CudaOptions::FctpMode::kPerSpecies
                                       : tpserve::nn::Qm9CudaOptions::FctpMode::kAuto;
  const bool dense = g_fctp == "dense" || (g_fctp != "species" && config.mul < 512);
  options.precision = precision == "tf32" ? tpserve::Precision::kTf32 : tpserve::Precision::kFp32;
  auto network = tpserve::nn::Qm9CudaNetwork::Create(config, options);
  BENCH_CHECK(network.status());
  tpserve::CpuBackend cpu(tpserve::CpuBackendOptions{1});
  auto host = tpserve::nn::Qm9Network::Create(config, &cpu);  // layout and initialization
  BENCH_CHECK(host.status());
  const std::vector<double> init = host->InitialParameters(1);
  BENCH_CHECK((*network)->SetParameters(std::vector<float>(init.begin(), init.end())));
  // targets away from the predictions' scale so the L1 gradient is not at its kink
  std::vector<float> targets(static_cast<size_t>(batch.num_graphs) * config.num_targets, 0.f);
  BENCH_CHECK((*network)->SetBatch(batch, targets));
  tpserve::nn::Qm9CudaNetwork* net = network->get();
  const tpserve::nn::SgdMomentumOptions sgd;
  BENCH_CHECK(net->EnqueueLossGradient());
  auto loss = net->Loss();
  BENCH_CHECK(loss.status());
  r->loss_first = *loss;
  if (!std::isfinite(*loss)) {
    std::fprintf(stderr, "error: loss is not finite\n");
    return false;
  }
  bool step_graphed = false, predict_graphed = false;
  auto step = MaybeGraph(net->stream(), [&]() -> absl::Status {
        if (auto s = net->EnqueueLossGradient(); !s.ok()) return s;
        return net->EnqueueSgdStep(sgd);
      }, &step_graphed);
  if (!TimeCuda(net->stream(), warmup, iters, step, &r->step)) return false;
  loss = net->Loss();
  BENCH_CHECK(loss.status());
  r->loss_last = *loss;
  auto predict = MaybeGraph(net->stream(), [&]() { return net->EnqueueForward(); }, &predict_graphed);
  if (!TimeCuda(net->stream(), warmup, iters, predict, &r->predict)) return false;
  int device = 0;
  cudaGetDevice(&device);
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, device);
  r->device = std::string(prop.name) + (dense ? ", dense FCTPs" : ", per-species FCTPs") +
              (step_graphed && predict_graphed ? ", CUDA graph" : ", launched");
  return true;
}

bool RunCpu(const Qm9NetworkConfig& config, const GraphBatch& batch, int warmup, int iters, Result* r) {
  tpserve::CpuBackend cpu(tpserve::CpuBackendOptions{0});
  auto network = tpserve::nn::Qm9Network::Create(config, &cpu);
  BENCH_CHECK(network.status());
  const std::vector<double> init = network->InitialParameters(1);
  std::vector<float> params(init.begin(), init.end()), velocity;
  std::vector<float> targets(static_cast<size_t>(batch.num_graphs) * config.num_targets, 0.f);
  auto time = [&](bool step, Timing* out) {
    std::vector<double> ms;
    for (int i = 0; i < warmup + iters; ++i) {
      const auto start = std::chrono::steady_clock::now();
      if (step) {
        auto result = network->LossGradient(params, batch, targets);
        if (!result.ok()) return false;
        if (i == 0) r->loss_first = result->loss;
        r->loss_last = result->loss;
        tpserve::nn::SgdMomentumStep(params, velocity, result->gradient, tpserve::nn::SgdMomentumOptions{});
      } else if (!network->Predict(params, batch).ok()) {
        return false;
      }
      const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (i >= warmup) ms.push_back(elapsed);
    }
    *out = Summarize(ms);
    return true;
  };
  r->device = "cpu";
  return time(true, &r->step) && time(false, &r->predict);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shapes = "1x128,1x256,2x128,2x512", precision = "fp32", json_path, save_batch_path;
  int layers = 6, graphs = 27, iters = 30, warmup = 5;
  bool cpu = false;
  std::string batch_kind = "qm9";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--shapes") shapes = value();
    else if (arg == "--layers") layers = std::atoi(value().c_str());
    else if (arg == "--graphs") graphs = std::atoi(value().c_str());
    else if (arg == "--iters") iters = std::atoi(value().c_str());
    else if (arg == "--warmup") warmup = std::atoi(value().c_str());
    else if (arg == "--precision") precision = value();
    else if (arg == "--json") json_path = value();
    else if (arg == "--fctp") g_fctp = value();
    else if (arg == "--graph") g_graph = true;
    else if (arg == "--batch") batch_kind = value();
    else if (arg == "--cpu") cpu = true;
    else if (arg == "--save_batch") save_batch_path = value();
    else {
      std::fprintf(stderr,
                   "usage: qm9-bench [--shapes 1x128,...] [--layers 6] [--graphs 27] [--iters 30] [--warmup 5] "
                   "[--precision fp32|tf32] [--json FILE] [--fctp auto|species|dense] [--graph] [--batch qm9|chain] "
                   "[--save_batch FILE] [--cpu]\n");
      return 2;
    }
  }
  if (precision != "fp32" && precision != "tf32") {
    std::fprintf(stderr, "--precision: expected fp32 or tf32, got %s\n", precision.c_str());
    return 2;
  }
  std::mt19937_64 rng(27);
  // qm9: the shape (27 molecules -> 486 atoms, bonds only: 918 directed edges); chain: nn/'s
  // random chains (edges between all atoms closer than 1.6 A: more edges per atom)
  const GraphBatch batch = batch_kind == "chain" ? tpserve::nn::RandomChainBatch(rng, graphs, 34) : Qm9ShapedBatch(rng, graphs);
  if (!save_batch_path.empty() && !SaveBatchJson(batch, save_batch_path)) {
    std::fprintf(stderr, "--save_batch: cannot write %s\n", save_batch_path.c_str());
    return 2;
  }
  std::vector<std::string> json;
  int failures = 0;
  for (const std::string& shape : std::vector<std::string>(absl::StrSplit(shapes, ','))) {
    std::vector<std::string> parts = absl::StrSplit(shape, 'x');
    if (parts.size() != 2) {
      std::fprintf(stderr, "bad shape %s (expected LMAXxMUL)\n", shape.c_str());
      return 2;
    }
    Qm9NetworkConfig config;
    config.lmax = std::atoi(parts[0].c_str());
    config.mul = std::atoi(parts[1].c_str());
    config.layers = layers;
    Result r{config.lmax, config.mul, layers, 0, batch.num_nodes(), batch.num_edges(), batch.num_graphs};
    r.step_flops = tpserve::nn::TrainingStepFlops(config, batch.num_nodes(), batch.num_edges());
    r.predict_flops = tpserve::nn::PredictFlops(config, batch.num_nodes(), batch.num_edges());
    r.step_bytes = tpserve::nn::TrainingStepBytes(config, batch.num_nodes(), batch.num_edges(), 4);
    {
      tpserve::CpuBackend describe(tpserve::CpuBackendOptions{1});
      auto host = tpserve::nn::Qm9Network::Create(config, &describe);
      if (!host.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(host.status().message()).c_str());
        return 2;
      }
      r.params = host->num_parameters();
    }
    const bool ok = cpu ? RunCpu(config, batch, warmup, iters, &r) : RunCuda(config, batch, precision, warmup, iters, &r);
    if (!ok) {
      std::printf("lmax %d mul %d: FAILED\n", config.lmax, config.mul);
      ++failures;
      continue;
    }
    PrintResult(r, cpu ? std::string("fp32") : precision);
    json.push_back(ResultJson(r, cpu ? std::string("fp32") : precision));
  }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\"benchmark\": \"qm9-bench\", \"results\": [\n";
    for (size_t i = 0; i < json.size(); ++i) out << "  " << json[i] << (i + 1 < json.size() ? ",\n" : "\n");
    out << "]}\n";
  }
  return failures == 0 ? 0 : 1;
}
