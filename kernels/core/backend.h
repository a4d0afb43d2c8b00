// The backend interface: what the server and tpctl call to run a tensor product, implemented by
// the CPU backend (kernels/cpu) and the CUDA backend (kernels/cuda).
//
// Life cycle: Prepare(plan) once per model (the backend uploads 3j tables, picks kernels, sizes
// workspaces); then any number of Forward / Backward / LossGradient calls with tensors that live
// in the backend's memory_space(). A PreparedPlan holds no weights: callers own all tensors,
// so one prepared plan serves any number of weight sets (models or replicas).
//
// Threading: a Backend and its PreparedPlans may be used from several threads when each call has
// its own ExecutionContext (CUDA: its own stream); results are ordered on that context.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/plan.h"
#include "kernels/core/tensor.h"

namespace tpserve {

// Arithmetic of the GEMM-shaped work for float32 tensors (float64 is always computed in float64).
//   kFp32: fp32 accuracy (CUDA: error-corrected tf32 on tensor cores, or CUDA cores)
//   kTf32: tf32 tensor cores, ~1e-3 relative error
//   kBf16: bf16 operands with fp32 accumulation, ~1e-2 relative error
enum class Precision : uint8_t { kFp32, kTf32, kBf16 };
const char* PrecisionName(Precision precision);  // "fp32", "tf32", "bf16"
absl::StatusOr<Precision> ParsePrecision(absl::string_view name);

// Losses whose output gradient the backend derives itself from `out`.
enum class Loss : uint8_t {
  kSum,      // L = sum(out):        grad_out = 1
  kSumTanh,  // L = sum(tanh(out)):  grad_out = 1 - tanh(out)^2   (the seed benchmark)
};
const char* LossName(Loss loss);  // "sum", "sum_tanh"
absl::StatusOr<Loss> ParseLoss(absl::string_view name);

struct ExecutionContext {
  Precision precision = Precision::kFp32;
  void* stream = nullptr;  // cudaStream_t for the CUDA backend (nullptr: default stream); CPU ignores it
};

// Outputs of a vector-Jacobian product; each is optional (absent view = not requested).
struct GradientOutputs {
  TensorView grad_weight;         // shape of the weights
  TensorView grad_x1;             // [batch, dim_in1]
  TensorView grad_x2;             // [batch, dim_in2]
  bool accumulate_grad_weight = false;  // grad_weight += instead of =
};

// Backend-specific state of one plan (device tables, kernel choice). Created by Backend::Prepare.
class PreparedPlan {
 public:
  virtual ~PreparedPlan() = default;
  const TensorProductPlan& plan() const { return plan_; }

 protected:
  explicit PreparedPlan(TensorProductPlan plan) : plan_(std::move(plan)) {}

 private:
  TensorProductPlan plan_;
};

// The edges of a graph convolution: edge e reads x1 row src[e] (node features) and adds its TP
// into out row dst[e]. int32 indices in the backend's memory space. The host default checks them
// (INVALID_ARGUMENT); a device backend cannot without waiting for the device, so callers check them
// on the host (the CUDA kernels skip an out-of-range edge rather than fault).
struct EdgeIndex {
  const int32_t* src = nullptr;  // [num_edges]
  const int32_t* dst = nullptr;  // [num_edges]
  int64_t num_edges = 0;
};

// Memory owned by a backend (host memory for CPU, device memory for CUDA). Freed on destruction.
class BackendBuffer {
 public:
  virtual ~BackendBuffer() = default;
  virtual void* data() const = 0;
  virtual size_t bytes() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;  // "cpu", "cuda:0"
  virtual MemorySpace memory_space() const = 0;
  virtual bool SupportsDType(DType dtype) const = 0;

  virtual absl::StatusOr<std::unique_ptr<PreparedPlan>> Prepare(const TensorProductPlan& plan) = 0;

  // out = TP(weight, x1, x2).
  virtual absl::Status Forward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                               ConstTensorView x2, TensorView out, const ExecutionContext& ctx) = 0;

  // Vector-Jacobian product of TP at (weight, x1, x2) with the given grad_out.
  virtual absl::Status Backward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                ConstTensorView x2, ConstTensorView grad_out, const GradientOutputs& grads,
                                const ExecutionContext& ctx) = 0;

  // Gradients of loss(TP(weight, x1, x2)), forward pass included. `out` (optional) receives the
  // forward result. LossGradient(kSumTanh) with only grad_weight is the seed task d/dw sum tanh TP.
  virtual absl::Status LossGradient(const PreparedPlan& plan, Loss loss, ConstTensorView weight,
                                    ConstTensorView x1, ConstTensorView x2, TensorView out,
                                    const GradientOutputs& grads, const ExecutionContext& ctx) = 0;

  // Gather, TP and scatter-sum of a graph convolution in one call (kernels/core/edge_tp.cc):
  //   out[n] = sum over edges e with dst[e] = n of TP(weight[e], x1[src[e]], x2[e])
  // weight: WeightShape(plan, num_edges); x1: [num_nodes, dim_in1]; x2: [num_edges, dim_in2];
  // out: [num_out_rows, dim_out], overwritten (rows without edges are 0). The default works on host
  // memory (gather, Forward, scatter: the CPU backend's); CUDA fuses them into its per-sample kernels.
  virtual absl::Status EdgeForward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                   ConstTensorView x2, const EdgeIndex& edges, TensorView out,
                                   const ExecutionContext& ctx);
  // Its vector-Jacobian product for grad_out [num_out_rows, dim_out]: grad_x1 [num_nodes, dim_in1]
  // (summed over each node's edges, overwritten), grad_x2 [num_edges, dim_in2], grad_weight like
  // weight (accumulate_grad_weight honored); each optional.
  virtual absl::Status EdgeBackward(const PreparedPlan& plan, ConstTensorView weight, ConstTensorView x1,
                                    ConstTensorView x2, const EdgeIndex& edges, ConstTensorView grad_out,
                                    const GradientOutputs& grads, const ExecutionContext& ctx);

  // Memory in this backend's space, and copies between it and the host (ordered on ctx).
  virtual absl::StatusOr<std::unique_ptr<BackendBuffer>> Allocate(size_t bytes) = 0;
  // Host memory that CopyFromHost/CopyToHost move at full speed and without blocking the caller
  // (page-locked on CUDA; pageable copies stage through a driver buffer at a fraction of the rate).
  // Allocating it is slow: callers keep and reuse such buffers.
  virtual absl::StatusOr<std::unique_ptr<BackendBuffer>> AllocateHost(size_t bytes) = 0;
  virtual absl::Status CopyFromHost(void* dst, const void* host_src, size_t bytes, const ExecutionContext& ctx) = 0;
  virtual absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes, const ExecutionContext& ctx) = 0;
  // Blocks until all work issued on ctx has finished; reports asynchronous errors.
  virtual absl::Status Synchronize(const ExecutionContext& ctx) = 0;

  // OK while the device can still run work. A device fault (on CUDA: an illegal address, a trap)
  // poisons the process's context for good: every later call fails and only a new process recovers.
  // Callers ask after a failed launch, to tell such a fault from an error of that launch alone.
  virtual absl::Status CheckDevice() { return absl::OkStatus(); }

  // An execution stream of the backend's own for ExecutionContext::stream, so that each caller
  // (a server worker) orders its work apart from the others: on CUDA a non-blocking stream on the
  // backend's device. nullptr where the backend has no streams (CPU); the caller destroys it here.
  virtual absl::StatusOr<void*> CreateStream() { return nullptr; }
  virtual void DestroyStream(void* stream) { (void)stream; }
};

// Shape and dtype checks shared by every backend, so each names the same expectations.
// `batch` is taken from x1; every other tensor must agree with it and with the plan.
absl::Status ValidateForward(const TensorProductPlan& plan, const ConstTensorView& weight, const ConstTensorView& x1,
                             const ConstTensorView& x2, const TensorView& out);
absl::Status ValidateGradients(const TensorProductPlan& plan, const ConstTensorView& weight,
                               const ConstTensorView& x1, const ConstTensorView& x2, const GradientOutputs& grads);
// Expected weight shape for this plan and batch: [weight_numel] or [batch, weight_numel].
std::vector<int64_t> WeightShape(const TensorProductPlan& plan, int64_t batch);
// The same checks for EdgeForward (out) and EdgeBackward (grad_out, grads); x1 and out may have any
// number of rows, every per-edge tensor has edges.num_edges.
absl::Status ValidateEdgeForward(const TensorProductPlan& plan, const ConstTensorView& weight,
                                 const ConstTensorView& x1, const ConstTensorView& x2, const EdgeIndex& edges,
                                 const TensorView& out);
absl::Status ValidateEdgeBackward(const TensorProductPlan& plan, const ConstTensorView& weight,
                                  const ConstTensorView& x1, const ConstTensorView& x2, const EdgeIndex& edges,
                                  const ConstTensorView& grad_out, const GradientOutputs& grads);

}  // namespace tpserve
