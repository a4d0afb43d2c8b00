#include "kernels/cuda/prepared_plan.h"

#include <algorithm>
#include <functional>
#include <queue>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve::cuda {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

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

}  // namespace

absl::StatusOr<std::shared_ptr<const WorkList>> CudaPreparedPlan::GetWork(int kind, int64_t batch) const {
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
  } else if (kind == 6) {
    RETURN_IF_ERROR(BuildWgmmaWeightGradWork(batch, list.get()));
  } else if (kind == 4) {
    RETURN_IF_ERROR(BuildFactoredWork(batch, list.get()));
  } else {
    RETURN_IF_ERROR(BuildGemmWork(roles[0], batch, &factored, list.get()));
  }
  work_.emplace(key, list);
  return std::shared_ptr<const WorkList>(std::move(list));
}

absl::Status CudaPreparedPlan::BuildGemmWork(const GemmRole& role, int64_t batch, const std::vector<bool>* skip, WorkList* list) const {
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

absl::Status CudaPreparedPlan::BuildFactoredWork(int64_t batch, WorkList* list) const {
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

absl::Status CudaPreparedPlan::BuildWeightGradWork(int64_t batch, WorkList* list) const {
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

absl::Status CudaPreparedPlan::BuildWgmmaWeightGradWork(int64_t batch, WorkList* list) const {
  constexpr int kRows = 128, kCols = 128;  // q and n per block
  int64_t tiles = 0;
  std::vector<size_t> order;
  for (size_t i = 0; i < wg_paths.size(); ++i) {
    const WeightGradPath& p = wg_paths[i];
    if (int64_t{p.P} * p.Q * p.N == 0) continue;
    tiles += int64_t{p.P} * CeilDiv(p.Q, kRows) * CeilDiv(p.N, kCols);
    order.push_back(i);
    for (MmaPrecision precision : {MmaPrecision::k3xTf32, MmaPrecision::kTf32, MmaPrecision::kBf16}) {
      size_t& bytes = list->wg_smem_bytes[static_cast<int>(precision)];
      bytes = std::max(bytes, cuda::WeightGradWgmmaSmemBytes(precision, p));
    }
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return wg_paths[a].T > wg_paths[b].T; });
  const int64_t target = 2 * int64_t{num_sms};
  const int64_t splits = tiles >= target || tiles == 0 ? 1 : CeilDiv(target, tiles);
  std::vector<WeightGradWork> items;
  bool split_k = false;
  for (size_t i : order) {
    const WeightGradPath& p = wg_paths[i];
    if (batch == 0) break;
    const int64_t unit = cuda::WeightGradWgmmaSamples(p.T);  // samples per chunk of the kernel
    const int64_t units = CeilDiv(batch, unit);
    const int64_t slice = CeilDiv(units, std::min(splits, units)) * unit;
    if (slice < batch) split_k = true;
    for (int64_t z0 = 0; z0 < batch; z0 += slice)
      for (int pp = 0; pp < p.P; ++pp)
        for (int q0 = 0; q0 < p.Q; q0 += kRows)
          for (int n0 = 0; n0 < p.N; n0 += kCols)
            items.push_back({static_cast<int>(i), pp * p.Q + q0, n0, static_cast<int>(z0),
                             static_cast<int>(std::min(batch, z0 + slice))});
  }
  if (items.size() > 0x7fffffff || batch > 0x7fffffff) return absl::ResourceExhaustedError("too many tiles for one launch");
  list->count = static_cast<int>(items.size());
  list->split_k = split_k;
  return list->items.Upload(items);
}

absl::StatusOr<std::unique_ptr<CudaPreparedPlan>> PrepareCudaPlan(const TensorProductPlan& plan, int num_sms,
                                                                   bool wgmma_usable,
                                                                   const CudaBackendOptions& options) {
  auto prepared = std::make_unique<CudaPreparedPlan>(plan);
  prepared->num_sms = num_sms;
  if (UsesPerSampleKernels(plan)) {
    ASSIGN_OR_RETURN(prepared->per_sample, BuildPerSampleTables(plan));
    return prepared;
  }
  for (int which = 0; which < 3; ++which) RETURN_IF_ERROR(UploadRole(plan.paths(), which, &prepared->roles[which]));
  using ForwardKernel = CudaBackendOptions::ForwardKernel;
  const bool allow_factored = options.forward_kernel != ForwardKernel::kGemm;
  prepared->factored_three_tf32 = options.forward_kernel == ForwardKernel::kFactored3xTf32;
  prepared->factored_warp_cols = options.factored_warp_cols;
  prepared->factored_blocks_per_sm = options.factored_blocks_per_sm;
  bool wgmma_fits = true;
  for (const TpGemmPath& d : prepared->roles[0].paths) {
    prepared->factored.push_back(allow_factored && cuda::FactoredForwardSupports(d));
    prepared->any_factored = prepared->any_factored || prepared->factored.back();
    if (prepared->factored.back()) wgmma_fits = wgmma_fits && cuda::FactoredWgmmaFits(d);
  }
  prepared->factored_tf32_bf16_min_batch =
      options.forward_kernel == ForwardKernel::kAuto ? kFactoredForwardTf32Bf16MinBatch : 0;
  prepared->factored_wgmma = prepared->any_factored && wgmma_fits &&
                             options.forward_kernel == ForwardKernel::kAuto && wgmma_usable;
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
  bool wg_wgmma_fits = !prepared->wg_paths.empty();
  for (const WeightGradPath& d : prepared->wg_paths) wg_wgmma_fits = wg_wgmma_fits && cuda::WeightGradWgmmaSupports(d);
  using WeightGradKernel = CudaBackendOptions::WeightGradKernel;
  prepared->wg_wgmma = wg_wgmma_fits && wgmma_usable && options.weight_grad_kernel != WeightGradKernel::kMma;
  const bool auto_kernel = options.weight_grad_kernel == WeightGradKernel::kAuto;
  prepared->wg_wgmma_fp32_min_batch = auto_kernel ? kWeightGradWgmmaFp32MinBatch : 0;
  prepared->wg_wgmma_tf32_min_batch = auto_kernel ? kWeightGradWgmmaTf32MinBatch : 0;
  prepared->wg_wgmma_bf16_min_batch = auto_kernel ? kWeightGradWgmmaBf16MinBatch : 0;
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
  return prepared;
}


}  // namespace tpserve::cuda
