// tp-bench --qm9_edge (see qm9_edge_bench.h). Per case (lmax, mul, E edges): the convolution's edge
// TP with x1 = node features of the edge's source ([E, dim1], already gathered), x2 = spherical
// harmonics ([E, dim2]), weights [E, weight_numel]. Tasks:
//   edge_forward    out = TP(w, x1, x2)                 bytes 4E (dim1 + dim2 + wn + dim_out)
//   edge_backward   dW, dx1, dx2 from grad_out          bytes 4E (dim1 + dim2 + wn + dim_out) read
//                                                             + 4E (wn + dim1 + dim2) written
//   edge_forward_fused / edge_backward_fused: the same with the gather of x1 = h[src] and the
//                   scatter-sum to dst fused in (Backend::EdgeForward / EdgeBackward), N nodes
//                   (N = E * 486 / 950, the batch of 27 molecules): x1, out, grad_out and
//                   dx1 have N rows instead of E in the byte counts.
// floor = bytes / 3.0 TB/s (H100 copy bandwidth, GPU.md). Inputs rotate among sets so that the
// timed working set exceeds twice the 50 MB L2. Verified in full against the float64 CPU backend.
#include "kernels/cuda/bench/qm9_edge_bench.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/core/backend.h"
#include "kernels/core/plan.h"
#include "kernels/core/qm9_edge_plan.h"
#include "kernels/cuda/bench/bench_check.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace tpserve {
namespace {

constexpr double kMemoryBytesPerSecond = 3.0e12;
constexpr double kTolerance = 1e-5;

// The QM9 edge TP's plan (kernels/core/qm9_edge_plan.h); a failure ends the run.
TensorProductPlan Qm9EdgePlan(int lmax, int mul) {
  absl::StatusOr<TensorProductPlan> plan = MakeQm9EdgePlan(lmax, mul);
  CHECK_OK(plan.status());
  return *std::move(plan);
}

std::vector<float> RandomFloats(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

double RelError(const std::vector<float>& got, const std::vector<double>& want) {
  double d = 0, r = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    d += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    r += want[i] * want[i];
  }
  return std::sqrt(d) / std::max(std::sqrt(r), 1e-300);
}

// A float32 device array (through the backend).
struct DeviceArray {
  std::unique_ptr<BackendBuffer> buffer;
  std::vector<int64_t> shape;
  DeviceArray(Backend& backend, std::vector<int64_t> s) : shape(std::move(s)) {
    auto b = backend.Allocate(sizeof(float) * std::max<int64_t>(numel(), 1));
    CHECK_OK(b.status());
    buffer = std::move(b).value();
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  TensorView view() const { return {buffer->data(), DType::kFloat32, shape}; }
  ConstTensorView cview() const { return AsConst(view()); }
  void Upload(Backend& backend, const std::vector<float>& v) {
    CHECK_OK(backend.CopyFromHost(buffer->data(), v.data(), v.size() * sizeof(float), {}));
  }
  std::vector<float> Download(Backend& backend) const {
    std::vector<float> v(numel());
    CHECK_OK(backend.CopyToHost(v.data(), buffer->data(), v.size() * sizeof(float), {}));
    CHECK_OK(backend.Synchronize({}));
    return v;
  }
};

struct Timing {
  double median_ms, min_ms;
};

Timing TimeOnStream(const std::function<void(int)>& fn, int warmup, int runs, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<cudaEvent_t> events(2 * runs);
  for (auto& e : events) cudaEventCreate(&e);
  for (int i = 0; i < runs; ++i) {
    cudaEventRecord(events[2 * i], stream);
    fn(i);
    cudaEventRecord(events[2 * i + 1], stream);
  }
  cudaStreamSynchronize(stream);
  std::vector<double> ms(runs);
  for (int i = 0; i < runs; ++i) {
    float t = 0;
    cudaEventElapsedTime(&t, events[2 * i], events[2 * i + 1]);
    ms[i] = t;
  }
  for (auto& e : events) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[0]};
}

struct Row {
  std::string task;
  int lmax, mul;
  int64_t edges;
  Timing t;
  double bytes, rel_error;
};

void PrintRow(const Row& r) {
  const double floor_ms = r.bytes / kMemoryBytesPerSecond * 1e3;
  std::printf("%-14s lmax %d mul %3d E %5lld  %9.4f ms (min %9.4f)  %7.1f MB  %6.0f GB/s  floor %8.4f ms  %5.2fx  "
              "err %.2e%s\n",
              r.task.c_str(), r.lmax, r.mul, static_cast<long long>(r.edges), r.t.median_ms, r.t.min_ms,
              r.bytes * 1e-6, r.bytes / (r.t.median_ms * 1e-3) * 1e-9, floor_ms, r.t.median_ms / floor_ms,
              r.rel_error, r.rel_error <= kTolerance ? "" : " FAILED");
  std::fflush(stdout);
}

// float64 CPU reference of forward and backward on the float32 inputs.
struct Reference {
  std::vector<double> out, dw, dx1, dx2;
};

Reference CpuReference(const TensorProductPlan& plan, int64_t e, const std::vector<float>& w,
                       const std::vector<float>& x1, const std::vector<float>& x2, const std::vector<float>& g) {
  CpuBackend cpu;
  auto prepared = cpu.Prepare(plan);
  CHECK_OK(prepared.status());
  std::vector<double> wd(w.begin(), w.end()), x1d(x1.begin(), x1.end()), x2d(x2.begin(), x2.end()),
      gd(g.begin(), g.end());
  Reference ref;
  ref.out.resize(e * plan.dim_out());
  ref.dw.resize(w.size());
  ref.dx1.resize(x1.size());
  ref.dx2.resize(x2.size());
  const std::vector<int64_t> ws = {e, plan.weight_numel()}, x1s = {e, plan.dim_in1()}, x2s = {e, plan.dim_in2()},
                             os = {e, plan.dim_out()};
  auto c = [](const std::vector<double>& v, std::vector<int64_t> s) {
    return ConstTensorView{v.data(), DType::kFloat64, std::move(s)};
  };
  auto m = [](std::vector<double>& v, std::vector<int64_t> s) { return TensorView{v.data(), DType::kFloat64, std::move(s)}; };
  CHECK_OK(cpu.Forward(**prepared, c(wd, ws), c(x1d, x1s), c(x2d, x2s), m(ref.out, os), {}));
  CHECK_OK(cpu.Backward(**prepared, c(wd, ws), c(x1d, x1s), c(x2d, x2s), c(gd, os),
                         GradientOutputs{m(ref.dw, ws), m(ref.dx1, x1s), m(ref.dx2, x2s)}, {}));
  return ref;
}

// One input set on the device.
struct InputSet {
  DeviceArray w, x1, x2, g;
  InputSet(Backend& b, const TensorProductPlan& plan, int64_t e)
      : w(b, {e, plan.weight_numel()}), x1(b, {e, plan.dim_in1()}), x2(b, {e, plan.dim_in2()}),
        g(b, {e, plan.dim_out()}) {}
};

// Verifies and times one (lmax, mul) case; appends its rows.
void RunCase(Backend& cuda, const Qm9EdgeBenchConfig& config, int lmax, int mul, cudaStream_t stream,
             std::vector<Row>* rows) {
  const TensorProductPlan plan = Qm9EdgePlan(lmax, mul);
  const int64_t e = config.edges, d1 = plan.dim_in1(), d2 = plan.dim_in2(), dout = plan.dim_out(),
                wn = plan.weight_numel();
  auto prepared = cuda.Prepare(plan);
  CHECK_OK(prepared.status());
  const double set_bytes = 4.0 * e * (d1 + d2 + wn + dout);
  const int sets = static_cast<int>(std::clamp(std::ceil(128e6 / set_bytes), 1.0, 8.0));
  std::mt19937_64 rng(1000 * lmax + mul);
  std::vector<std::unique_ptr<InputSet>> in;
  std::vector<float> w0, x10, x20, g0;
  for (int s = 0; s < sets; ++s) {
    in.push_back(std::make_unique<InputSet>(cuda, plan, e));
    std::vector<float> w = RandomFloats(e * wn, rng), x1 = RandomFloats(e * d1, rng), x2 = RandomFloats(e * d2, rng),
                       g = RandomFloats(e * dout, rng);
    in.back()->w.Upload(cuda, w);
    in.back()->x1.Upload(cuda, x1);
    in.back()->x2.Upload(cuda, x2);
    in.back()->g.Upload(cuda, g);
    if (s == 0) w0 = w, x10 = x1, x20 = x2, g0 = g;
  }
  const Reference ref = CpuReference(plan, e, w0, x10, x20, g0);
  DeviceArray out(cuda, {e, dout}), dw(cuda, {e, wn}), dx1(cuda, {e, d1}), dx2(cuda, {e, d2});
  ExecutionContext ctx;
  ctx.stream = stream;
  auto forward = [&](int i) {
    const InputSet& s = *in[i % sets];
    CHECK_OK(cuda.Forward(**prepared, s.w.cview(), s.x1.cview(), s.x2.cview(), out.view(), ctx));
  };
  auto backward = [&](int i) {
    const InputSet& s = *in[i % sets];
    CHECK_OK(cuda.Backward(**prepared, s.w.cview(), s.x1.cview(), s.x2.cview(), s.g.cview(),
                            GradientOutputs{dw.view(), dx1.view(), dx2.view()}, ctx));
  };
  forward(0);
  CHECK_OK(cuda.Synchronize(ctx));
  const double fwd_err = RelError(out.Download(cuda), ref.out);
  backward(0);
  CHECK_OK(cuda.Synchronize(ctx));
  const double bwd_err = std::max({RelError(dw.Download(cuda), ref.dw), RelError(dx1.Download(cuda), ref.dx1),
                                   RelError(dx2.Download(cuda), ref.dx2)});
  const double read = 4.0 * e * (d1 + d2 + wn + dout), written_back = 4.0 * e * (wn + d1 + d2);
  rows->push_back({"edge_forward", lmax, mul, e, TimeOnStream(forward, config.warmup, config.runs, stream), read,
                   fwd_err});
  PrintRow(rows->back());
  rows->push_back({"edge_backward", lmax, mul, e, TimeOnStream(backward, config.warmup, config.runs, stream),
                   read + written_back, bwd_err});
  PrintRow(rows->back());
}

// The fused gather / scatter (EdgeForward / EdgeBackward) on a random graph of N nodes.
void RunFusedCase(Backend& cuda, const Qm9EdgeBenchConfig& config, int lmax, int mul, cudaStream_t stream,
                  std::vector<Row>* rows) {
  const TensorProductPlan plan = Qm9EdgePlan(lmax, mul);
  const int64_t e = config.edges, n = std::max<int64_t>(1, e * 486 / 950), d1 = plan.dim_in1(),
                d2 = plan.dim_in2(), dout = plan.dim_out(), wn = plan.weight_numel();
  auto prepared = cuda.Prepare(plan);
  CHECK_OK(prepared.status());
  std::mt19937_64 rng(7000 + 1000 * lmax + mul);
  std::vector<int32_t> src(e), dst(e);
  for (int64_t k = 0; k < e; ++k) {
    src[k] = static_cast<int32_t>(rng() % n);
    dst[k] = static_cast<int32_t>(rng() % n);
  }
  const std::vector<float> w = RandomFloats(e * wn, rng), x1 = RandomFloats(n * d1, rng),
                           x2 = RandomFloats(e * d2, rng), g = RandomFloats(n * dout, rng);
  // float64 CPU reference (the host default of EdgeForward / EdgeBackward).
  CpuBackend cpu;
  auto cpu_plan = cpu.Prepare(plan);
  CHECK_OK(cpu_plan.status());
  std::vector<double> wd(w.begin(), w.end()), x1d(x1.begin(), x1.end()), x2d(x2.begin(), x2.end()),
      gd(g.begin(), g.end()), ref_out(n * dout), ref_dw(w.size()), ref_dx1(x1.size()), ref_dx2(x2.size());
  auto c = [](const std::vector<double>& v, std::vector<int64_t> s) {
    return ConstTensorView{v.data(), DType::kFloat64, std::move(s)};
  };
  auto m = [](std::vector<double>& v, std::vector<int64_t> s) { return TensorView{v.data(), DType::kFloat64, std::move(s)}; };
  const EdgeIndex host_edges{src.data(), dst.data(), e};
  CHECK_OK(cpu.EdgeForward(**cpu_plan, c(wd, {e, wn}), c(x1d, {n, d1}), c(x2d, {e, d2}), host_edges,
                            m(ref_out, {n, dout}), {}));
  CHECK_OK(cpu.EdgeBackward(**cpu_plan, c(wd, {e, wn}), c(x1d, {n, d1}), c(x2d, {e, d2}), host_edges, c(gd, {n, dout}),
                             GradientOutputs{m(ref_dw, {e, wn}), m(ref_dx1, {n, d1}), m(ref_dx2, {e, d2})}, {}));

  DeviceArray d_w(cuda, {e, wn}), d_x1(cuda, {n, d1}), d_x2(cuda, {e, d2}), d_g(cuda, {n, dout}),
      d_out(cuda, {n, dout}), d_dw(cuda, {e, wn}), d_dx1(cuda, {n, d1}), d_dx2(cuda, {e, d2}), d_src(cuda, {e}),
      d_dst(cuda, {e});
  d_w.Upload(cuda, w);
  d_x1.Upload(cuda, x1);
  d_x2.Upload(cuda, x2);
  d_g.Upload(cuda, g);
  CHECK_OK(cuda.CopyFromHost(d_src.buffer->data(), src.data(), src.size() * sizeof(int32_t), {}));
  CHECK_OK(cuda.CopyFromHost(d_dst.buffer->data(), dst.data(), dst.size() * sizeof(int32_t), {}));
  const EdgeIndex edges{static_cast<const int32_t*>(d_src.buffer->data()),
                        static_cast<const int32_t*>(d_dst.buffer->data()), e};
  ExecutionContext ctx;
  ctx.stream = stream;
  auto forward = [&](int) {
    CHECK_OK(cuda.EdgeForward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), edges, d_out.view(), ctx));
  };
  auto backward = [&](int) {
    CHECK_OK(cuda.EdgeBackward(**prepared, d_w.cview(), d_x1.cview(), d_x2.cview(), edges, d_g.cview(),
                                GradientOutputs{d_dw.view(), d_dx1.view(), d_dx2.view()}, ctx));
  };
  forward(0);
  CHECK_OK(cuda.Synchronize(ctx));
  const double fwd_err = RelError(d_out.Download(cuda), ref_out);
  backward(0);
  CHECK_OK(cuda.Synchronize(ctx));
  const double bwd_err = std::max({RelError(d_dw.Download(cuda), ref_dw), RelError(d_dx1.Download(cuda), ref_dx1),
                                   RelError(d_dx2.Download(cuda), ref_dx2)});
  const double read = 4.0 * (n * d1 + e * d2 + e * wn + n * dout), written_back = 4.0 * (e * wn + n * d1 + e * d2);
  rows->push_back({"edge_fwd_fused", lmax, mul, e, TimeOnStream(forward, config.warmup, config.runs, stream), read,
                   fwd_err});
  PrintRow(rows->back());
  rows->push_back({"edge_bwd_fused", lmax, mul, e, TimeOnStream(backward, config.warmup, config.runs, stream),
                   read + written_back, bwd_err});
  PrintRow(rows->back());
}

void WriteJson(const std::string& path, const std::vector<Row>& rows) {
  std::ofstream f(path);
  f << "{\n  \"results\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const double floor_ms = r.bytes / kMemoryBytesPerSecond * 1e3;
    f << absl::StrFormat(
        "    {\"task\": \"%s\", \"backend\": \"cuda\", \"precision\": \"fp32\", \"lmax\": %d, \"mul\": %d, "
        "\"batch\": %d, \"median_ms\": %.6f, \"min_ms\": %.6f, \"bytes\": %.6g, \"gbps\": %.1f, \"floor_ms\": %.6f, "
        "\"ratio_to_floor\": %.3f, \"rel_error\": %.3e}%s\n",
        r.task, r.lmax, r.mul, r.edges, r.t.median_ms, r.t.min_ms, r.bytes, r.bytes / (r.t.median_ms * 1e-3) * 1e-9,
        floor_ms, r.t.median_ms / floor_ms, r.rel_error, i + 1 < rows.size() ? "," : "");
  }
  f << "  ]\n}\n";
}

}  // namespace

int RunQm9EdgeBench(const Qm9EdgeBenchConfig& config) {
  if (CudaBackend::DeviceCount() == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 2;
  }
  auto cuda = CudaBackend::Create(0);
  CHECK_OK(cuda.status());
  cudaStream_t stream = nullptr;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  std::printf("QM9 edge TP (per-edge 'uvu' weights), fp32 CUDA cores; floor = bytes / %.1f TB/s\n",
              kMemoryBytesPerSecond * 1e-12);
  std::vector<Row> rows;
  for (int lmax : config.lmaxes)
    for (int mul : config.muls) {
      RunCase(**cuda, config, lmax, mul, stream, &rows);
      RunFusedCase(**cuda, config, lmax, mul, stream, &rows);
    }
  cudaStreamDestroy(stream);
  if (!config.json_path.empty()) {
    WriteJson(config.json_path, rows);
    std::printf("wrote %s\n", config.json_path.c_str());
  }
  for (const Row& r : rows) {
    if (!(r.rel_error <= kTolerance)) {
      std::fprintf(stderr, "VERIFICATION FAILED (rows marked FAILED)\n");
      return 1;
    }
  }
  return 0;
}

}  // namespace tpserve
