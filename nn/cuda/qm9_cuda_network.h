// The QM9 network of nn/ (qm9_network.h) on a CUDA device, fp32, with the batch, the activations,
// the parameters, their gradient and the SGD velocity resident on the device. Same layers, same
// flat parameter layout and the same results (to fp32 rounding) as Qm9Network; a separate driver
// rather than a second implementation behind Qm9Network's API, because Qm9Network's ops are host
// loops over std::vector (see nn/README.md, "The network on the GPU").
//
// What runs where: the FCTPs sc / lin1 / lin2 per species on cuBLAS SGEMM (or, as an option, as the
// dense e3nn products with the one-hot attributes through the CUDA Backend); the per-edge 'uvu'
// product with per-edge weights through the CUDA Backend; the radial MLP on cuBLAS SGEMM; gather / scatter-sum, gate, per-graph sum, L1 loss and
// SGD in nn/cuda/nn_kernels.cu. The edge harmonics and radial basis depend only on the batch: they
// are computed on the host (fp64, rounded to fp32) when the batch is set, with the one-hot attributes.
//
// Not thread-safe: one network owns one stream's worth of buffers; use one per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "nn/graph_batch.h"
#include "nn/qm9_network.h"
#include "nn/sgd.h"

namespace tpserve::nn {

struct Qm9CudaOptions {
  int device = 0;
  // kFp32: fp32 everywhere; kTf32: cuBLAS and the tensor-product kernels may use TF32 tensor cores.
  Precision precision = Precision::kFp32;
  // The FCTPs with the one-hot attributes. kPerSpecies: as cuBLAS GEMMs on the nodes of each
  // species with that species' weight slice (1/num_elements of the dense work; nn/species_fctp.h
  // has the algebra); kDense: the dense e3nn product through the CUDA backend; kAuto: per species
  // (since the per-species GEMMs run as one strided-batched GEMM per path, the faster one at all four
  // of issue 19's shapes on H100: 4.3 against 9.0 ms at lmax 1 mul 128, docs/BENCHMARKS.md).
  enum class FctpMode { kAuto, kPerSpecies, kDense };
  FctpMode fctp = FctpMode::kAuto;
};

class Qm9CudaNetwork {
 public:
  // UNAVAILABLE without a CUDA device; INVALID_ARGUMENT for a bad config.
  static absl::StatusOr<std::unique_ptr<Qm9CudaNetwork>> Create(const Qm9NetworkConfig& config,
                                                                const Qm9CudaOptions& options = {});
  ~Qm9CudaNetwork();
  Qm9CudaNetwork(const Qm9CudaNetwork&) = delete;
  Qm9CudaNetwork& operator=(const Qm9CudaNetwork&) = delete;

  const Qm9NetworkConfig& config() const;
  int64_t num_parameters() const;

  // Parameters (Qm9Network's layout) to / from the device; SetParameters also zeroes the velocity.
  absl::Status SetParameters(const std::vector<float>& params);
  absl::StatusOr<std::vector<float>> Parameters();
  absl::StatusOr<std::vector<float>> Gradient();  // of the last LossGradient / TrainStep
  // The SGD momentum velocity (same layout), to carry it over from a stored optimizer state: call
  // SetVelocity after SetParameters, which zeroes it.
  absl::Status SetVelocity(const std::vector<float>& velocity);
  absl::StatusOr<std::vector<float>> Velocity();

  // Validates the batch (ValidateGraphBatch), uploads it with its attributes, harmonics and radial
  // basis, and sizes the activations. targets (may be empty for Predict only): [num_graphs * num_targets].
  absl::Status SetBatch(const GraphBatch& batch, const std::vector<float>& targets);

  // Device-resident steps on the current parameters and batch, enqueued (asynchronous).
  absl::Status EnqueueForward();       // predictions
  absl::Status EnqueueLossGradient();  // forward, loss, gradient (needs targets)
  absl::Status EnqueueSgdStep(const SgdMomentumOptions& options);  // params, velocity from the gradient
  absl::Status Synchronize();
  absl::StatusOr<std::vector<float>> Predictions();  // synchronizes
  absl::StatusOr<float> Loss();                       // synchronizes

  // Host conveniences with Qm9Network's signatures (upload, run, download).
  absl::StatusOr<std::vector<float>> Predict(const std::vector<float>& params, const GraphBatch& batch);
  absl::StatusOr<LossAndGradient<float>> LossGradient(const std::vector<float>& params, const GraphBatch& batch,
                                                      const std::vector<float>& targets);

  void* stream() const;  // the cudaStream_t everything runs on

  struct State;  // internal

 private:
  explicit Qm9CudaNetwork(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace tpserve::nn
