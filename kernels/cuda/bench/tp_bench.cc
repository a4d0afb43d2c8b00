// tp-bench: verifies the CUDA backend against the float64 CPU reference, then times the seed task
// (d/dw sum tanh TP, forward included) and the forward pass alone for batches 64, 1024 and 16384 in
// every precision. CUDA events around each run, warm-up first, median and min of --runs runs, inputs
// rotated among several sets. Prints a table; --json PATH writes every number.
//
//   tp-bench [--json PATH] [--runs 100] [--batches 64,1024,16384] [--precisions fp32,tf32,bf16]
//            [--irreps "128x0e+128x1e+128x2e"] [--backend cuda|cpu|both]
//            [--weight_grad_kernel mma|wgmma] [--backward] [--dw_report]
//
// --backward adds task backward_dw: Backward with grad_weight only from a random grad_out (the weight
// gradient kernel and the transpose of grad_out), verified like the seed task. A dW check that fails
// (or every one, with --dw_report) prints each path's error and its first bad element.
//   tp-bench --qm9_edge [--qm9_lmax 1,2] [--qm9_mul 128,256,512] [--qm9_edges 950] [--runs N] [--json PATH]
//            the QM9 network's per-edge 'uvu' TP instead (qm9_edge_bench.h)
//
// Verification: batches up to --verify_max_batch (1024) are checked in full against CpuBackend in
// float64 on the same float32-rounded inputs; larger batches check the forward pass on their first 128
// samples against the CPU and the seed task's dW against the CUDA fp32 result (itself checked above).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kernels/core/backend.h"
#include "kernels/core/plan.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/bench/bench_check.h"
#include "kernels/cuda/bench/qm9_edge_bench.h"
#include "kernels/cuda/cuda_backend.h"

namespace tpserve {
namespace {

// Ceilings of the H100 SXM used for the floor (docs/BENCHMARKS.md): dense tensor-core rates and
// the measured device-memory copy bandwidth. 3xTF32 does three TF32 products per product.
constexpr double kTf32Flops = 495e12;
constexpr double kBf16Flops = 990e12;
constexpr double kMemoryBytesPerSecond = 3.0e12;

double PeakFlops(Precision p) {
  switch (p) {
    case Precision::kFp32: return kTf32Flops / 3;
    case Precision::kTf32: return kTf32Flops;
    case Precision::kBf16: return kBf16Flops;
  }
  return kTf32Flops;
}

double Tolerance(Precision p) { return p == Precision::kFp32 ? 1e-5 : p == Precision::kTf32 ? 2e-3 : 2e-2; }

struct Config {
  std::string json_path;
  int runs = 100;
  int warmup = 10;
  std::vector<int64_t> batches = {64, 1024, 16384};
  std::vector<Precision> precisions = {Precision::kFp32, Precision::kTf32, Precision::kBf16};
  std::string irreps = "128x0e+128x1e+128x2e";
  bool cuda = true, cpu = false;
  int64_t verify_max_batch = 1024;
  int64_t cpu_max_batch = 1024;
  // Also time a server launch's round trip (--roundtrip): see RoundTrip().
  bool roundtrip = false;
  // Also time Backward with grad_weight only from a given grad_out (--backward): task "backward_dw".
  bool backward = false;
  // Per-path dW errors for every dW check (--dw_report), not only for failed ones.
  bool dw_report = false;
  // --forward_kernel, --factored_warp_cols, --factored_blocks_per_sm, --weight_grad_kernel
  CudaBackendOptions cuda_options;
};

struct Record {
  std::string task, backend, precision;
  int64_t batch;
  double median_ms, min_ms, flops, bytes, floor_ms, rel_error;
  std::string verified_against;
  int runs;
  double workspace_bytes;
};


double RelError(const std::vector<float>& got, const std::vector<double>& want, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = double(got[i]) - want[i];
    d += e * e;
    r += want[i] * want[i];
  }
  return std::sqrt(d) / std::max(std::sqrt(r), 1e-300);
}

// Per path of the plan: relative error of dW, the largest element error over the path's rms, and
// the first element (p, q, n) whose error exceeds tol x that rms: what a wrong kernel result needs.
void ReportDwByPath(const TensorProductPlan& plan, const std::vector<float>& got, const std::vector<double>& want,
                    double tol, const char* what) {
  std::printf("  %s: dW by path (rel_err, max |err|/rms, first element over %.0e x rms)\n", what, tol);
  for (size_t i = 0; i < plan.paths().size(); ++i) {
    const PathPlan& pp = plan.paths()[i];
    const int64_t off = pp.weight_offset, n = pp.weight_numel;
    double d = 0, r = 0, max_err = 0;
    for (int64_t k = off; k < off + n; ++k) {
      const double e = double(got[k]) - want[k];
      d += e * e;
      r += want[k] * want[k];
      max_err = std::max(max_err, std::isnan(e) ? INFINITY : std::fabs(e));
    }
    const double rms = std::sqrt(r / std::max<int64_t>(n, 1));
    std::string first = "none";
    for (int64_t k = off; k < off + n; ++k) {
      const double e = double(got[k]) - want[k];
      if (!(std::fabs(e) <= tol * rms)) {
        const int64_t local = k - off, w_ = pp.mul_out, v_ = pp.mul_in2;
        first = absl::StrFormat("index %d (u %d, v %d, w %d): got %.6g want %.6g", k, local / (v_ * w_),
                                (local / w_) % v_, local % w_, got[k], want[k]);
        break;
      }
    }
    std::printf("    path %2zu (l %d x %d -> %d, %dx%dx%d): rel %.2e, max/rms %.2e, first bad: %s\n", i, pp.l1, pp.l2,
                pp.l3, pp.mul_in1, pp.mul_in2, pp.mul_out, std::sqrt(d) / std::max(std::sqrt(r), 1e-300),
                max_err / std::max(rms, 1e-300), first.c_str());
  }
}

std::vector<float> RandomFloats(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

struct DeviceBuf {
  float* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuf(size_t count) : n(count) { CHECK_CUDA(cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(n, 1) * 4)); }
  ~DeviceBuf() { cudaFree(ptr); }
  void Upload(const std::vector<float>& v) { CHECK_CUDA(cudaMemcpy(ptr, v.data(), n * 4, cudaMemcpyHostToDevice)); }
  std::vector<float> Download() const {
    std::vector<float> v(n);
    CHECK_CUDA(cudaMemcpy(v.data(), ptr, n * 4, cudaMemcpyDeviceToHost));
    return v;
  }
  void Poison() { CHECK_CUDA(cudaMemset(ptr, 0xff, n * 4)); }
};

// Median and min in ms of `runs` timed calls of fn(i) (after `warmup` untimed calls).
std::pair<double, double> TimeCuda(const std::function<void(int)>& fn, int warmup, int runs, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<cudaEvent_t> events(2 * runs);
  for (auto& e : events) CHECK_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < runs; ++i) {
    CHECK_CUDA(cudaEventRecord(events[2 * i], stream));
    fn(i);
    CHECK_CUDA(cudaEventRecord(events[2 * i + 1], stream));
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<double> ms(runs);
  for (int i = 0; i < runs; ++i) {
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, events[2 * i], events[2 * i + 1]));
    ms[i] = t;
  }
  for (auto& e : events) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[0]};
}

template <typename F>
std::pair<double, double> TimeHost(F fn, int warmup, int runs) {
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<double> ms(runs);
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn(i);
    ms[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[0]};
}

void PrintRecord(const Record& r) {
  const double seconds = r.median_ms * 1e-3;
  std::printf("%-12s %-5s %-5s %6lld %10.4f %10.4f %8.1f %8.0f %9.4f %7.2fx %10.2e  %s\n", r.task.c_str(),
              r.backend.c_str(), r.precision.c_str(), static_cast<long long>(r.batch), r.median_ms, r.min_ms,
              r.flops / seconds * 1e-12, r.bytes / seconds * 1e-9, r.floor_ms, r.median_ms / r.floor_ms, r.rel_error,
              r.verified_against.c_str());
  std::fflush(stdout);
}

std::string JsonNumber(double value, const char* format) {
  if (!std::isfinite(value)) return "null";
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

void WriteJson(const Config& config, const std::vector<Record>& records, const std::string& device) {
  std::ofstream out(config.json_path);
  out << "{\n  \"device\": \"" << device << "\",\n  \"irreps\": \"" << config.irreps << "\",\n  \"runs\": "
      << config.runs << ",\n  \"results\": [\n";
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    const double s = r.median_ms * 1e-3;
    out << absl::StrFormat(
        "    {\"task\": \"%s\", \"backend\": \"%s\", \"precision\": \"%s\", \"batch\": %d, \"median_ms\": %.6f, "
        "\"min_ms\": %.6f, \"tflops\": %.3f, \"gbps\": %.1f, \"flop\": %.6g, \"bytes\": %.6g, \"floor_ms\": %s, "
        "\"ratio_to_floor\": %s, \"rel_error\": %s, \"verified_against\": \"%s\", \"workspace_bytes\": %.0f, "
        "\"runs\": %d}%s\n",
        r.task, r.backend, r.precision, r.batch, r.median_ms, r.min_ms, r.flops / s * 1e-12, r.bytes / s * 1e-9,
        r.flops, r.bytes, JsonNumber(r.floor_ms, "%.6f"), JsonNumber(r.median_ms / r.floor_ms, "%.3f"),
        std::isfinite(r.rel_error) ? absl::StrFormat("%.3e", r.rel_error) : std::string("null"), r.verified_against, r.workspace_bytes,
        r.runs, i + 1 < records.size() ? "," : "");
  }
  out << "  ]\n}\n";
}

int Main(const Config& config) {
  auto plan_or = TensorProductPlan::FullyConnected(config.irreps, config.irreps, config.irreps);
  CHECK_OK(plan_or.status());
  const TensorProductPlan& plan = *plan_or;
  const int64_t wn = plan.weight_numel();
  std::printf("irreps %s (all three): %zu paths, %lld weights (%.1f MB fp32)\n", config.irreps.c_str(),
              plan.paths().size(), static_cast<long long>(wn), wn * 4e-6);

  std::unique_ptr<Backend> cuda;
  std::string device_name = "none";
  if (config.cuda) {
    if (CudaBackend::DeviceCount() == 0) {
      std::fprintf(stderr, "no CUDA device\n");
      return 2;
    }
    std::printf("cuda options: %s\n", DescribeCudaBackendOptions(config.cuda_options).c_str());
    auto c = CudaBackend::Create(0, config.cuda_options);
    CHECK_OK(c.status());
    cuda = std::move(c).value();
    cudaDeviceProp prop{};
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    device_name = absl::StrFormat("%s (%d SMs, %.0f MB L2)", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
    std::printf("device: %s\n", device_name.c_str());
  }
  CpuBackend cpu;
  auto cpu_plan = cpu.Prepare(plan);
  CHECK_OK(cpu_plan.status());
  std::unique_ptr<PreparedPlan> cuda_plan;
  if (cuda) {
    auto p = cuda->Prepare(plan);
    CHECK_OK(p.status());
    cuda_plan = std::move(p).value();
  }

  std::mt19937_64 rng(12345);
  const std::vector<float> w_host = RandomFloats(wn, rng);
  std::vector<double> w_double(w_host.begin(), w_host.end());
  std::vector<Record> records;
  bool all_ok = true;
  std::printf("\n%-12s %-5s %-5s %6s %10s %10s %8s %8s %9s %8s %10s  %s\n", "task", "bkend", "prec", "batch",
              "median_ms", "min_ms", "TFLOP/s", "GB/s", "floor_ms", "/floor", "rel_err", "verified against");

  DeviceBuf w_dev(cuda ? wn : 0), dw_dev(cuda ? wn : 0);
  if (cuda) w_dev.Upload(w_host);
  cudaStream_t stream = nullptr;
  if (cuda) CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  for (int64_t batch : config.batches) {
    const int64_t d1 = plan.dim_in1(), d2 = plan.dim_in2(), dout = plan.dim_out();
    // Rotate among input sets while they are small enough to sit in L2 (W never fits).
    const int sets = batch * (d1 + d2) * 4 <= (64 << 20) / 4 ? 4 : 1;
    std::vector<std::vector<float>> x1s, x2s;
    for (int s = 0; s < sets; ++s) {
      x1s.push_back(RandomFloats(batch * d1, rng));
      x2s.push_back(RandomFloats(batch * d2, rng));
    }
    // float64 CPU reference on set 0 (in full, or the first 128 samples' forward for big batches).
    const bool full_verify = batch <= config.verify_max_batch;
    const int64_t ref_batch = full_verify ? batch : std::min<int64_t>(batch, 128);
    std::vector<double> x1d(x1s[0].begin(), x1s[0].begin() + ref_batch * d1),
        x2d(x2s[0].begin(), x2s[0].begin() + ref_batch * d2);
    std::vector<double> ref_out(ref_batch * dout), ref_dw;
    ConstTensorView w_view{w_double.data(), DType::kFloat64, {wn}};
    ConstTensorView x1_view{x1d.data(), DType::kFloat64, {ref_batch, d1}};
    ConstTensorView x2_view{x2d.data(), DType::kFloat64, {ref_batch, d2}};
    if (full_verify) {
      ref_dw.resize(wn);
      CHECK_OK(cpu.LossGradient(**cpu_plan, Loss::kSumTanh, w_view, x1_view, x2_view,
                                {ref_out.data(), DType::kFloat64, {ref_batch, dout}},
                                GradientOutputs{{ref_dw.data(), DType::kFloat64, {wn}}, {}, {}}, {}));
    } else {
      CHECK_OK(cpu.Forward(**cpu_plan, w_view, x1_view, x2_view, {ref_out.data(), DType::kFloat64, {ref_batch, dout}},
                           {}));
    }

    const double fwd_flops = plan.ForwardFlops(batch);
    const double io_bytes = 4.0 * batch * (d1 + d2 + dout);
    if (cuda) {
      std::vector<std::unique_ptr<DeviceBuf>> x1_dev, x2_dev;
      for (int s = 0; s < sets; ++s) {
        x1_dev.push_back(std::make_unique<DeviceBuf>(batch * d1));
        x1_dev.back()->Upload(x1s[s]);
        x2_dev.push_back(std::make_unique<DeviceBuf>(batch * d2));
        x2_dev.back()->Upload(x2s[s]);
      }
      DeviceBuf out_dev(batch * dout);
      std::vector<double> cuda_fp32_dw, cuda_fp32_bdw;
      // --backward: grad_out for Backward (grad_weight only), and its float64 reference dW.
      std::vector<float> gout_host;
      std::vector<double> ref_bdw;
      std::unique_ptr<DeviceBuf> gout_dev;
      if (config.backward) {
        gout_host = RandomFloats(batch * dout, rng);
        gout_dev = std::make_unique<DeviceBuf>(batch * dout);
        gout_dev->Upload(gout_host);
        if (full_verify) {
          std::vector<double> gd(gout_host.begin(), gout_host.end());
          ref_bdw.resize(wn);
          CHECK_OK(cpu.Backward(**cpu_plan, w_view, x1_view, x2_view, {gd.data(), DType::kFloat64, {batch, dout}},
                                GradientOutputs{{ref_bdw.data(), DType::kFloat64, {wn}}, {}, {}}, {}));
        }
      }
      for (Precision precision : config.precisions) {
        ExecutionContext ctx;
        ctx.precision = precision;
        ctx.stream = stream;
        auto view = [&](const DeviceBuf& b, std::vector<int64_t> shape) {
          return ConstTensorView{b.ptr, DType::kFloat32, std::move(shape)};
        };
        auto forward = [&](int i) {
          const int s = i % sets;
          CHECK_OK(cuda->Forward(*cuda_plan, view(w_dev, {wn}), view(*x1_dev[s], {batch, d1}),
                                 view(*x2_dev[s], {batch, d2}), {out_dev.ptr, DType::kFloat32, {batch, dout}}, ctx));
        };
        auto seed = [&](int i) {
          const int s = i % sets;
          CHECK_OK(cuda->LossGradient(*cuda_plan, Loss::kSumTanh, view(w_dev, {wn}), view(*x1_dev[s], {batch, d1}),
                                      view(*x2_dev[s], {batch, d2}), {},
                                      GradientOutputs{{dw_dev.ptr, DType::kFloat32, {wn}}, {}, {}}, ctx));
        };
        // Verify (outputs poisoned first), then time.
        out_dev.Poison();
        forward(0);
        CHECK_OK(cuda->Synchronize(ctx));
        const double fwd_err = RelError(out_dev.Download(), ref_out, ref_out.size());
        dw_dev.Poison();
        cudaMemPool_t pool;
        CHECK_CUDA(cudaDeviceGetDefaultMemPool(&pool, 0));
        uint64_t zero = 0;
        CHECK_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
        seed(0);
        CHECK_OK(cuda->Synchronize(ctx));
        uint64_t pool_high = 0;
        CHECK_CUDA(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &pool_high));
        const std::vector<float> dw = dw_dev.Download();
        double seed_err = 0;
        std::string seed_ref = "cpu-fp64";
        if (full_verify) {
          seed_err = RelError(dw, ref_dw, wn);
        } else if (!cuda_fp32_dw.empty()) {
          seed_err = RelError(dw, cuda_fp32_dw, wn);
          seed_ref = "cuda-fp32";
        } else {
          seed_ref = "none";
          seed_err = NAN;
        }
        if (precision == Precision::kFp32) cuda_fp32_dw.assign(dw.begin(), dw.end());
        const double tol = Tolerance(precision);
        const bool fwd_ok = fwd_err <= tol, seed_ok = seed_ref == "none" ? true : seed_err <= tol;
        if (seed_ref != "none" && (!seed_ok || config.dw_report)) {
          ReportDwByPath(plan, dw, full_verify ? ref_dw : cuda_fp32_dw,
                         tol, absl::StrFormat("dw_sum_tanh %s b=%d", PrecisionName(precision), batch).c_str());
        }
        if (!fwd_ok || !seed_ok) all_ok = false;

        auto [f_med, f_min] = TimeCuda(forward, config.warmup, config.runs, stream);
        const double f_bytes = 4.0 * wn + io_bytes;
        Record fr{"forward", "cuda", PrecisionName(precision), batch, f_med, f_min, fwd_flops, f_bytes,
                  std::max(fwd_flops / PeakFlops(precision), f_bytes / kMemoryBytesPerSecond) * 1e3, fwd_err,
                  full_verify ? "cpu-fp64" : "cpu-fp64 (first 128 samples)", config.runs, 0};
        if (!fwd_ok) fr.verified_against += " FAILED";
        PrintRecord(fr);
        records.push_back(fr);
        if (config.roundtrip) {
          // What a server launch pays around the kernel, on the host's clock as the server sees
          // it: inputs from page-locked memory in one copy, the forward, the result back into
          // page-locked memory, and the wait. Back to back, and with the GPU idle 0.5 ms before
          // each (a lone client's gap between calls); then the copies alone and the forward alone.
          const int64_t x2_at = (batch * d1 + 63) / 64 * 64, in_n = x2_at + batch * d2;
          float *pin_in = nullptr, *pin_out = nullptr;
          CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&pin_in), in_n * 4, cudaHostAllocPortable));
          CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&pin_out), batch * dout * 4, cudaHostAllocPortable));
          std::copy(x1s[0].begin(), x1s[0].end(), pin_in);
          std::copy(x2s[0].begin(), x2s[0].end(), pin_in + x2_at);
          DeviceBuf in_dev(in_n);
          auto h2d = [&] {
            CHECK_CUDA(cudaMemcpyAsync(in_dev.ptr, pin_in, in_n * 4, cudaMemcpyHostToDevice, stream));
          };
          auto d2h = [&] {
            CHECK_CUDA(cudaMemcpyAsync(pin_out, out_dev.ptr, batch * dout * 4, cudaMemcpyDeviceToHost, stream));
          };
          auto fwd = [&] {
            CHECK_OK(cuda->Forward(*cuda_plan, view(w_dev, {wn}), ConstTensorView{in_dev.ptr, DType::kFloat32, {batch, d1}},
                                   ConstTensorView{in_dev.ptr + x2_at, DType::kFloat32, {batch, d2}},
                                   {out_dev.ptr, DType::kFloat32, {batch, dout}}, ctx));
          };
          auto sync = [&] { CHECK_CUDA(cudaStreamSynchronize(stream)); };
          auto time_host = [&](const std::function<void()>& fn, double idle_ms) {
            for (int i = 0; i < config.warmup; ++i) fn();
            std::vector<double> ms(config.runs);
            for (int i = 0; i < config.runs; ++i) {
              if (idle_ms > 0) std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int>(idle_ms * 1e3)));
              auto t0 = std::chrono::steady_clock::now();
              fn();
              ms[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            }
            std::sort(ms.begin(), ms.end());
            return std::make_pair(ms[ms.size() / 2], ms[0]);
          };
          auto trip = [&] { h2d(); fwd(); d2h(); sync(); };
          std::fill(pin_out, pin_out + batch * dout, NAN);
          trip();
          const double trip_err = RelError(std::vector<float>(pin_out, pin_out + batch * dout), ref_out, ref_out.size());
          auto [t_med, t_min] = time_host(trip, 0);
          auto [ti_med, ti_min] = time_host(trip, 0.5);
          auto [c_med, c_min] = time_host([&] { h2d(); d2h(); sync(); }, 0.5);
          auto [h_med, h_min] = time_host([&] { h2d(); sync(); }, 0.5);
          auto [f2_med, f2_min] = time_host([&] { fwd(); sync(); }, 0.5);
          std::printf("roundtrip %s b=%lld (err %.2e): copies+forward+sync %.4f (min %.4f) ms back to back, "
                      "%.4f (min %.4f) after 0.5 ms idle; copies+sync %.4f, H2D+sync %.4f, forward+sync %.4f "
                      "(idle before each; kernel by events %.4f)\n",
                      PrecisionName(precision), static_cast<long long>(batch), trip_err, t_med, t_min, ti_med, ti_min,
                      c_med, h_med, f2_med, f_med);
          cudaFreeHost(pin_in);
          cudaFreeHost(pin_out);
        }
        auto [s_med, s_min] = TimeCuda(seed, config.warmup, config.runs, stream);
        const double s_flops = 2 * fwd_flops, s_bytes = 8.0 * wn + 4.0 * batch * (d1 + d2);
        Record sr{"dw_sum_tanh", "cuda", PrecisionName(precision), batch, s_med, s_min, s_flops, s_bytes,
                  std::max(s_flops / PeakFlops(precision), s_bytes / kMemoryBytesPerSecond) * 1e3, seed_err,
                  seed_ref, config.runs, double(pool_high)};
        if (!seed_ok) sr.verified_against += " FAILED";
        PrintRecord(sr);
        records.push_back(sr);
        if (config.backward) {
          auto backward = [&](int i) {
            const int s = i % sets;
            CHECK_OK(cuda->Backward(*cuda_plan, view(w_dev, {wn}), view(*x1_dev[s], {batch, d1}),
                                    view(*x2_dev[s], {batch, d2}), view(*gout_dev, {batch, dout}),
                                    GradientOutputs{{dw_dev.ptr, DType::kFloat32, {wn}}, {}, {}}, ctx));
          };
          dw_dev.Poison();
          backward(0);
          CHECK_OK(cuda->Synchronize(ctx));
          const std::vector<float> bdw = dw_dev.Download();
          std::string b_ref = "cpu-fp64";
          double b_err = NAN;
          if (full_verify) {
            b_err = RelError(bdw, ref_bdw, wn);
          } else if (!cuda_fp32_bdw.empty()) {
            b_err = RelError(bdw, cuda_fp32_bdw, wn);
            b_ref = "cuda-fp32";
          } else {
            b_ref = "none";
          }
          if (precision == Precision::kFp32) cuda_fp32_bdw.assign(bdw.begin(), bdw.end());
          const bool b_ok = b_ref == "none" || b_err <= tol;
          if (!b_ok) all_ok = false;
          if (b_ref != "none" && (!b_ok || config.dw_report)) {
            ReportDwByPath(plan, bdw, full_verify ? ref_bdw : cuda_fp32_bdw, tol,
                           absl::StrFormat("backward_dw %s b=%d", PrecisionName(precision), batch).c_str());
          }
          auto [b_med, b_min] = TimeCuda(backward, config.warmup, config.runs, stream);
          // The weight gradient's GEMM (as many FLOPs as the forward); W is not read, dW written once.
          const double b_bytes = 4.0 * wn + 4.0 * batch * (d1 + d2 + dout);
          Record br{"backward_dw", "cuda", PrecisionName(precision), batch, b_med, b_min, fwd_flops, b_bytes,
                    std::max(fwd_flops / PeakFlops(precision), b_bytes / kMemoryBytesPerSecond) * 1e3, b_err,
                    b_ref, config.runs, 0};
          if (!b_ok) br.verified_against += " FAILED";
          PrintRecord(br);
          records.push_back(br);
        }
      }
    }
    if (config.cpu && batch <= config.cpu_max_batch) {
      const int cpu_runs = std::max(3, config.runs / 20);
      std::vector<float> out(batch * dout), dw(wn);
      ConstTensorView w32{w_host.data(), DType::kFloat32, {wn}};
      auto x1v = [&](int i) { return ConstTensorView{x1s[i % sets].data(), DType::kFloat32, {batch, d1}}; };
      auto x2v = [&](int i) { return ConstTensorView{x2s[i % sets].data(), DType::kFloat32, {batch, d2}}; };
      CHECK_OK(cpu.Forward(**cpu_plan, w32, x1v(0), x2v(0), {out.data(), DType::kFloat32, {batch, dout}}, {}));
      const double fwd_err = RelError(out, ref_out, ref_out.size());
      auto [f_med, f_min] = TimeHost(
          [&](int i) {
            CHECK_OK(cpu.Forward(**cpu_plan, w32, x1v(i), x2v(i), {out.data(), DType::kFloat32, {batch, dout}}, {}));
          },
          1, cpu_runs);
      const double f_bytes = 4.0 * wn + io_bytes;
      // No floor model for the CPU: floor_ms is NaN (null in the JSON).
      Record fr{"forward", "cpu", "fp32", batch, f_med, f_min, fwd_flops, f_bytes, NAN, fwd_err, "cpu-fp64", cpu_runs, 0};
      PrintRecord(fr);
      records.push_back(fr);
      // Verify on input set 0 (the reference's inputs) before timing over rotated sets.
      CHECK_OK(cpu.LossGradient(**cpu_plan, Loss::kSumTanh, w32, x1v(0), x2v(0), {},
                                GradientOutputs{{dw.data(), DType::kFloat32, {wn}}, {}, {}}, {}));
      const double seed_err = full_verify ? RelError(dw, ref_dw, wn) : NAN;
      auto [s_med, s_min] = TimeHost(
          [&](int i) {
            CHECK_OK(cpu.LossGradient(**cpu_plan, Loss::kSumTanh, w32, x1v(i), x2v(i), {},
                                      GradientOutputs{{dw.data(), DType::kFloat32, {wn}}, {}, {}}, {}));
          },
          1, cpu_runs);
      Record sr{"dw_sum_tanh", "cpu", "fp32", batch, s_med, s_min, 2 * fwd_flops, 8.0 * wn, NAN, seed_err,
                full_verify ? "cpu-fp64" : "none", cpu_runs, 0};
      PrintRecord(sr);
      records.push_back(sr);
    }
  }
  if (stream) cudaStreamDestroy(stream);
  if (!config.json_path.empty()) {
    WriteJson(config, records, device_name);
    std::printf("wrote %s\n", config.json_path.c_str());
  }
  if (!all_ok) {
    std::fprintf(stderr, "VERIFICATION FAILED (see rows marked FAILED)\n");
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace tpserve

namespace {

bool ParseIntList(const std::string& text, std::vector<int>* out) {
  out->clear();
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n <= 0) return false;
    out->push_back(n);
  }
  return !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  tpserve::Config config;
  tpserve::Qm9EdgeBenchConfig qm9;
  bool qm9_edge = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--roundtrip") {
      config.roundtrip = true;
    } else if (arg == "--qm9_edge") {
      qm9_edge = true;
    } else if (arg == "--qm9_lmax" || arg == "--qm9_mul") {
      if (!ParseIntList(value(), arg == "--qm9_lmax" ? &qm9.lmaxes : &qm9.muls)) {
        std::fprintf(stderr, "%s: expected positive integers separated by commas\n", arg.c_str());
        return 2;
      }
    } else if (arg == "--qm9_edges") {
      qm9.edges = std::atoll(value().c_str());
      if (qm9.edges <= 0) {
        std::fprintf(stderr, "--qm9_edges: expected a positive integer\n");
        return 2;
      }
    } else if (arg == "--json") {
      config.json_path = value();
    } else if (arg == "--runs") {
      config.runs = std::atoi(value().c_str());
    } else if (arg == "--warmup") {
      config.warmup = std::atoi(value().c_str());
    } else if (arg == "--irreps") {
      config.irreps = value();
    } else if (arg == "--batches") {
      config.batches.clear();
      for (absl::string_view b : absl::StrSplit(value(), ',')) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(b, &n) || n <= 0) {
          std::fprintf(stderr, "--batches: expected positive integers\n");
          return 2;
        }
        config.batches.push_back(n);
      }
    } else if (arg == "--precisions") {
      config.precisions.clear();
      for (absl::string_view p : absl::StrSplit(value(), ',')) {
        auto precision = tpserve::ParsePrecision(p);
        if (!precision.ok()) {
          std::fprintf(stderr, "%s\n", precision.status().ToString().c_str());
          return 2;
        }
        config.precisions.push_back(*precision);
      }
    } else if (arg == "--backend") {
      const std::string b = value();
      config.cuda = b == "cuda" || b == "both";
      config.cpu = b == "cpu" || b == "both";
    } else if (arg == "--forward_kernel") {
      auto kernel = tpserve::ParseForwardKernel(value());
      if (!kernel.ok()) {
        std::fprintf(stderr, "--%s\n", std::string(kernel.status().message()).c_str());
        return 2;
      }
      config.cuda_options.forward_kernel = *kernel;
    } else if (arg == "--weight_grad_kernel") {
      auto kernel = tpserve::ParseWeightGradKernel(value());
      if (!kernel.ok()) {
        std::fprintf(stderr, "--%s\n", std::string(kernel.status().message()).c_str());
        return 2;
      }
      config.cuda_options.weight_grad_kernel = *kernel;
    } else if (arg == "--backward") {
      config.backward = true;
    } else if (arg == "--dw_report") {
      config.dw_report = true;
    } else if (arg == "--factored_warp_cols") {
      config.cuda_options.factored_warp_cols = std::atoi(value().c_str());
    } else if (arg == "--factored_blocks_per_sm") {
      config.cuda_options.factored_blocks_per_sm = std::atoi(value().c_str());
    } else if (arg == "--verify_max_batch") {
      config.verify_max_batch = std::atoll(value().c_str());
    } else if (arg == "--cpu_max_batch") {
      config.cpu_max_batch = std::atoll(value().c_str());
    } else {
      std::fprintf(stderr,
                   "usage: tp-bench [--json PATH] [--runs N] [--warmup N] [--batches 64,1024,16384] "
                   "[--precisions fp32,tf32,bf16] [--irreps IRREPS] [--backend cuda|cpu|both] "
                   "[--verify_max_batch N] [--cpu_max_batch N] [--roundtrip]\n"
                   "                [--qm9_edge [--qm9_lmax 1,2] [--qm9_mul 128,256,512] [--qm9_edges 950]]\n"
                   "                [--forward_kernel auto|factored-mma|factored-3xtf32|gemm] "
                   "[--factored_warp_cols 16|32] [--factored_blocks_per_sm N (0: auto)]\n"
                   "                [--weight_grad_kernel mma|wgmma] [--backward] [--dw_report]\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  if (config.runs < 1) config.runs = 1;
  if (qm9_edge) {
    qm9.runs = config.runs;
    qm9.warmup = config.warmup;
    qm9.json_path = config.json_path;
    return tpserve::RunQm9EdgeBench(qm9);
  }
  if (auto s = tpserve::ValidateCudaBackendOptions(config.cuda_options); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }
  return tpserve::Main(config);
}
