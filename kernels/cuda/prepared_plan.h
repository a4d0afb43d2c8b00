// The CUDA backend's prepared plan: per-path descriptors and 3j tables on the device, which forward
// kernel takes which path, and the tile work lists of each launch, built per batch size and cached.
// Internal to kernels/cuda (cuda_backend.cc and launches.cc); callers see only Backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "kernels/cuda/cuda_backend_options.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/per_sample_plan.h"
#include "kernels/cuda/tp_kernels.h"

namespace tpserve::cuda {

// Device tiles of one launch for one batch size.
struct WorkList {
  DeviceMemory items;
  int count = 0;
  bool split_k = false;
  int max_t_ldq = 0;  // factored forward: the largest T * (Q + 4) (sizes its shared memory)
  int max_t_q = 0;    // the same for the wgmma kernel: the largest T * Q
  size_t wg_smem_bytes[3] = {};  // wgmma weight gradient: its largest shared memory, by MmaPrecision
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

  // Set for plans with per-sample weights or 'uvu' paths: they run on tp_per_sample.cu alone, and
  // the GEMM members below stay empty.
  std::unique_ptr<PerSampleTables> per_sample;

  GemmRole roles[3];  // forward, grad_x1, grad_x2
  std::vector<WeightGradPath> wg_paths;
  DeviceMemory wg_paths_dev;
  DeviceMemory ir_mul_col;  // column map of g into the weight gradient's layout (loss_grad.cu)
  TileShape wg_shape = TileShape::kWide;
  int num_sms = 132;
  // Forward paths that run in the factored kernel (tp_forward_wgmma.cu in every precision, or
  // tp_forward_factored.cu in 3xTF32 and TF32); the others run in tp_gemm.cu (launches.cc decides
  // per call: precision, batch size, W alignment).
  std::vector<bool> factored;
  bool any_factored = false;
  bool factored_three_tf32 = false;  // fp32 as three TF32 MMAs (forward_kernel factored-3xtf32)
  int factored_blocks_per_sm = 0;    // factored forward work split; 0: chosen per batch (BuildFactoredWork)
  int factored_warp_cols = 32;       // output columns per warp (options: 16 for comparisons)
  // The factored paths on wgmma (tp_forward_wgmma.cu) where the device is an sm_90 and the plan fits;
  // the option forward_kernel=factored-mma (or factored-3xtf32) keeps the mma.sync kernel.
  bool factored_wgmma = false;
  // tf32 and bf16 take the factored kernel from this many samples (forward_kernel auto:
  // kFactoredForwardTf32Bf16MinBatch; otherwise 0).
  int64_t factored_tf32_bf16_min_batch = 0;
  // The weight gradient on wgmma (tp_weight_grad_wgmma.cu) may run: weight_grad_kernel auto or wgmma,
  // an sm_90 device, and every path WeightGradWgmmaSupports. It runs from wg_wgmma_*_min_batch
  // samples of the precision (auto: kWeightGradWgmma*MinBatch; wgmma: 0); else tp_weight_grad.cu.
  bool wg_wgmma = false;
  int64_t wg_wgmma_fp32_min_batch = 0;
  int64_t wg_wgmma_tf32_min_batch = 0;
  int64_t wg_wgmma_bf16_min_batch = 0;

  // Work lists per (kind, batch); kind 0..2 = roles (all paths), 3 = weight gradient, 4 = factored
  // forward, 5 = the forward role without the factored paths, 6 = the weight gradient on wgmma. Shared, because the cache may drop a
  // list (past 256 of them) while another thread is launching with it: the last holder frees it
  // (cudaFree waits for the device, so kernels already launched with it finish first).
  absl::StatusOr<std::shared_ptr<const WorkList>> GetWork(int kind, int64_t batch) const;

 private:
  int TargetBlocks() const { return num_sms * 4; }

  // skip: paths left out (run elsewhere), or nullptr.
  absl::Status BuildGemmWork(const GemmRole& role, int64_t batch, const std::vector<bool>* skip, WorkList* list) const;

  // Blocks of (path, 32 samples, 128 columns, a range of p); heavier paths (larger T) first, and
  // blocks that read the same W slice next to each other so that they meet in L2. One block is
  // resident per SM, so how the work is cut sets the tail: the p ranges are sized for B blocks per
  // SM, B in {2, 3}, whichever list finishes first when the SMs take the blocks in order (a block
  // costs T * (its p count + kPrologueP)). Measured on the H100, fp32 forward in ms for B = 2, 3, 4,
  // 6: batch 64: 0.343 0.312 0.326 0.342; 256: 0.966 1.044 1.029 0.937; 512: 1.672 1.694 1.726 1.809;
  // 2048: 5.90 5.86 5.82 5.95. The model picks 3, 2, 2, 3 for 64, 256, 512, 1024; over wider
  // candidate sets it picked 4 at 512 (slower), so the set stays small. CudaBackendOptions::factored_blocks_per_sm
  // fixes B (copied into the plan at Prepare; for experiments).
  absl::Status BuildFactoredWork(int64_t batch, WorkList* list) const;

  absl::Status BuildWeightGradWork(int64_t batch, WorkList* list) const;

  // Blocks of (path, p, 128 rows q, 128 columns n, a slice of samples), heavier paths (larger T)
  // first; the batch is split (atomics on a zeroed dW) only when there are fewer tiles than 2 per SM.
  absl::Status BuildWgmmaWeightGradWork(int64_t batch, WorkList* list) const;

  mutable std::mutex mutex_;
  mutable std::map<std::pair<int, int64_t>, std::shared_ptr<WorkList>> work_;
};


// Uploads the tables of `plan` to the current device and picks the kernels (options, the device's
// SM count, and whether the wgmma kernel may run there).
absl::StatusOr<std::unique_ptr<CudaPreparedPlan>> PrepareCudaPlan(const TensorProductPlan& plan, int num_sms,
                                                                   bool wgmma_usable,
                                                                   const CudaBackendOptions& options);

}  // namespace tpserve::cuda
