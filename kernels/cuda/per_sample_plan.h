// Device tables of a plan that runs on the per-sample kernels (tp_per_sample.cu): plans with
// per-sample weights or any 'uvu' path. Shared-weight plans whose paths are all 'uvw' keep the GEMM
// kernels. Internal to kernels/cuda.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/plan.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/tp_per_sample.h"

namespace tpserve::cuda {

// The tables on the host, as uploaded.
struct PerSampleHostTables {
  std::vector<PsPath> paths;
  std::vector<PsEntry> entries;
  std::vector<int> ranges;
  std::vector<PsSegment> segments;  // out irreps, then x1 irreps
  std::vector<int> order;
  int num_out_segments = 0, num_in1_segments = 0;
};
PerSampleHostTables BuildPerSampleHostTables(const TensorProductPlan& plan);

struct PerSampleTables {
  DeviceMemory paths, entries, ranges, segments, order;
  int num_out_segments = 0, num_in1_segments = 0;
};

// True when `plan` takes the per-sample kernels.
bool UsesPerSampleKernels(const TensorProductPlan& plan);

// OK when the per-sample kernels can run `plan` (offsets fit in int, dim_in2 within the shared row).
absl::Status CheckPerSampleLimits(const TensorProductPlan& plan);

// Uploads the path descriptors, 3j nonzeros (grouped by k, i and j) and segment lists.
absl::StatusOr<std::unique_ptr<PerSampleTables>> BuildPerSampleTables(const TensorProductPlan& plan);

// PsArgs with the tables and the plan's dimensions filled in (no tensors).
PsArgs PerSampleArgs(const TensorProductPlan& plan, const PerSampleTables& tables, int64_t batch);

}  // namespace tpserve::cuda
