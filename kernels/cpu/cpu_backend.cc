// CPU tensor product. Per path p and a chunk of samples z (see plan.h for the formulas):
//   T[z][k][u*mul2+v] = sum_{(i,j,k) nonzero} C[i,j,k] x1[z,u,i] x2[z,v,j]      (built in a buffer)
//   'uvw' shared:  out_zk[w] += a * (T @ W)[zk][w]           one GEMM per chunk, M = chunk*(2l3+1)
//                  dW        += a * T^T @ G                   G[zk][w] = grad_out[z, w*(2l3+1)+k]
//                  dT         = a * G @ W^T, then dx1, dx2 by the 3j contraction
// Threads take whole paths (largest first), so each path's dW block has one writer; out, dx1 and
// dx2 are summed from per-thread accumulators.
#include "kernels/cpu/cpu_backend.h"

#include <openblas_config.h>
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tpserve {
namespace {

constexpr size_t kChunkBytes = size_t{2} << 20;  // T chunk size: stays in L2/L3

class CpuPreparedPlan final : public PreparedPlan {
 public:
  explicit CpuPreparedPlan(TensorProductPlan plan) : PreparedPlan(std::move(plan)) {
    // Largest paths first so that the last path a thread takes is a small one.
    for (size_t p = 0; p < this->plan().paths().size(); ++p) order.push_back(static_cast<int>(p));
    const auto& paths = this->plan().paths();
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return paths[a].weight_numel * paths[a].dim_out() > paths[b].weight_numel * paths[b].dim_out();
    });
  }
  std::vector<int> order;
};

class HostBuffer final : public BackendBuffer {
 public:
  explicit HostBuffer(size_t bytes) : bytes_(bytes), data_(std::aligned_alloc(64, RoundUp(bytes))) {}
  ~HostBuffer() override { std::free(data_); }
  void* data() const override { return data_; }
  size_t bytes() const override { return bytes_; }

 private:
  static size_t RoundUp(size_t bytes) { return std::max<size_t>(64, (bytes + 63) / 64 * 64); }
  size_t bytes_;
  void* data_;
};

template <typename T>
void Gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
          T* c, int ldc) {
  const auto ta = trans_a ? CblasTrans : CblasNoTrans;
  const auto tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

// What one pass over the paths computes.
template <typename T>
struct Job {
  const TensorProductPlan* plan;
  int64_t batch;
  const T* weight;
  const T* x1;
  const T* x2;
  const T* grad_out;  // null for a forward pass
  T* out;             // forward: accumulated result (per thread)
  T* grad_weight;     // optional
  bool accumulate_grad_weight;
  bool want_grad_x1, want_grad_x2;
};

// Per-thread scratch and accumulators.
template <typename T>
struct Worker {
  std::vector<T> x1t, x2t, t, tmp, g, dt, dx1t, dx2t;
  T* out = nullptr;      // [batch, dim_out]
  T* grad_x1 = nullptr;  // [batch, dim_in1]
  T* grad_x2 = nullptr;  // [batch, dim_in2]
  std::vector<T> own_out, own_grad_x1, own_grad_x2;
};

// One path over one chunk of samples [z0, z0 + nz): its shapes, and the steps RunPath takes on it.
// Scratch (x1t, x2t, t, ...) lives in the worker and is sized by RunPath for the largest chunk.
template <typename T>
struct PathChunk {
  PathChunk(const Job<T>& job_in, const PathPlan& path_in, Worker<T>& worker)
      : job(job_in), path(path_in), w(worker), d1(path.dim_in1()), d2(path.dim_in2()), d3(path.dim_out()),
        mul1(path.mul_in1), mul2(path.mul_in2), mul_out(path.mul_out), uv(int64_t{mul1} * mul2),
        per_sample(job.plan->weight_sharing() == WeightSharing::kPerSample), uvw(path.mode == ConnectionMode::kUvw),
        a(static_cast<T>(path.path_weight)), dim1(job.plan->dim_in1()), dim2(job.plan->dim_in2()),
        dim_out(job.plan->dim_out()), weight_stride(per_sample ? job.plan->weight_numel() : 0) {}

  const Job<T>& job;
  const PathPlan& path;
  Worker<T>& w;
  const int d1, d2, d3, mul1, mul2, mul_out;
  const int64_t uv;
  const bool per_sample, uvw;
  const T a;
  const int64_t dim1, dim2, dim_out, weight_stride;
  int64_t z0 = 0, nz = 0;

  const T* WeightOf(int64_t z) const { return job.weight + (z0 + z) * weight_stride + path.weight_offset; }

  // x1t[z][i][u], x2t[z][j][v]: channel index innermost, so the loops below run over it.
  void GatherInputs() {
    for (int64_t z = 0; z < nz; ++z) {
      const T* x1z = job.x1 + (z0 + z) * dim1 + path.offset_in1;
      const T* x2z = job.x2 + (z0 + z) * dim2 + path.offset_in2;
      for (int u = 0; u < mul1; ++u)
        for (int i = 0; i < d1; ++i) w.x1t[(z * d1 + i) * mul1 + u] = x1z[u * d1 + i];
      for (int v = 0; v < mul2; ++v)
        for (int j = 0; j < d2; ++j) w.x2t[(z * d2 + j) * mul2 + v] = x2z[v * d2 + j];
    }
  }

  // T[z][k][u][v] = sum_{ij} C[i,j,k] x1t[z][i][u] x2t[z][j][v]
  void BuildT() {
    std::fill_n(w.t.data(), nz * d3 * uv, T(0));
    for (int64_t z = 0; z < nz; ++z) {
      for (const Wigner3jEntry& e : path.cg_nonzeros) {
        const T c = static_cast<T>(e.value);
        const T* x1v = &w.x1t[(z * d1 + e.i) * mul1];
        const T* x2v = &w.x2t[(z * d2 + e.j) * mul2];
        T* tzk = &w.t[(z * d3 + e.k) * uv];
        for (int u = 0; u < mul1; ++u) {
          const T s = c * x1v[u];
          T* row = tzk + int64_t{u} * mul2;
          for (int v = 0; v < mul2; ++v) row[v] += s * x2v[v];
        }
      }
    }
  }

  // out[z, offset_out + w*d3 + k] += a * sum_uv T[z][k][u][v] W[u][v][w]   (uvu: W[u][v], w = u)
  void Forward() {
    if (uvw && !per_sample) {
      Gemm<T>(false, false, nz * d3, mul_out, uv, a, w.t.data(), uv, job.weight + path.weight_offset, mul_out, T(0),
              w.tmp.data(), mul_out);
    } else {
      for (int64_t z = 0; z < nz; ++z) {
        const T* wz = WeightOf(z);
        T* tmpz = &w.tmp[z * d3 * mul_out];
        if (uvw) {
          Gemm<T>(false, false, d3, mul_out, uv, a, &w.t[z * d3 * uv], uv, wz, mul_out, T(0), tmpz, mul_out);
        } else {  // uvu: tmp[z][k][u] = a * sum_v W[u][v] T[z][k][u][v]
          for (int k = 0; k < d3; ++k)
            for (int u = 0; u < mul1; ++u) {
              const T* trow = &w.t[((z * d3 + k) * mul1 + u) * mul2];
              T s = 0;
              for (int v = 0; v < mul2; ++v) s += wz[u * mul2 + v] * trow[v];
              tmpz[k * mul_out + u] = a * s;
            }
        }
      }
    }
    for (int64_t z = 0; z < nz; ++z) {
      T* outz = w.out + (z0 + z) * dim_out + path.offset_out;
      for (int k = 0; k < d3; ++k)
        for (int c = 0; c < mul_out; ++c) outz[c * d3 + k] += w.tmp[(z * d3 + k) * mul_out + c];
    }
  }

  // G[z][k][w] = grad_out[z, offset_out + w*d3 + k]
  void GatherGradOut() {
    for (int64_t z = 0; z < nz; ++z) {
      const T* gz = job.grad_out + (z0 + z) * dim_out + path.offset_out;
      for (int k = 0; k < d3; ++k)
        for (int c = 0; c < mul_out; ++c) w.g[(z * d3 + k) * mul_out + c] = gz[c * d3 + k];
    }
  }

  // dW[u][v][w] += a * sum_{z,k} T[z][k][u][v] G[z][k][w]   (uvu: dW[u][v] += a sum_k T[k][u][v] G[k][u])
  void WeightGradient() {
    if (uvw && !per_sample) {
      Gemm<T>(true, false, uv, mul_out, nz * d3, a, w.t.data(), uv, w.g.data(), mul_out, T(1),
              job.grad_weight + path.weight_offset, mul_out);
      return;
    }
    for (int64_t z = 0; z < nz; ++z) {
      T* dwz = job.grad_weight + (per_sample ? (z0 + z) * weight_stride : 0) + path.weight_offset;
      const T* tz = &w.t[z * d3 * uv];
      const T* gz = &w.g[z * d3 * mul_out];
      if (uvw) {
        Gemm<T>(true, false, uv, mul_out, d3, a, tz, uv, gz, mul_out, T(1), dwz, mul_out);
      } else {
        for (int k = 0; k < d3; ++k)
          for (int u = 0; u < mul1; ++u) {
            const T s = a * gz[k * mul_out + u];
            for (int v = 0; v < mul2; ++v) dwz[u * mul2 + v] += s * tz[(k * mul1 + u) * mul2 + v];
          }
      }
    }
  }

  // dT = a * G W^T, then dx1 and dx2 through the 3j nonzeros, scattered back to e3nn's layout.
  void InputGradients() {
    if (uvw && !per_sample) {
      Gemm<T>(false, true, nz * d3, uv, mul_out, a, w.g.data(), mul_out, job.weight + path.weight_offset, mul_out,
              T(0), w.dt.data(), uv);
    } else {
      for (int64_t z = 0; z < nz; ++z) {
        const T* wz = WeightOf(z);
        const T* gz = &w.g[z * d3 * mul_out];
        T* dtz = &w.dt[z * d3 * uv];
        if (uvw) {
          Gemm<T>(false, true, d3, uv, mul_out, a, gz, mul_out, wz, mul_out, T(0), dtz, uv);
        } else {
          for (int k = 0; k < d3; ++k)
            for (int u = 0; u < mul1; ++u) {
              const T s = a * gz[k * mul_out + u];
              for (int v = 0; v < mul2; ++v) dtz[(k * mul1 + u) * mul2 + v] = s * wz[u * mul2 + v];
            }
        }
      }
    }
    std::fill_n(w.dx1t.data(), nz * d1 * mul1, T(0));
    std::fill_n(w.dx2t.data(), nz * d2 * mul2, T(0));
    for (int64_t z = 0; z < nz; ++z) {
      for (const Wigner3jEntry& e : path.cg_nonzeros) {
        const T c = static_cast<T>(e.value);
        const T* x1v = &w.x1t[(z * d1 + e.i) * mul1];
        const T* x2v = &w.x2t[(z * d2 + e.j) * mul2];
        T* dx1v = &w.dx1t[(z * d1 + e.i) * mul1];
        T* dx2v = &w.dx2t[(z * d2 + e.j) * mul2];
        const T* dtzk = &w.dt[(z * d3 + e.k) * uv];
        for (int u = 0; u < mul1; ++u) {
          const T* row = dtzk + int64_t{u} * mul2;
          T dot = 0;
          const T s = c * x1v[u];
          for (int v = 0; v < mul2; ++v) {
            dot += row[v] * x2v[v];
            dx2v[v] += s * row[v];
          }
          dx1v[u] += c * dot;
        }
      }
    }
    for (int64_t z = 0; z < nz; ++z) {
      if (job.want_grad_x1) {
        T* dx1z = w.grad_x1 + (z0 + z) * dim1 + path.offset_in1;
        for (int u = 0; u < mul1; ++u)
          for (int i = 0; i < d1; ++i) dx1z[u * d1 + i] += w.dx1t[(z * d1 + i) * mul1 + u];
      }
      if (job.want_grad_x2) {
        T* dx2z = w.grad_x2 + (z0 + z) * dim2 + path.offset_in2;
        for (int v = 0; v < mul2; ++v)
          for (int j = 0; j < d2; ++j) dx2z[v * d2 + j] += w.dx2t[(z * d2 + j) * mul2 + v];
      }
    }
  }
};

// One path of a forward or backward pass, in chunks of samples that keep T in cache.
template <typename T>
void RunPath(const Job<T>& job, const PathPlan& path, Worker<T>& w) {
  PathChunk<T> c(job, path, w);
  const bool backward = job.grad_out != nullptr;
  const bool want_dx = backward && (job.want_grad_x1 || job.want_grad_x2);
  if (job.grad_weight && !job.accumulate_grad_weight) {
    for (int64_t z = 0; z < (c.per_sample ? job.batch : 1); ++z)
      std::fill_n(job.grad_weight + z * c.weight_stride + path.weight_offset, path.weight_numel, T(0));
  }
  if (c.uv == 0 || c.mul_out == 0 || job.batch == 0) return;  // nothing flows through an empty path

  const int64_t row_bytes = int64_t{c.d3} * c.uv * sizeof(T);
  const int64_t chunk = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(row_bytes, 1), 1, job.batch);
  w.x1t.resize(chunk * c.d1 * c.mul1);
  w.x2t.resize(chunk * c.d2 * c.mul2);
  w.t.resize(chunk * c.d3 * c.uv);
  w.tmp.resize(chunk * c.d3 * c.mul_out);
  if (backward) w.g.resize(chunk * c.d3 * c.mul_out);
  if (want_dx) {
    w.dt.resize(chunk * c.d3 * c.uv);
    w.dx1t.resize(chunk * c.d1 * c.mul1);
    w.dx2t.resize(chunk * c.d2 * c.mul2);
  }
  for (c.z0 = 0; c.z0 < job.batch; c.z0 += chunk) {
    c.nz = std::min(chunk, job.batch - c.z0);
    c.GatherInputs();
    c.BuildT();
    if (!backward) {
      c.Forward();
      continue;
    }
    c.GatherGradOut();
    if (job.grad_weight) c.WeightGradient();
    if (want_dx) c.InputGradients();
  }
}

// Runs every path of the plan on `num_threads` threads. Thread 0 accumulates straight into the
// caller's out / grad_x1 / grad_x2; the others into zeroed buffers of their own, summed at the end.
template <typename T>
void RunPaths(const CpuPreparedPlan& prepared, const Job<T>& job, T* out, T* grad_x1, T* grad_x2, int num_threads) {
  const TensorProductPlan& plan = prepared.plan();
  const int64_t out_numel = job.batch * plan.dim_out();
  const int64_t x1_numel = job.batch * plan.dim_in1();
  const int64_t x2_numel = job.batch * plan.dim_in2();
  if (out) std::fill_n(out, out_numel, T(0));
  if (grad_x1) std::fill_n(grad_x1, x1_numel, T(0));
  if (grad_x2) std::fill_n(grad_x2, x2_numel, T(0));
  const int threads = std::max(1, std::min<int>(num_threads, static_cast<int>(plan.paths().size())));
  std::vector<Worker<T>> workers(threads);
  for (int t = 0; t < threads; ++t) {
    Worker<T>& w = workers[t];
    auto own = [&](T* caller, std::vector<T>& storage, int64_t numel) -> T* {
      if (caller == nullptr) return nullptr;
      if (t == 0) return caller;
      storage.assign(numel, T(0));
      return storage.data();
    };
    w.out = own(out, w.own_out, out_numel);
    w.grad_x1 = own(grad_x1, w.own_grad_x1, x1_numel);
    w.grad_x2 = own(grad_x2, w.own_grad_x2, x2_numel);
  }
  std::atomic<size_t> next{0};
  auto work = [&](int t) {
    for (size_t n = next.fetch_add(1); n < prepared.order.size(); n = next.fetch_add(1)) {
      RunPath(job, plan.paths()[prepared.order[n]], workers[t]);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (std::thread& thread : pool) thread.join();
  for (int t = 1; t < threads; ++t) {
    const Worker<T>& w = workers[t];
    if (out) for (int64_t n = 0; n < out_numel; ++n) out[n] += w.own_out[n];
    if (grad_x1) for (int64_t n = 0; n < x1_numel; ++n) grad_x1[n] += w.own_grad_x1[n];
    if (grad_x2) for (int64_t n = 0; n < x2_numel; ++n) grad_x2[n] += w.own_grad_x2[n];
  }
}

template <typename T>
void ForwardTyped(const CpuPreparedPlan& prepared, const ConstTensorView& weight, const ConstTensorView& x1,
                  const ConstTensorView& x2, T* out, int num_threads) {
  Job<T> job{&prepared.plan(), x1.shape[0], weight.typed<T>(), x1.typed<T>(), x2.typed<T>(), nullptr, out,
             nullptr, false, false, false};
  RunPaths<T>(prepared, job, out, nullptr, nullptr, num_threads);
}

template <typename T>
void BackwardTyped(const CpuPreparedPlan& prepared, const ConstTensorView& weight, const ConstTensorView& x1,
                   const ConstTensorView& x2, const T* grad_out, const GradientOutputs& grads, int num_threads) {
  T* grad_weight = grads.grad_weight.typed<T>();
  Job<T> job{&prepared.plan(), x1.shape[0], weight.typed<T>(), x1.typed<T>(), x2.typed<T>(), grad_out, nullptr,
             grad_weight, grads.accumulate_grad_weight, grads.grad_x1.present(), grads.grad_x2.present()};
  RunPaths<T>(prepared, job, nullptr, grads.grad_x1.typed<T>(), grads.grad_x2.typed<T>(), num_threads);
}

template <typename T>
void LossGradientTyped(const CpuPreparedPlan& prepared, Loss loss, const ConstTensorView& weight,
                       const ConstTensorView& x1, const ConstTensorView& x2, T* out_or_null,
                       const GradientOutputs& grads, int num_threads) {
  const int64_t numel = x1.shape[0] * prepared.plan().dim_out();
  std::vector<T> grad_out(numel);
  if (loss == Loss::kSum) {
    std::fill(grad_out.begin(), grad_out.end(), T(1));
    if (out_or_null) ForwardTyped<T>(prepared, weight, x1, x2, out_or_null, num_threads);
  } else {
    std::vector<T> own_out;
    T* out = out_or_null;
    if (out == nullptr) {
      own_out.resize(numel);
      out = own_out.data();
    }
    ForwardTyped<T>(prepared, weight, x1, x2, out, num_threads);
    for (int64_t n = 0; n < numel; ++n) {
      const T t = std::tanh(out[n]);
      grad_out[n] = T(1) - t * t;
    }
  }
  BackwardTyped<T>(prepared, weight, x1, x2, grad_out.data(), grads, num_threads);
}

absl::StatusOr<const CpuPreparedPlan*> AsCpuPlan(const PreparedPlan& plan) {
  const auto* cpu = dynamic_cast<const CpuPreparedPlan*>(&plan);
  if (cpu == nullptr) return absl::InvalidArgumentError("prepared plan: expected one made by the CPU backend");
  return cpu;
}

}  // namespace

CpuBackend::CpuBackend(CpuBackendOptions options)
    : num_threads_(options.num_threads > 0 ? options.num_threads
                                           : std::max(1u, std::thread::hardware_concurrency())),
      name_(std::move(options.name)) {
  // Our threads own whole paths; nested BLAS threads would only oversubscribe the cores.
  openblas_set_num_threads(1);
}

CpuBackend::~CpuBackend() = default;

absl::StatusOr<std::unique_ptr<PreparedPlan>> CpuBackend::Prepare(const TensorProductPlan& plan) {
  return std::unique_ptr<PreparedPlan>(std::make_unique<CpuPreparedPlan>(plan));
}

absl::Status CpuBackend::Forward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                 ConstTensorView x2, TensorView out, const ExecutionContext&) {
  ASSIGN_OR_RETURN(const CpuPreparedPlan* cpu, AsCpuPlan(plan));
  RETURN_IF_ERROR(ValidateForward(plan.plan(), weight, x1, x2, out));
  if (x1.dtype == DType::kFloat32) {
    ForwardTyped<float>(*cpu, weight, x1, x2, out.typed<float>(), num_threads_);
  } else {
    ForwardTyped<double>(*cpu, weight, x1, x2, out.typed<double>(), num_threads_);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Backward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                  ConstTensorView x2, ConstTensorView grad_out, const GradientOutputs& grads,
                                  const ExecutionContext&) {
  ASSIGN_OR_RETURN(const CpuPreparedPlan* cpu, AsCpuPlan(plan));
  RETURN_IF_ERROR(ValidateGradients(plan.plan(), weight, x1, x2, grads));
  RETURN_IF_ERROR(CheckTensor(grad_out, "grad_out", x1.dtype, {x1.shape[0], plan.plan().dim_out()}));
  if (x1.dtype == DType::kFloat32) {
    BackwardTyped<float>(*cpu, weight, x1, x2, grad_out.typed<float>(), grads, num_threads_);
  } else {
    BackwardTyped<double>(*cpu, weight, x1, x2, grad_out.typed<double>(), grads, num_threads_);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::LossGradient(const PreparedPlan& plan, Loss loss, ConstTensorView weight,
                                      ConstTensorView x1, ConstTensorView x2, TensorView out,
                                      const GradientOutputs& grads, const ExecutionContext&) {
  ASSIGN_OR_RETURN(const CpuPreparedPlan* cpu, AsCpuPlan(plan));
  RETURN_IF_ERROR(ValidateGradients(plan.plan(), weight, x1, x2, grads));
  if (out.present()) RETURN_IF_ERROR(CheckTensor(out, "out", x1.dtype, {x1.shape[0], plan.plan().dim_out()}));
  if (x1.dtype == DType::kFloat32) {
    LossGradientTyped<float>(*cpu, loss, weight, x1, x2, out.typed<float>(), grads, num_threads_);
  } else {
    LossGradientTyped<double>(*cpu, loss, weight, x1, x2, out.typed<double>(), grads, num_threads_);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BackendBuffer>> CpuBackend::Allocate(size_t bytes) {
  auto buffer = std::make_unique<HostBuffer>(bytes);
  if (buffer->data() == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cpu: could not allocate ", bytes, " bytes"));
  }
  return std::unique_ptr<BackendBuffer>(std::move(buffer));
}

// The CPU backend's memory is host memory already.
absl::StatusOr<std::unique_ptr<BackendBuffer>> CpuBackend::AllocateHost(size_t bytes) { return Allocate(bytes); }

absl::Status CpuBackend::CopyFromHost(void* dst, const void* host_src, size_t bytes, const ExecutionContext&) {
  std::memcpy(dst, host_src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* host_dst, const void* src, size_t bytes, const ExecutionContext&) {
  std::memcpy(host_dst, src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyFromPeer(void* dst, const Backend& from, const void* src, size_t bytes,
                                      const ExecutionContext&) {
  if (from.memory_space() != MemorySpace::kHost) {
    return absl::UnimplementedError(absl::StrCat(name_, ": no direct copy from ", from.name(), "'s memory"));
  }
  std::memcpy(dst, src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::AddScaled(float* y, const float* x, int64_t n, float alpha, const ExecutionContext&) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
  return absl::OkStatus();
}

absl::Status CpuBackend::FillZero(void* dst, size_t bytes, const ExecutionContext&) {
  std::memset(dst, 0, bytes);
  return absl::OkStatus();
}

}  // namespace tpserve
