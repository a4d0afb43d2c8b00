// Host side of the CUDA backend: plan upload, tile work lists, launches. Kernels: tp_gemm.cu,
// tp_weight_grad.cu, loss_grad.cu (through the launch interface in tp_kernels.h).
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/tp_kernels.h"

namespace tpserve {
namespace {

using cuda::MmaPrecision;
using cuda::NzEntry;
using cuda::TileShape;
using cuda::TpGemmPath;
using cuda::TpGemmWork;
using cuda::WeightGradPath;
using cuda::WeightGradWork;

cudaStream_t StreamOf(const ExecutionContext& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

MmaPrecision ToMmaPrecision(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return MmaPrecision::k3xTf32;
    case Precision::kTf32: return MmaPrecision::kTf32;
    case Precision::kBf16: return MmaPrecision::kBf16;
  }
  return MmaPrecision::k3xTf32;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Device memory owned by one object; freed (after the device is idle for it) on destruction.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  absl::Status Allocate(size_t bytes) {
    CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, std::max<size_t>(bytes, 1)));
    bytes_ = bytes;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Upload(const std::vector<T>& values) {
    RETURN_IF_ERROR(Allocate(values.size() * sizeof(T)));
    if (!values.empty()) {
      CUDA_RETURN_IF_ERROR(cudaMemcpy(ptr_, values.data(), bytes_, cudaMemcpyHostToDevice));
      // From pageable memory, cudaMemcpy returns once the bytes are staged, before the DMA lands, and
      // it runs on the legacy stream, which the callers' non-blocking streams do not wait for: a
      // kernel launched right after (a work list built for a new batch size) could read the tables
      // half written. Seen as cudaErrorIllegalAddress under load in tpserve; wait for the copy.
      CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(cudaStreamLegacy));
    }
    return absl::OkStatus();
  }
  template <typename T>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (cudaHostAlloc): the DMA engines read and write it directly.
class PinnedHostBuffer final : public BackendBuffer {
 public:
  PinnedHostBuffer(void* ptr, size_t bytes) : ptr_(ptr), bytes_(bytes) {}
  ~PinnedHostBuffer() override { cudaFreeHost(ptr_); }
  void* data() const override { return ptr_; }
  size_t bytes() const override { return bytes_; }

 private:
  void* ptr_;
  size_t bytes_;
};

class CudaBuffer final : public BackendBuffer {
 public:
  CudaBuffer(int device, void* ptr, size_t bytes) : device_(device), ptr_(ptr), bytes_(bytes) {}
  ~CudaBuffer() override {
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device_);
    cudaFree(ptr_);
    cudaSetDevice(previous);
  }
  void* data() const override { return ptr_; }
  size_t bytes() const override { return bytes_; }

 private:
  int device_;
  void* ptr_;
  size_t bytes_;
};

// 3j nonzeros of every path grouped by one of its three indices (the role's r), with offsets.
struct NzTable {
  std::vector<NzEntry> entries;
  std::vector<int> roff;  // per path: R + 1 offsets
  std::vector<int> path_roff_begin;
};

// which = 0: r = k (forward, weight grad; s = i, t = j); 1: r = i (grad_x1; s = j, t = k);
// 2: r = j (grad_x2; s = i, t = k).
NzTable BuildNzTable(const std::vector<PathPlan>& paths, int which) {
  NzTable table;
  for (const PathPlan& path : paths) {
    const int R = which == 0 ? path.dim_out() : which == 1 ? path.dim_in1() : path.dim_in2();
    table.path_roff_begin.push_back(static_cast<int>(table.roff.size()));
    for (int r = 0; r < R; ++r) {
      table.roff.push_back(static_cast<int>(table.entries.size()));
      for (const Wigner3jEntry& e : path.cg_nonzeros) {
        const int er = which == 0 ? e.k : which == 1 ? e.i : e.j;
        if (er != r) continue;
        NzEntry nz;
        nz.s = static_cast<int16_t>(which == 1 ? e.j : e.i);
        nz.t = static_cast<int16_t>(which == 0 ? e.j : e.k);
        nz.c = static_cast<float>(e.value);
        table.entries.push_back(nz);
      }
    }
    table.roff.push_back(static_cast<int>(table.entries.size()));
  }
  return table;
}

// Device tiles of one launch for one batch size.
struct WorkList {
  DeviceMemory items;
  int count = 0;
  bool split_k = false;
  int max_t_ldq = 0;  // factored forward: the largest T * (Q + 4) (sizes its shared memory)
  int max_t_q = 0;    // the same for the wgmma kernel: the largest T * Q
};

// One forward-shaped role (forward, grad_x1 or grad_x2) of a plan, on the device.
struct GemmRole {
  std::vector<TpGemmPath> paths;
  DeviceMemory paths_dev, nz_dev, roff_dev;
  TileShape shape = TileShape::kWide;
};

class CudaPreparedPlan final : public PreparedPlan {
 public:
  explicit CudaPreparedPlan(const TensorProductPlan& plan) : PreparedPlan(plan) {}

  GemmRole roles[3];  // forward, grad_x1, grad_x2
  std::vector<WeightGradPath> wg_paths;
  DeviceMemory wg_paths_dev;
  DeviceMemory ir_mul_col;  // column map of g into the weight gradient's layout (loss_grad.cu)
  TileShape wg_shape = TileShape::kWide;
  int num_sms = 132;
  // Forward paths that run in the factored kernel (tp_forward_factored.cu) in 3xTF32 and TF32;
  // the others, and all of them in bf16, run in tp_gemm.cu.
  std::vector<bool> factored;
  bool any_factored = false;
  bool factored_three_tf32 = false;  // fp32 as three TF32 MMAs (forward_kernel factored-3xtf32)
  int factored_blocks_per_sm = 0;    // factored forward work split; 0: chosen per batch (BuildFactoredWork)
  int factored_warp_cols = 32;       // output columns per warp (options: 16 for comparisons)
  // The factored paths on wgmma (tp_forward_wgmma.cu) where the device is an sm_90 and the plan fits;
  // the option forward_kernel=factored-mma (or factored-3xtf32) keeps the mma.sync kernel.
  bool factored_wgmma = false;

  // Work lists per (kind, batch); kind 0..2 = roles (all paths), 3 = weight gradient, 4 = factored
  // forward, 5 = the forward role without the factored paths. Shared, because the cache may drop a
  // list (past 256 of them) while another thread is launching with it: the last holder frees it
  // (cudaFree waits for the device, so kernels already launched with it finish first).
  absl::StatusOr<std::shared_ptr<const WorkList>> GetWork(int kind, int64_t batch) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto key = std::make_pair(kind, batch);
    auto it = work_.find(key);
    if (it != work_.end()) return it->second;
    if (work_.size() > 256) work_.clear();  // unbounded batch sizes: start over
    auto list = std::make_shared<WorkList>();
    if (kind < 3) {
      RETURN_IF_ERROR(BuildGemmWork(roles[kind], batch, nullptr, list.get()));
    } else if (kind == 3) {
      RETURN_IF_ERROR(BuildWeightGradWork(batch, list.get()));
    } else if (kind == 4) {
      RETURN_IF_ERROR(BuildFactoredWork(batch, list.get()));
    } else {
      RETURN_IF_ERROR(BuildGemmWork(roles[0], batch, &factored, list.get()));
    }
    work_.emplace(key, list);
    return std::shared_ptr<const WorkList>(std::move(list));
  }

 private:
  int TargetBlocks() const { return num_sms * 4; }

  // skip: paths left out (run elsewhere), or nullptr.
  absl::Status BuildGemmWork(const GemmRole& role, int64_t batch, const std::vector<bool>* skip, WorkList* list) const {
    const int cols = cuda::TileCols(role.shape);
    int64_t tiles = 0;
    for (size_t i = 0; i < role.paths.size(); ++i) {
      const TpGemmPath& p = role.paths[i];
      if (int64_t{p.P} * p.Q * p.N == 0 || (skip && (*skip)[i])) continue;
      tiles += CeilDiv(batch, cuda::kTileRows / p.R) * CeilDiv(p.N, cols);
    }
    const int64_t splits = tiles == 0 ? 1 : std::max<int64_t>(1, CeilDiv(TargetBlocks(), tiles));
    std::vector<TpGemmWork> items;
    for (size_t i = 0; i < role.paths.size(); ++i) {
      const TpGemmPath& p = role.paths[i];
      if (int64_t{p.P} * p.Q * p.N == 0 || batch == 0 || (skip && (*skip)[i])) continue;
      const int zt = cuda::kTileRows / p.R;
      const int64_t k = int64_t{p.P} * p.Q;
      const int64_t ktiles = CeilDiv(k, cuda::kTileK);
      const int64_t chunk = CeilDiv(ktiles, std::min(splits, ktiles)) * cuda::kTileK;
      for (int64_t kb = 0; kb < k; kb += chunk)
        for (int n0 = 0; n0 < p.N; n0 += cols)
          for (int64_t z0 = 0; z0 < batch; z0 += zt)
            items.push_back({static_cast<int>(i), static_cast<int>(z0), n0, static_cast<int>(kb),
                             static_cast<int>(std::min(k, kb + chunk))});
    }
    if (items.size() > 0x7fffffff) return absl::ResourceExhaustedError("too many tiles for one launch");
    list->count = static_cast<int>(items.size());
    list->split_k = splits > 1;
    return list->items.Upload(items);
  }

  // Blocks of (path, 32 samples, 128 columns, a range of p); heavier paths (larger T) first, and
  // blocks that read the same W slice next to each other so that they meet in L2. One block is
  // resident per SM, so how the work is cut sets the tail: the p ranges are sized for B blocks per
  // SM, B in {2, 3}, whichever list finishes first when the SMs take the blocks in order (a block
  // costs T * (its p count + kPrologueP)). Measured on the H100, fp32 forward in ms for B = 2, 3, 4,
  // 6: batch 64: 0.343 0.312 0.326 0.342; 256: 0.966 1.044 1.029 0.937; 512: 1.672 1.694 1.726 1.809;
  // 2048: 5.90 5.86 5.82 5.95. The model picks 3, 2, 2, 3 for 64, 256, 512, 1024; over wider
  // candidate sets it picked 4 at 512 (slower), so the set stays small. CudaBackendOptions::factored_blocks_per_sm
  // fixes B (copied into the plan at Prepare; for experiments).
  absl::Status BuildFactoredWork(int64_t batch, WorkList* list) const {
    const int zt = cuda::FactoredForwardSamples(), cols = cuda::FactoredForwardCols();
    const std::vector<TpGemmPath>& paths = roles[0].paths;
    int64_t units = 0;
    std::vector<size_t> order;
    for (size_t i = 0; i < paths.size(); ++i) {
      if (!factored[i]) continue;
      const TpGemmPath& p = paths[i];
      units += int64_t{p.T} * CeilDiv(batch, zt) * CeilDiv(p.N, cols) * p.P;
      order.push_back(i);
      list->max_t_ldq = std::max(list->max_t_ldq, p.T * (p.Q + 4));
      list->max_t_q = std::max(list->max_t_q, p.T * p.Q);
    }
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return paths[a].T > paths[b].T; });
    auto cut = [&](int blocks_per_sm) {
      const int64_t per_block = std::max<int64_t>(1, CeilDiv(units, int64_t{num_sms} * blocks_per_sm));
      std::vector<TpGemmWork> items;
      for (size_t i : order) {
        const TpGemmPath& p = paths[i];
        const int chunk = static_cast<int>(std::clamp<int64_t>(CeilDiv(per_block, p.T), 1, p.P));
        for (int pb = 0; pb < p.P; pb += chunk)
          for (int n0 = 0; n0 < p.N; n0 += cols)
            for (int64_t z0 = 0; z0 < batch; z0 += zt)
              items.push_back({static_cast<int>(i), static_cast<int>(z0), n0, pb, std::min(p.P, pb + chunk)});
      }
      return items;
    };
    constexpr double kPrologueP = 1.5;  // a block's setup (x2 tile, 3j block, pipeline fill) in p steps
    auto finish_time = [&](const std::vector<TpGemmWork>& items) {
      std::priority_queue<double, std::vector<double>, std::greater<double>> sm_free(
          std::greater<double>(), std::vector<double>(static_cast<size_t>(std::max(num_sms, 1)), 0.0));
      double last = 0;
      for (const TpGemmWork& w : items) {
        const double done = sm_free.top() + paths[w.path].T * (w.k_end - w.k_begin + kPrologueP);
        sm_free.pop();
        sm_free.push(done);
        last = std::max(last, done);
      }
      return last;
    };
    std::vector<TpGemmWork> items;
    if (batch > 0) {
      if (factored_blocks_per_sm > 0) {
        items = cut(factored_blocks_per_sm);
      } else {
        double best = 0;
        for (int b : {3, 2}) {  // ties keep 3
          std::vector<TpGemmWork> candidate = cut(b);
          const double t = finish_time(candidate);
          if (items.empty() || t < best) {
            best = t;
            items = std::move(candidate);
          }
        }
      }
    }
    if (items.size() > 0x7fffffff) return absl::ResourceExhaustedError("too many tiles for one launch");
    list->count = static_cast<int>(items.size());
    list->split_k = true;
    return list->items.Upload(items);
  }

  absl::Status BuildWeightGradWork(int64_t batch, WorkList* list) const {
    const int cols = cuda::TileCols(wg_shape);
    int64_t tiles = 0;
    for (const WeightGradPath& p : wg_paths) {
      if (int64_t{p.P} * p.Q * p.N == 0) continue;
      tiles += CeilDiv(int64_t{p.P} * p.Q, cuda::kTileRows) * CeilDiv(p.N, cols);
    }
    const int64_t splits = tiles >= TargetBlocks() || tiles == 0 ? 1 : CeilDiv(TargetBlocks(), tiles);
    std::vector<WeightGradWork> items;
    bool split_k = false;
    for (size_t i = 0; i < wg_paths.size(); ++i) {
      const WeightGradPath& p = wg_paths[i];
      if (int64_t{p.P} * p.Q * p.N == 0 || batch == 0) continue;
      const int64_t k = batch * p.R;
      const int64_t ktiles = CeilDiv(k, cuda::kTileK);
      const int64_t chunk = CeilDiv(ktiles, std::min(splits, ktiles)) * cuda::kTileK;
      if (chunk < k) split_k = true;
      for (int64_t kb = 0; kb < k; kb += chunk)
        for (int n0 = 0; n0 < p.N; n0 += cols)
          for (int64_t m0 = 0; m0 < int64_t{p.P} * p.Q; m0 += cuda::kTileRows)
            items.push_back({static_cast<int>(i), static_cast<int>(m0), n0, static_cast<int>(kb),
                             static_cast<int>(std::min(k, kb + chunk))});
    }
    if (items.size() > 0x7fffffff) return absl::ResourceExhaustedError("too many tiles for one launch");
    list->count = static_cast<int>(items.size());
    list->split_k = split_k;
    return list->items.Upload(items);
  }

  mutable std::mutex mutex_;
  mutable std::map<std::pair<int, int64_t>, std::shared_ptr<WorkList>> work_;
};

absl::Status UploadRole(const std::vector<PathPlan>& paths, int which, GemmRole* role) {
  NzTable table = BuildNzTable(paths, which);
  int max_n = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    const PathPlan& pp = paths[i];
    const int64_t U = pp.mul_in1, V = pp.mul_in2, W = pp.mul_out;
    TpGemmPath d{};
    d.roff_begin = table.path_roff_begin[i];
    d.scale = static_cast<float>(pp.path_weight);
    d.w_offset = pp.weight_offset;
    if (which == 0) {  // out[z,w,k] = sum_{u,v} W[u,v,w] A[z,k,u,v]; a = x1, b = x2
      d.R = pp.dim_out(); d.P = pp.mul_in1; d.Q = pp.mul_in2; d.N = pp.mul_out;
      d.S = pp.dim_in1(); d.T = pp.dim_in2();
      d.a_offset = static_cast<int>(pp.offset_in1); d.b_offset = static_cast<int>(pp.offset_in2);
      d.out_offset = static_cast<int>(pp.offset_out);
      d.w_stride_p = V * W; d.w_stride_q = W; d.w_stride_n = 1;
    } else if (which == 1) {  // dx1[z,u,i] = sum_{v,w} W[u,v,w] A[z,i,v,w]; a = x2, b = g
      d.R = pp.dim_in1(); d.P = pp.mul_in2; d.Q = pp.mul_out; d.N = pp.mul_in1;
      d.S = pp.dim_in2(); d.T = pp.dim_out();
      d.a_offset = static_cast<int>(pp.offset_in2); d.b_offset = static_cast<int>(pp.offset_out);
      d.out_offset = static_cast<int>(pp.offset_in1);
      d.w_stride_p = W; d.w_stride_q = 1; d.w_stride_n = V * W;
    } else {  // dx2[z,v,j] = sum_{u,w} W[u,v,w] A[z,j,u,w]; a = x1, b = g
      d.R = pp.dim_in2(); d.P = pp.mul_in1; d.Q = pp.mul_out; d.N = pp.mul_in2;
      d.S = pp.dim_in1(); d.T = pp.dim_out();
      d.a_offset = static_cast<int>(pp.offset_in1); d.b_offset = static_cast<int>(pp.offset_out);
      d.out_offset = static_cast<int>(pp.offset_in2);
      d.w_stride_p = V * W; d.w_stride_q = 1; d.w_stride_n = W;
    }
    (void)U;
    d.fast_t = (d.T <= 7 && d.T % 2 == 1 && d.Q % 32 == 0) ? d.T : 0;
    d.w_vec4 = d.w_stride_n == 1 && d.N % 4 == 0 && d.w_offset % 4 == 0 && d.w_stride_p % 4 == 0 &&
               d.w_stride_q % 4 == 0;
    max_n = std::max(max_n, d.N);
    role->paths.push_back(d);
  }
  role->shape = max_n > 32 ? TileShape::kWide : TileShape::kNarrow;
  RETURN_IF_ERROR(role->paths_dev.Upload(role->paths));
  RETURN_IF_ERROR(role->nz_dev.Upload(table.entries));
  return role->roff_dev.Upload(table.roff);
}

absl::Status CheckFloat32(DType dtype) {
  if (dtype != DType::kFloat32) {
    return absl::UnimplementedError(
        absl::StrCat("CUDA backend: tensors must be float32, got ", DTypeName(dtype), " (use the cpu backend)"));
  }
  return absl::OkStatus();
}

// Makes `device` current for the scope of one call and restores the caller's device after.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    cudaGetDevice(&previous_);
    if (previous_ != device) cudaSetDevice(device);
  }
  ~DeviceScope() {
    int current = 0;
    cudaGetDevice(&current);
    if (current != previous_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
};

const CudaPreparedPlan* AsCuda(const PreparedPlan& plan) { return dynamic_cast<const CudaPreparedPlan*>(&plan); }

absl::Status LaunchGemmRole(const CudaPreparedPlan& prepared, int role_index, const float* a, int64_t a_row_stride,
                            const float* b, int64_t b_row_stride, const float* w, float* out,
                            int64_t out_row_stride, int64_t batch, Precision precision, cudaStream_t stream,
                            bool out_ir_mul = false) {
  const GemmRole& role = prepared.roles[role_index];
  // The forward role's factored paths (3xTF32, TF32; W 16-byte aligned) take their own kernel.
  const bool factored = role_index == 0 && prepared.any_factored && precision != Precision::kBf16 &&
                        (reinterpret_cast<uintptr_t>(w) & 15) == 0;
  ASSIGN_OR_RETURN(std::shared_ptr<const WorkList> work, prepared.GetWork(factored ? 5 : role_index, batch));
  cuda::TpGemmArgs args{};
  args.paths = role.paths_dev.get<TpGemmPath>();
  args.work = work->items.get<TpGemmWork>();
  args.num_work = work->count;
  args.nz = role.nz_dev.get<NzEntry>();
  args.roff = role.roff_dev.get<int>();
  args.a = a;
  args.a_row_stride = a_row_stride;
  args.b = b;
  args.b_row_stride = b_row_stride;
  args.w = w;
  args.out = out;
  args.out_row_stride = out_row_stride;
  args.batch = static_cast<int>(batch);
  args.out_ir_mul = out_ir_mul ? 1 : 0;
  CUDA_RETURN_IF_ERROR(cuda::LaunchTpGemm(ToMmaPrecision(precision), role.shape, args, stream));
  if (factored) {
    ASSIGN_OR_RETURN(std::shared_ptr<const WorkList> fwork, prepared.GetWork(4, batch));
    args.work = fwork->items.get<TpGemmWork>();
    args.num_work = fwork->count;
    if (prepared.factored_wgmma) {
      CUDA_RETURN_IF_ERROR(
          cuda::LaunchFactoredForwardWgmma(ToMmaPrecision(precision), fwork->max_t_q, args, stream));
    } else {
      CUDA_RETURN_IF_ERROR(cuda::LaunchFactoredForward(ToMmaPrecision(precision), prepared.factored_three_tf32,
                                                       prepared.factored_warp_cols, fwork->max_t_ldq, args, stream));
    }
  }
  return absl::OkStatus();
}

// out_ir_mul: write out transposed per irrep (out[z, off + k*mul + w]), as the weight gradient reads g.
absl::Status RunForward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2, float* out,
                        int64_t batch, Precision precision, cudaStream_t stream, bool out_ir_mul = false) {
  const TensorProductPlan& plan = prepared.plan();
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, sizeof(float) * batch * plan.dim_out(), stream));
  return LaunchGemmRole(prepared, 0, x1, plan.dim_in1(), x2, plan.dim_in2(), w, out, plan.dim_out(), batch, precision,
                        stream, out_ir_mul);
}

// Gradients from g = dL/dout ([batch, dim_out], device): g_mul_ir in e3nn's layout (needed for
// grad_x1/grad_x2), g_ir_mul transposed per irrep (needed for grad_weight).
absl::Status RunBackward(const CudaPreparedPlan& prepared, const float* w, const float* x1, const float* x2,
                         const float* g_mul_ir, const float* g_ir_mul, const GradientOutputs& grads, int64_t batch,
                         Precision precision, cudaStream_t stream) {
  const TensorProductPlan& plan = prepared.plan();
  if (grads.grad_weight.present()) {
    float* dw = grads.grad_weight.typed<float>();
    ASSIGN_OR_RETURN(std::shared_ptr<const WorkList> work, prepared.GetWork(3, batch));
    cuda::WeightGradStore store = grads.accumulate_grad_weight ? cuda::WeightGradStore::kAdd
                                                                : cuda::WeightGradStore::kAssign;
    if (work->split_k || batch == 0) {
      if (!grads.accumulate_grad_weight)
        CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dw, 0, sizeof(float) * plan.weight_numel(), stream));
      store = cuda::WeightGradStore::kAtomicAdd;
    }
    cuda::WeightGradArgs args{};
    args.paths = prepared.wg_paths_dev.get<WeightGradPath>();
    args.work = work->items.get<WeightGradWork>();
    args.num_work = work->count;
    args.nz = prepared.roles[0].nz_dev.get<NzEntry>();
    args.roff = prepared.roles[0].roff_dev.get<int>();
    args.x1 = x1;
    args.x1_row_stride = plan.dim_in1();
    args.x2 = x2;
    args.x2_row_stride = plan.dim_in2();
    args.g = g_ir_mul;
    args.g_row_stride = plan.dim_out();
    args.grad_w = dw;
    args.store = store;
    CUDA_RETURN_IF_ERROR(cuda::LaunchWeightGrad(ToMmaPrecision(precision), prepared.wg_shape, args, stream));
  }
  if (grads.grad_x1.present()) {
    float* dx1 = grads.grad_x1.typed<float>();
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dx1, 0, sizeof(float) * batch * plan.dim_in1(), stream));
    RETURN_IF_ERROR(LaunchGemmRole(prepared, 1, x2, plan.dim_in2(), g_mul_ir, plan.dim_out(), w, dx1, plan.dim_in1(), batch,
                                   precision, stream));
  }
  if (grads.grad_x2.present()) {
    float* dx2 = grads.grad_x2.typed<float>();
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dx2, 0, sizeof(float) * batch * plan.dim_in2(), stream));
    RETURN_IF_ERROR(LaunchGemmRole(prepared, 2, x1, plan.dim_in1(), g_mul_ir, plan.dim_out(), w, dx2, plan.dim_in2(), batch,
                                   precision, stream));
  }
  return absl::OkStatus();
}

}  // namespace

int CudaBackend::DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return count;
}

absl::StatusOr<std::unique_ptr<Backend>> CudaBackend::Create(int device, const CudaBackendOptions& options) {
  RETURN_IF_ERROR(ValidateCudaBackendOptions(options));
  const int count = DeviceCount();
  if (device < 0 || device >= count) {
    return absl::UnavailableError(
        absl::StrCat("cuda:", device, ": no such CUDA device (this machine has ", count, ")"));
  }
  cudaDeviceProp prop{};
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  if (prop.major < 8) {
    return absl::UnavailableError(absl::StrCat("cuda:", device, " (", prop.name, ", sm_", prop.major, prop.minor,
                                               "): the CUDA backend needs compute capability 8.0 or newer"));
  }
  DeviceScope scope(device);
  CUDA_RETURN_IF_ERROR(cuda::ConfigureTpGemmKernels());
  CUDA_RETURN_IF_ERROR(cuda::ConfigureFactoredForwardKernels());
  CUDA_RETURN_IF_ERROR(cuda::ConfigureFactoredWgmmaKernels());
  CUDA_RETURN_IF_ERROR(cuda::ConfigureWeightGradKernels());
  // Keep the stream-ordered pool's memory between calls (LossGradient's workspaces).
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
    uint64_t threshold = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
  }
  return std::unique_ptr<Backend>(new CudaBackend(device, prop.multiProcessorCount, cuda::FactoredWgmmaUsable(device), options));
}

absl::StatusOr<void*> CudaBackend::CreateStream() {
  DeviceScope scope(device_);
  cudaStream_t stream = nullptr;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return static_cast<void*>(stream);
}

void CudaBackend::DestroyStream(void* stream) {
  if (stream == nullptr) return;
  DeviceScope scope(device_);
  cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

CudaBackend::~CudaBackend() = default;

std::string CudaBackend::name() const { return absl::StrCat("cuda:", device_); }

absl::StatusOr<std::unique_ptr<PreparedPlan>> CudaBackend::Prepare(const TensorProductPlan& plan) {
  if (plan.weight_sharing() != WeightSharing::kShared) {
    return absl::UnimplementedError("CUDA backend: per-sample weights are not supported yet (use the cpu backend)");
  }
  for (const PathPlan& path : plan.paths()) {
    if (path.mode != ConnectionMode::kUvw) {
      return absl::UnimplementedError(absl::StrCat("CUDA backend: path (", path.i_in1, ", ", path.i_in2, ", ",
                                                   path.i_out, ") has mode '", ConnectionModeName(path.mode),
                                                   "'; only 'uvw' is supported (use the cpu backend)"));
    }
    if (2 * std::max({path.l1, path.l2, path.l3}) + 1 > cuda::kTileRows) {
      return absl::UnimplementedError("CUDA backend: l above 63 is not supported");
    }
  }
  DeviceScope scope(device_);
  auto prepared = std::make_unique<CudaPreparedPlan>(plan);
  prepared->num_sms = num_sms_;
  for (int which = 0; which < 3; ++which) RETURN_IF_ERROR(UploadRole(plan.paths(), which, &prepared->roles[which]));
  using ForwardKernel = CudaBackendOptions::ForwardKernel;
  const bool allow_factored = options_.forward_kernel != ForwardKernel::kGemm;
  prepared->factored_three_tf32 = options_.forward_kernel == ForwardKernel::kFactored3xTf32;
  prepared->factored_warp_cols = options_.factored_warp_cols;
  prepared->factored_blocks_per_sm = options_.factored_blocks_per_sm;
  bool wgmma_fits = true;
  for (const TpGemmPath& d : prepared->roles[0].paths) {
    prepared->factored.push_back(allow_factored && cuda::FactoredForwardSupports(d));
    prepared->any_factored = prepared->any_factored || prepared->factored.back();
    if (prepared->factored.back()) wgmma_fits = wgmma_fits && cuda::FactoredWgmmaFits(d);
  }
  prepared->factored_wgmma = prepared->any_factored && wgmma_fits &&
                             options_.forward_kernel == ForwardKernel::kAuto && wgmma_usable_;
  int max_n = 0;
  for (size_t i = 0; i < plan.paths().size(); ++i) {
    const PathPlan& pp = plan.paths()[i];
    WeightGradPath d{};
    d.R = pp.dim_out(); d.P = pp.mul_in1; d.Q = pp.mul_in2; d.N = pp.mul_out;
    d.S = pp.dim_in1(); d.T = pp.dim_in2();
    d.a_offset = static_cast<int>(pp.offset_in1);
    d.b_offset = static_cast<int>(pp.offset_in2);
    d.g_offset = static_cast<int>(pp.offset_out);
    d.roff_begin = prepared->roles[0].paths[i].roff_begin;
    d.w_offset = pp.weight_offset;
    d.scale = static_cast<float>(pp.path_weight);
    d.fast_t = (d.T <= 7 && d.T % 2 == 1 && d.Q % 32 == 0) ? d.T : 0;
    d.g_vec4 = d.N % 4 == 0 && d.g_offset % 4 == 0;
    max_n = std::max(max_n, d.N);
    prepared->wg_paths.push_back(d);
  }
  prepared->wg_shape = max_n > 32 ? TileShape::kWide : TileShape::kNarrow;
  RETURN_IF_ERROR(prepared->wg_paths_dev.Upload(prepared->wg_paths));
  // g[z, off + w*d + k] -> g_ir_mul[z, off + k*mul + w] for every output irrep block.
  std::vector<int> ir_mul_col(plan.dim_out());
  for (int b = 0; b < plan.irreps_out().size(); ++b) {
    const MulIrrep& block = plan.irreps_out()[b];
    const int off = static_cast<int>(plan.irreps_out().offset(b)), d = block.ir.dim();
    for (int w = 0; w < block.mul; ++w)
      for (int k = 0; k < d; ++k) ir_mul_col[off + w * d + k] = off + k * block.mul + w;
  }
  RETURN_IF_ERROR(prepared->ir_mul_col.Upload(ir_mul_col));
  return std::unique_ptr<PreparedPlan>(std::move(prepared));
}

absl::Status CudaBackend::Forward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                  ConstTensorView x2, TensorView out, const ExecutionContext& ctx) {
  const CudaPreparedPlan* prepared = AsCuda(plan);
  if (prepared == nullptr) return absl::InvalidArgumentError("CUDA backend: plan was prepared by another backend");
  RETURN_IF_ERROR(ValidateForward(plan.plan(), weight, x1, x2, out));
  RETURN_IF_ERROR(CheckFloat32(x1.dtype));
  DeviceScope scope(device_);
  return RunForward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), out.typed<float>(),
                    x1.shape[0], ctx.precision, StreamOf(ctx));
}

absl::Status CudaBackend::Backward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                   ConstTensorView x2, ConstTensorView grad_out, const GradientOutputs& grads,
                                   const ExecutionContext& ctx) {
  const CudaPreparedPlan* prepared = AsCuda(plan);
  if (prepared == nullptr) return absl::InvalidArgumentError("CUDA backend: plan was prepared by another backend");
  RETURN_IF_ERROR(ValidateGradients(plan.plan(), weight, x1, x2, grads));
  RETURN_IF_ERROR(CheckFloat32(x1.dtype));
  const int64_t batch = x1.shape[0];
  RETURN_IF_ERROR(CheckTensor(grad_out, "grad_out", DType::kFloat32, {batch, plan.plan().dim_out()}));
  DeviceScope scope(device_);
  cudaStream_t stream = StreamOf(ctx);
  const float* g = grad_out.typed<float>();
  if (!grads.grad_weight.present()) {
    return RunBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), g, nullptr, grads,
                       batch, ctx.precision, stream);
  }
  // The weight gradient reads grad_out transposed per irrep: a [batch, dim_out] workspace.
  float* g_ir_mul = nullptr;
  const int64_t out_numel = batch * plan.plan().dim_out();
  CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&g_ir_mul),
                                       sizeof(float) * std::max<int64_t>(out_numel, 1), stream));
  absl::Status status = [&]() -> absl::Status {
    CUDA_RETURN_IF_ERROR(cuda::LaunchOutputGrad(cuda::OutputGradMode::kCopy, g, prepared->ir_mul_col.get<int>(),
                                                static_cast<int>(plan.plan().dim_out()), batch, nullptr, g_ir_mul,
                                                stream));
    return RunBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), g, g_ir_mul, grads,
                       batch, ctx.precision, stream);
  }();
  const cudaError_t free_error = cudaFreeAsync(g_ir_mul, stream);
  RETURN_IF_ERROR(status);
  CUDA_RETURN_IF_ERROR(free_error);
  return absl::OkStatus();
}

absl::Status CudaBackend::LossGradient(const PreparedPlan& plan, Loss loss, ConstTensorView weight,
                                       ConstTensorView x1, ConstTensorView x2, TensorView out,
                                       const GradientOutputs& grads, const ExecutionContext& ctx) {
  const CudaPreparedPlan* prepared = AsCuda(plan);
  if (prepared == nullptr) return absl::InvalidArgumentError("CUDA backend: plan was prepared by another backend");
  RETURN_IF_ERROR(ValidateGradients(plan.plan(), weight, x1, x2, grads));
  RETURN_IF_ERROR(CheckFloat32(x1.dtype));
  const int64_t batch = x1.shape[0];
  const int64_t out_numel = batch * plan.plan().dim_out();
  if (out.present()) RETURN_IF_ERROR(CheckTensor(out, "out", DType::kFloat32, {batch, plan.plan().dim_out()}));
  DeviceScope scope(device_);
  cudaStream_t stream = StreamOf(ctx);
  // Workspaces from the stream-ordered pool, [batch, dim_out] floats each. The seed call (grad_weight
  // only, no out) takes one: the forward writes out transposed per irrep and g replaces it in place.
  // Otherwise: out (unless given), g in e3nn's layout (input gradients), g transposed (grad_weight).
  const bool want_dx = grads.grad_x1.present() || grads.grad_x2.present();
  const bool want_dw = grads.grad_weight.present();
  const bool in_place = want_dw && !want_dx && !out.present() && loss == Loss::kSumTanh;
  const int64_t slot = std::max<int64_t>(out_numel, 1);
  const int slots = in_place ? 1 : (out.present() ? 0 : 1) + (want_dx ? 1 : 0) + (want_dw ? 1 : 0);
  float* workspace = nullptr;
  if (slots > 0)
    CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&workspace), sizeof(float) * slot * slots, stream));
  absl::Status status = [&]() -> absl::Status {
    const auto mode = loss == Loss::kSumTanh ? cuda::OutputGradMode::kSumTanh : cuda::OutputGradMode::kSum;
    const int dim_out = static_cast<int>(plan.plan().dim_out());
    if (in_place) {
      RETURN_IF_ERROR(RunForward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), workspace,
                                 batch, ctx.precision, stream, /*out_ir_mul=*/true));
      CUDA_RETURN_IF_ERROR(
          cuda::LaunchOutputGrad(mode, workspace, nullptr, dim_out, batch, nullptr, workspace, stream));
      return RunBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), nullptr, workspace,
                         grads, batch, ctx.precision, stream);
    }
    float* next = workspace;
    float* out_ptr = out.present() ? out.typed<float>() : std::exchange(next, next + slot);
    float* g_mul_ir = want_dx ? std::exchange(next, next + slot) : nullptr;
    float* g_ir_mul = want_dw ? std::exchange(next, next + slot) : nullptr;
    if (loss == Loss::kSumTanh || out.present()) {
      RETURN_IF_ERROR(RunForward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), out_ptr,
                                 batch, ctx.precision, stream));
    }
    if (!want_dx && !want_dw) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cuda::LaunchOutputGrad(mode, out_ptr, prepared->ir_mul_col.get<int>(), dim_out, batch,
                                                g_mul_ir, g_ir_mul, stream));
    return RunBackward(*prepared, weight.typed<float>(), x1.typed<float>(), x2.typed<float>(), g_mul_ir, g_ir_mul,
                       grads, batch, ctx.precision, stream);
  }();
  const cudaError_t free_error = workspace != nullptr ? cudaFreeAsync(workspace, stream) : cudaSuccess;
  RETURN_IF_ERROR(status);
  CUDA_RETURN_IF_ERROR(free_error);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BackendBuffer>> CudaBackend::Allocate(size_t bytes) {
  DeviceScope scope(device_);
  void* ptr = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)));
  return std::unique_ptr<BackendBuffer>(new CudaBuffer(device_, ptr, bytes));
}

absl::StatusOr<std::unique_ptr<BackendBuffer>> CudaBackend::AllocateHost(size_t bytes) {
  DeviceScope scope(device_);
  void* ptr = nullptr;
  // Portable: any device's copies may use it (a worker's buffers stay with its device anyway).
  CUDA_RETURN_IF_ERROR(cudaHostAlloc(&ptr, std::max<size_t>(bytes, 1), cudaHostAllocPortable));
  return std::unique_ptr<BackendBuffer>(new PinnedHostBuffer(ptr, bytes));
}

absl::Status CudaBackend::CopyFromHost(void* dst, const void* host_src, size_t bytes, const ExecutionContext& ctx) {
  DeviceScope scope(device_);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, StreamOf(ctx)));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(void* host_dst, const void* src, size_t bytes, const ExecutionContext& ctx) {
  DeviceScope scope(device_);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, StreamOf(ctx)));
  return absl::OkStatus();
}

absl::Status CudaBackend::CheckDevice() {
  DeviceScope scope(device_);
  // An error of one launch is reported once and cleared; a fault of the context is reported by every
  // call after it. Two synchronizations with the error cleared between them tell them apart.
  cudaDeviceSynchronize();
  cudaGetLastError();
  const cudaError_t e = cudaDeviceSynchronize();
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
}

absl::Status CudaBackend::Synchronize(const ExecutionContext& ctx) {
  DeviceScope scope(device_);
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(StreamOf(ctx)));
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tpserve
