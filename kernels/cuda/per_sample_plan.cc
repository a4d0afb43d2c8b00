#include "kernels/cuda/per_sample_plan.h"

#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tpserve::cuda {
namespace {

// Appends the path's nonzeros grouped by index `which` (0: k, 1: i, 2: j); returns the offset of
// its first range in `ranges` (count + 1 ranges entries follow).
int AppendGrouped(const PathPlan& path, int which, std::vector<PsEntry>* entries, std::vector<int>* ranges) {
  const int count = which == 0 ? path.dim_out() : which == 1 ? path.dim_in1() : path.dim_in2();
  const int first = static_cast<int>(ranges->size());
  for (int r = 0; r < count; ++r) {
    ranges->push_back(static_cast<int>(entries->size()));
    for (const Wigner3jEntry& e : path.cg_nonzeros) {
      if ((which == 0 ? e.k : which == 1 ? e.i : e.j) != r) continue;
      entries->push_back(PsEntry{e.i, e.j, e.k, 0, static_cast<float>(e.value)});
    }
  }
  ranges->push_back(static_cast<int>(entries->size()));
  return first;
}

PsPath Describe(const PathPlan& path) {
  PsPath d{};
  d.uvu = path.mode == ConnectionMode::kUvu ? 1 : 0;
  d.mul1 = path.mul_in1;
  d.mul2 = path.mul_in2;
  d.mul_out = path.mul_out;
  d.d1 = path.dim_in1();
  d.d2 = path.dim_in2();
  d.d3 = path.dim_out();
  d.off1 = static_cast<int>(path.offset_in1);
  d.off2 = static_cast<int>(path.offset_in2);
  d.off_out = static_cast<int>(path.offset_out);
  d.w_off = path.weight_offset;
  d.scale = static_cast<float>(path.path_weight);
  return d;
}

// One segment per irrep of `irreps`, listing (in `order`) the paths whose index `which_index`
// names that irrep (0: i_out, 1: i_in1).
void AppendSegments(const Irreps& irreps, const std::vector<PathPlan>& paths, int which_index,
                    std::vector<PsSegment>* segments, std::vector<int>* order) {
  for (int s = 0; s < irreps.size(); ++s) {
    PsSegment seg{static_cast<int>(irreps.offset(s)), irreps[s].mul, irreps[s].ir.dim(),
                  static_cast<int>(order->size()), 0};
    for (size_t p = 0; p < paths.size(); ++p) {
      if ((which_index == 0 ? paths[p].i_out : paths[p].i_in1) == s) order->push_back(static_cast<int>(p));
    }
    seg.path_end = static_cast<int>(order->size());
    segments->push_back(seg);
  }
}

}  // namespace

bool UsesPerSampleKernels(const TensorProductPlan& plan) {
  if (plan.weight_sharing() == WeightSharing::kPerSample) return true;
  for (const PathPlan& path : plan.paths())
    if (path.mode != ConnectionMode::kUvw) return true;
  return false;
}

absl::Status CheckPerSampleLimits(const TensorProductPlan& plan) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (plan.dim_in1() > kIntMax || plan.dim_out() > kIntMax) {
    return absl::UnimplementedError("CUDA backend: per-sample kernels need dim_in1 and dim_out below 2^31");
  }
  if (plan.dim_in2() > kPerSampleMaxDim2) {
    return absl::UnimplementedError(absl::StrCat("CUDA backend: per-sample kernels take dim_in2 up to ",
                                                 kPerSampleMaxDim2, ", got ", plan.dim_in2()));
  }
  for (const PathPlan& path : plan.paths()) {
    if (int64_t{path.mul_in1} * path.mul_in2 * path.mul_out > kIntMax) {
      return absl::UnimplementedError("CUDA backend: a path's weight block exceeds 2^31 elements");
    }
  }
  return absl::OkStatus();
}

PerSampleHostTables BuildPerSampleHostTables(const TensorProductPlan& plan) {
  PerSampleHostTables t;
  for (const PathPlan& path : plan.paths()) {
    PsPath d = Describe(path);
    d.by_k = AppendGrouped(path, 0, &t.entries, &t.ranges);
    d.by_i = AppendGrouped(path, 1, &t.entries, &t.ranges);
    d.by_j = AppendGrouped(path, 2, &t.entries, &t.ranges);
    t.paths.push_back(d);
  }
  AppendSegments(plan.irreps_out(), plan.paths(), 0, &t.segments, &t.order);
  AppendSegments(plan.irreps_in1(), plan.paths(), 1, &t.segments, &t.order);
  t.num_out_segments = plan.irreps_out().size();
  t.num_in1_segments = plan.irreps_in1().size();
  return t;
}

absl::StatusOr<std::unique_ptr<PerSampleTables>> BuildPerSampleTables(const TensorProductPlan& plan) {
  RETURN_IF_ERROR(CheckPerSampleLimits(plan));
  const PerSampleHostTables host = BuildPerSampleHostTables(plan);
  auto tables = std::make_unique<PerSampleTables>();
  tables->num_out_segments = host.num_out_segments;
  tables->num_in1_segments = host.num_in1_segments;
  RETURN_IF_ERROR(tables->paths.Upload(host.paths));
  RETURN_IF_ERROR(tables->entries.Upload(host.entries));
  RETURN_IF_ERROR(tables->ranges.Upload(host.ranges));
  RETURN_IF_ERROR(tables->segments.Upload(host.segments));
  RETURN_IF_ERROR(tables->order.Upload(host.order));
  return tables;
}

PsArgs PerSampleArgs(const TensorProductPlan& plan, const PerSampleTables& tables, int64_t batch) {
  PsArgs a{};
  a.paths = tables.paths.get<PsPath>();
  a.entries = tables.entries.get<PsEntry>();
  a.ranges = tables.ranges.get<int>();
  a.segments = tables.segments.get<PsSegment>();
  a.order = tables.order.get<int>();
  a.num_out_segments = tables.num_out_segments;
  a.num_in1_segments = tables.num_in1_segments;
  a.batch = static_cast<int>(batch);
  a.dim1 = static_cast<int>(plan.dim_in1());
  a.dim2 = static_cast<int>(plan.dim_in2());
  a.dim_out = static_cast<int>(plan.dim_out());
  a.w_stride = plan.weight_sharing() == WeightSharing::kPerSample ? plan.weight_numel() : 0;
  a.g_mode = PsGradMode::kGiven;
  a.dw_store = PsStore::kAssign;
  return a;
}

}  // namespace tpserve::cuda
