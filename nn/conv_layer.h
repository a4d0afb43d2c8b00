// One point convolution of the QM9 network (issue 19's Conv(in -> out)):
//   sc   = FCTP(x, attr -> out)                       e3nn FullyConnectedTensorProduct, shared weights
//   h    = FCTP(x, attr -> in)                        ("lin1")
//   m_e  = TP_uvu(h[src_e], Y(r_e); w_e)              per-edge weights w_e = RadialMlp(basis(|r_e|))
//   agg  = sum_{e: dst_e = n} m_e / sqrt(num_neighbors)
//   out  = cos(pi/8) sc + sin(pi/8) FCTP(agg, attr -> out)   ("lin2")
// The 'uvu' TP has one instruction per (entry i of in, entry j of Y, ir in ir_i x ir_j) with ir in
// out (or ir = 0e), each to its own entry of irreps_mid; irreps_mid is then sorted (e3nn's sort, not
// simplified) and the instructions renumbered, keeping their order (and so the weight layout).
//
// All tensor products run through the Backend (host memory); the FCTPs per species (their second
// input is one-hot: species_fctp.h); gather, scatter, the MLP and the combination are host loops.
// Parameters of the layer, back to back: sc, lin1, the MLP's matrices, lin2 (a block with no
// weights is left out).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/backend.h"
#include "kernels/core/irreps.h"
#include "kernels/core/plan.h"
#include "nn/mlp.h"
#include "nn/species_fctp.h"

namespace tpserve::nn {

struct ConvLayerOptions {
  Irreps irreps_in, irreps_out, irreps_attr, irreps_sh;
  std::vector<int> radial_hidden;  // hidden widths of the radial MLP (e.g. {64, 64})
  int num_basis = 10;
  double num_neighbors = 2.1;
  double attr_value = 1.0;  // the nonzero entry of the one-hot attributes (irreps_attr = num_elements x 0e)
};

// A block of a layer's parameters, relative to the layer's first parameter.
struct LayerParameterBlock {
  std::string name;  // "sc", "lin1", "radial.w0", ..., "lin2"
  int64_t offset = 0, numel = 0;
  std::vector<int64_t> shape;
};

template <class T>
struct ConvInputs {
  int64_t num_nodes = 0, num_edges = 0;
  const T* x = nullptr;          // [num_nodes, irreps_in.dim]
  const T* attr = nullptr;       // [num_nodes, irreps_attr.dim]
  const int32_t* edge_src = nullptr;
  const int32_t* edge_dst = nullptr;
  const T* edge_sh = nullptr;    // [num_edges, irreps_sh.dim]
  const T* edge_basis = nullptr; // [num_edges, num_basis]
  // Nodes grouped by species: the FCTPs run per species (species_fctp.h). nullptr: the dense
  // products with attr (same result, num_elements times the work; kept for checking).
  const NodesBySpecies* nodes_by_species = nullptr;
};

// What Backward needs from Forward.
template <class T>
struct ConvCache {
  std::vector<T> h_src;         // lin1 output gathered per edge, [num_edges, dim_in]
  std::vector<T> edge_weights;  // radial MLP output, [num_edges, tp weight_numel]
  std::vector<T> agg;           // [num_nodes, dim_mid]
  RadialMlp::Cache<T> mlp;
};

class ConvLayer {
 public:
  // backend == nullptr builds the plans without preparing them: the layer then describes itself
  // (irreps, parameters, FLOPs) but Forward and Backward must not be called.
  static absl::StatusOr<ConvLayer> Create(const ConvLayerOptions& options, Backend* backend);

  const Irreps& irreps_in() const { return options_.irreps_in; }
  const Irreps& irreps_out() const { return options_.irreps_out; }
  const Irreps& irreps_mid() const { return tp_->plan().irreps_out(); }
  const TensorProductPlan& sc_plan() const { return sc_.plan(); }
  const TensorProductPlan& lin1_plan() const { return lin1_.plan(); }
  const TensorProductPlan& tp_plan() const { return tp_->plan(); }
  const TensorProductPlan& lin2_plan() const { return lin2_.plan(); }
  const RadialMlp& mlp() const { return mlp_; }

  const std::vector<LayerParameterBlock>& parameter_blocks() const { return blocks_; }
  int64_t num_parameters() const;

  // out: [num_nodes, irreps_out.dim]. params: this layer's parameters.
  template <class T>
  absl::Status Forward(const T* params, const ConvInputs<T>& in, ConvCache<T>* cache, T* out) const;
  // grad_params (+=, this layer's block) and grad_x (=, [num_nodes, dim_in]; nullptr: not needed).
  template <class T>
  absl::Status Backward(const T* params, const ConvInputs<T>& in, const ConvCache<T>& cache, const T* grad_out,
                        T* grad_params, T* grad_x) const;

 private:
  ConvLayer(ConvLayerOptions options, RadialMlp mlp) : options_(std::move(options)), mlp_(std::move(mlp)) {}
  int64_t BlockOffset(const std::string& name) const;  // -1 when the block is absent

  ConvLayerOptions options_;
  RadialMlp mlp_;
  Backend* backend_ = nullptr;
  SpeciesFctp sc_, lin1_, lin2_;
  std::shared_ptr<const PreparedPlan> tp_;
  std::vector<LayerParameterBlock> blocks_;
};

}  // namespace tpserve::nn
