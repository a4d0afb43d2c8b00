#include "nn/conv_layer.h"

#include <cmath>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "nn/irreps_ops.h"
#include "nn/typed_views.h"

namespace tpserve::nn {
namespace {

const double kCosPi8 = std::cos(M_PI / 8);
const double kSinPi8 = std::sin(M_PI / 8);

// The 'uvu' instructions of the edge tensor product and its (sorted) output irreps.
struct EdgeProduct {
  Irreps irreps_mid;
  std::vector<InstructionSpec> instructions;
};

EdgeProduct BuildEdgeProduct(const Irreps& irreps_in, const Irreps& irreps_sh, const Irreps& irreps_out) {
  std::vector<MulIrrep> mid;
  EdgeProduct product;
  for (int i = 0; i < irreps_in.size(); ++i) {
    for (int j = 0; j < irreps_sh.size(); ++j) {
      const Irrep a = irreps_in[i].ir, b = irreps_sh[j].ir;
      for (int l = std::abs(a.l - b.l); l <= a.l + b.l; ++l) {
        const Irrep ir{l, a.parity * b.parity};
        if (!ContainsIrrep(irreps_out, ir) && ir != Irrep{0, 1}) continue;
        product.instructions.push_back({i, j, static_cast<int>(mid.size()), ConnectionMode::kUvu});
        mid.push_back({irreps_in[i].mul, ir});
      }
    }
  }
  SortedIrreps sorted = SortIrreps(Irreps(std::move(mid)));
  for (InstructionSpec& spec : product.instructions) spec.i_out = sorted.permutation[spec.i_out];
  product.irreps_mid = std::move(sorted.irreps);
  return product;
}

}  // namespace

absl::StatusOr<ConvLayer> ConvLayer::Create(const ConvLayerOptions& options, Backend* backend) {
  const EdgeProduct edge = BuildEdgeProduct(options.irreps_in, options.irreps_sh, options.irreps_out);
  TensorProductOptions per_edge;
  per_edge.weight_sharing = WeightSharing::kPerSample;
  ASSIGN_OR_RETURN(auto tp, PreparePlanOn(backend, TensorProductPlan::FromInstructions(
                                                     options.irreps_in, options.irreps_sh, edge.irreps_mid,
                                                     edge.instructions, per_edge)));
  std::vector<int> sizes = {options.num_basis};
  sizes.insert(sizes.end(), options.radial_hidden.begin(), options.radial_hidden.end());
  sizes.push_back(static_cast<int>(tp->plan().weight_numel()));
  ConvLayer layer(options, RadialMlp(sizes));
  layer.backend_ = backend;
  layer.tp_ = std::move(tp);
  const int num_elements = options.irreps_attr.size() == 1 ? options.irreps_attr[0].mul : 0;
  if (num_elements == 0 || options.irreps_attr[0].ir != Irrep{0, 1}) {
    return absl::InvalidArgumentError(
        absl::StrCat("ConvLayer: node attributes must be one-hot scalars (N x 0e), got ",
                     options.irreps_attr.ToString()));
  }
  ASSIGN_OR_RETURN(layer.sc_, SpeciesFctp::Create(options.irreps_in, num_elements, options.irreps_out,
                                                  options.attr_value, backend));
  ASSIGN_OR_RETURN(layer.lin1_, SpeciesFctp::Create(options.irreps_in, num_elements, options.irreps_in,
                                                    options.attr_value, backend));
  ASSIGN_OR_RETURN(layer.lin2_, SpeciesFctp::Create(edge.irreps_mid, num_elements, options.irreps_out,
                                                    options.attr_value, backend));
  int64_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    if (numel == 0) return;
    layer.blocks_.push_back({std::move(name), offset, numel, std::move(shape)});
    offset += numel;
  };
  add("sc", {layer.sc_.plan().weight_numel()});
  add("lin1", {layer.lin1_.plan().weight_numel()});
  for (int k = 0; k < layer.mlp_.num_matrices(); ++k) add(absl::StrCat("radial.w", k), {sizes[k], sizes[k + 1]});
  add("lin2", {layer.lin2_.plan().weight_numel()});
  return layer;
}

int64_t ConvLayer::num_parameters() const {
  return blocks_.empty() ? 0 : blocks_.back().offset + blocks_.back().numel;
}

int64_t ConvLayer::BlockOffset(const std::string& name) const {
  for (const LayerParameterBlock& block : blocks_) {
    if (block.name == name) return block.offset;
  }
  return -1;
}


template <class T>
absl::Status ConvLayer::Forward(const T* params, const ConvInputs<T>& in, ConvCache<T>* cache, T* out) const {
  const int64_t n = in.num_nodes, e = in.num_edges;
  const int64_t dim_in = irreps_in().dim(), dim_out = irreps_out().dim(), dim_mid = irreps_mid().dim();
  std::vector<T> sc(n * dim_out), h(n * dim_in), lin2(n * dim_out);
  RETURN_IF_ERROR(sc_.Forward(backend_, params + BlockOffset("sc"), in.x, in.attr, in.nodes_by_species, n, sc.data()));
  RETURN_IF_ERROR(
      lin1_.Forward(backend_, params + BlockOffset("lin1"), in.x, in.attr, in.nodes_by_species, n, h.data()));
  cache->h_src.resize(e * dim_in);
  for (int64_t edge = 0; edge < e; ++edge) {
    std::copy_n(h.data() + int64_t{in.edge_src[edge]} * dim_in, dim_in, cache->h_src.data() + edge * dim_in);
  }
  const int64_t weight_numel = tp_->plan().weight_numel();
  cache->edge_weights.resize(e * weight_numel);
  mlp_.Forward(params + BlockOffset("radial.w0"), in.edge_basis, e, &cache->mlp, cache->edge_weights.data());
  cache->agg.assign(n * dim_mid, T(0));
  if (e > 0) {
    std::vector<T> messages(e * dim_mid);
    RETURN_IF_ERROR(backend_->Forward(*tp_, InView(cache->edge_weights.data(), {e, weight_numel}),
                                      InView(cache->h_src.data(), {e, dim_in}),
                                      InView(in.edge_sh, {e, options_.irreps_sh.dim()}),
                                      OutView(messages.data(), {e, dim_mid}), {}));
    const T norm = T(1) / std::sqrt(static_cast<T>(options_.num_neighbors));
    for (int64_t edge = 0; edge < e; ++edge) {
      T* dst = cache->agg.data() + int64_t{in.edge_dst[edge]} * dim_mid;
      const T* message = messages.data() + edge * dim_mid;
      for (int64_t k = 0; k < dim_mid; ++k) dst[k] += message[k] * norm;
    }
  }
  RETURN_IF_ERROR(lin2_.Forward(backend_, params + BlockOffset("lin2"), cache->agg.data(), in.attr,
                                in.nodes_by_species, n, lin2.data()));
  const T c_sc = static_cast<T>(kCosPi8), c_conv = static_cast<T>(kSinPi8);
  for (int64_t k = 0; k < n * dim_out; ++k) out[k] = c_sc * sc[k] + c_conv * lin2[k];
  return absl::OkStatus();
}

template <class T>
absl::Status ConvLayer::Backward(const T* params, const ConvInputs<T>& in, const ConvCache<T>& cache,
                                 const T* grad_out, T* grad_params, T* grad_x) const {
  const int64_t n = in.num_nodes, e = in.num_edges;
  const int64_t dim_in = irreps_in().dim(), dim_out = irreps_out().dim(), dim_mid = irreps_mid().dim();
  const T c_sc = static_cast<T>(kCosPi8), c_conv = static_cast<T>(kSinPi8);
  std::vector<T> grad_sc(n * dim_out), grad_lin2(n * dim_out);
  for (int64_t k = 0; k < n * dim_out; ++k) {
    grad_sc[k] = c_sc * grad_out[k];
    grad_lin2[k] = c_conv * grad_out[k];
  }
  std::vector<T> grad_x_sc(grad_x ? n * dim_in : 0), grad_agg(n * dim_mid), grad_h(n * dim_in, T(0));
  const int64_t sc = BlockOffset("sc"), lin1 = BlockOffset("lin1"), lin2 = BlockOffset("lin2");
  RETURN_IF_ERROR(sc_.Backward(backend_, params + sc, in.x, in.attr, in.nodes_by_species, n, grad_sc.data(),
                               grad_params + sc, grad_x ? grad_x_sc.data() : nullptr));
  RETURN_IF_ERROR(lin2_.Backward(backend_, params + lin2, cache.agg.data(), in.attr, in.nodes_by_species, n,
                                 grad_lin2.data(), grad_params + lin2, grad_agg.data()));
  if (e > 0) {
    const int64_t weight_numel = tp_->plan().weight_numel();
    const T norm = T(1) / std::sqrt(static_cast<T>(options_.num_neighbors));
    std::vector<T> grad_messages(e * dim_mid), grad_weights(e * weight_numel), grad_h_src(e * dim_in);
    for (int64_t edge = 0; edge < e; ++edge) {
      const T* src = grad_agg.data() + int64_t{in.edge_dst[edge]} * dim_mid;
      for (int64_t k = 0; k < dim_mid; ++k) grad_messages[edge * dim_mid + k] = src[k] * norm;
    }
    GradientOutputs grads;
    grads.grad_weight = OutView(grad_weights.data(), {e, weight_numel});
    grads.grad_x1 = OutView(grad_h_src.data(), {e, dim_in});
    RETURN_IF_ERROR(backend_->Backward(*tp_, InView(cache.edge_weights.data(), {e, weight_numel}),
                                       InView(cache.h_src.data(), {e, dim_in}),
                                       InView(in.edge_sh, {e, options_.irreps_sh.dim()}),
                                       InView(grad_messages.data(), {e, dim_mid}), grads, {}));
    for (int64_t edge = 0; edge < e; ++edge) {
      T* dst = grad_h.data() + int64_t{in.edge_src[edge]} * dim_in;
      for (int64_t k = 0; k < dim_in; ++k) dst[k] += grad_h_src[edge * dim_in + k];
    }
    mlp_.Backward(params + BlockOffset("radial.w0"), cache.mlp, e, grad_weights.data(),
                  grad_params + BlockOffset("radial.w0"));
  }
  RETURN_IF_ERROR(lin1_.Backward(backend_, params + lin1, in.x, in.attr, in.nodes_by_species, n, grad_h.data(),
                                 grad_params + lin1, grad_x));
  if (grad_x) {
    for (int64_t k = 0; k < n * dim_in; ++k) grad_x[k] += grad_x_sc[k];
  }
  return absl::OkStatus();
}

template absl::Status ConvLayer::Forward<float>(const float*, const ConvInputs<float>&, ConvCache<float>*,
                                                float*) const;
template absl::Status ConvLayer::Forward<double>(const double*, const ConvInputs<double>&, ConvCache<double>*,
                                                 double*) const;
template absl::Status ConvLayer::Backward<float>(const float*, const ConvInputs<float>&, const ConvCache<float>&,
                                                 const float*, float*, float*) const;
template absl::Status ConvLayer::Backward<double>(const double*, const ConvInputs<double>&,
                                                  const ConvCache<double>&, const double*, double*, double*) const;

}  // namespace tpserve::nn
