// A model: a named tensor-product plan plus its current weights (an immutable, versioned
// snapshot swapped atomically on every committed change). Models live in memory in the
// InferenceCore and on disk in the ModelRepository; workers hold device replicas of the weights.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/plan.h"
#include "server/core/memory_budget.h"
#include "server/core/network_spec.h"

namespace tpserve::server {

// What a model computes: e3nn's FullyConnectedTensorProduct(irreps_in1, irreps_in2, irreps_out).
struct ModelSpec {
  std::string irreps_in1, irreps_in2, irreps_out;
};

using WeightsPtr = std::shared_ptr<const std::vector<float>>;

// A model's weights at one version.
struct WeightsSnapshot {
  uint64_t version = 0;
  WeightsPtr weights;
  uint64_t fnv1a64 = 0;  // checksum of the float32 little-endian bytes
};

// What clients see of a model.
struct ModelInfo {
  std::string name;
  std::string kind = kTensorProductKind;  // or kQm9Kind: `network` applies, and weight_numel counts
                                          // its float64 parameters (dims and paths are 0)
  NetworkSpec network;
  ModelSpec spec;  // normalized to e3nn's printing
  int64_t weight_numel = 0, dim_in1 = 0, dim_in2 = 0, dim_out = 0;
  int num_paths = 0;
  uint64_t version = 0;
  uint64_t weights_fnv1a64 = 0;
  std::string device;  // network models: where Predict and TrainStep compute ("cpu", "cuda:0")
  // Network models: the version in the repository (behind `version` by the steps not yet saved,
  // --network_save_every); 0 on a server without a repository.
  uint64_t saved_version = 0;
};

// OK for [A-Za-z0-9_.-]{1,128} not starting with '.'; INVALID_ARGUMENT otherwise.
absl::Status ValidateModelName(const std::string& name);

// What the server agrees to build (per irreps string, and for the whole product).
inline constexpr int kMaxServedL = 8;
inline constexpr int64_t kMaxServedDim = int64_t{1} << 20;
inline constexpr int64_t kMaxServedWeightNumel = int64_t{1} << 30;
// Paths (instructions) of one model unless the server is configured otherwise (--max_paths).
// Practical e3nn products have tens to hundreds; 48 '0e' terms in each irreps make 110,592.
inline constexpr int64_t kDefaultMaxPaths = 16384;

struct PlanLimits {
  int64_t max_paths = kDefaultMaxPaths;  // <= 0: no limit (models already in the repository)
  // Polled while the plan is built; true stops it with CANCELLED (the client went away).
  std::function<bool()> should_stop;
};

// Parses the spec's irreps and builds the plan; INVALID_ARGUMENT naming the bad field, when a
// serving limit above (or limits.max_paths) is exceeded, or when the product has no paths (no
// output irrep reachable from in1 x in2). The limits are checked from the parsed terms before any
// path is built, in time linear in the terms.
absl::StatusOr<TensorProductPlan> PlanForSpec(const ModelSpec& spec, const PlanLimits& limits = {});

// Client text quoted in an error message: at most `max_bytes` of it, marked when cut, so that a
// megabyte of input never becomes a megabyte of reply.
std::string QuoteForError(absl::string_view text, size_t max_bytes = 96);

// The spec with each irreps string in e3nn's printing ("128x0e+128x1e").
ModelSpec NormalizedSpec(const TensorProductPlan& plan);

uint64_t Fnv1a64(const void* data, size_t bytes);

// weight_numel draws from N(0, 1) (e3nn's initialization), deterministic in `seed`.
std::vector<float> SeededWeights(int64_t weight_numel, uint64_t seed);

class Model {
 public:
  // `weights` must hold plan.weight_numel() elements.
  Model(std::string name, TensorProductPlan plan, WeightsSnapshot weights);

  const std::string& name() const { return name_; }
  const TensorProductPlan& plan() const { return plan_; }
  const ModelSpec& spec() const { return spec_; }
  // Distinguishes this model from a later one of the same name (delete + create).
  uint64_t instance_id() const { return instance_id_; }

  WeightsSnapshot weights() const;
  void SetWeights(WeightsSnapshot weights);
  ModelInfo Info() const;

  // Set by DeleteModel: workers free their replica after any launch still in flight.
  void MarkDeleted() { deleted_.store(true); }
  bool deleted() const { return deleted_.load(); }

  // Serializes weight changes (upload commit, SGD step) of this model.
  std::mutex& update_mutex() { return update_mu_; }

  // The model's share of the memory budget (its weights and host replicas), held for its lifetime.
  void HoldMemory(MemoryBudget::Reservation reservation) { memory_ = std::move(reservation); }

 private:
  const std::string name_;
  const TensorProductPlan plan_;
  const ModelSpec spec_;
  const uint64_t instance_id_;
  mutable std::mutex mu_;
  WeightsSnapshot weights_;
  std::mutex update_mu_;
  std::atomic<bool> deleted_{false};
  MemoryBudget::Reservation memory_;
};

}  // namespace tpserve::server
