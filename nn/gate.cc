#include "nn/gate.h"

#include "nn/irreps_ops.h"

namespace tpserve::nn {
namespace {

// Offset in the sorted layout of every entry of `concat` (concat entry c sits at sorted position
// permutation[c]).
std::vector<int64_t> SortedOffsets(const Irreps& concat, const SortedIrreps& sorted) {
  std::vector<int64_t> offsets(concat.size());
  for (int c = 0; c < concat.size(); ++c) offsets[c] = sorted.irreps.offset(sorted.permutation[c]);
  return offsets;
}

}  // namespace

Gate Gate::Create(const Irreps& scalars_in, const Irreps& gated_in) {
  const Irreps scalars = SimplifyIrreps(scalars_in);
  const Irreps gated = SimplifyIrreps(gated_in);
  int num_gates = 0;
  for (const MulIrrep& entry : gated.entries()) num_gates += entry.mul;
  const Irreps gates = num_gates > 0 ? Irreps({{num_gates, Irrep{0, 1}}}) : Irreps();
  const Irreps concat = ConcatIrreps({scalars, gates, gated});
  const SortedIrreps sorted = SortIrreps(concat);
  const std::vector<int64_t> in_offsets = SortedOffsets(concat, sorted);

  Gate gate;
  gate.irreps_in_ = SimplifyIrreps(sorted.irreps);
  gate.irreps_out_ = ConcatIrreps({scalars, gated});
  int c = 0;  // entry of concat
  for (int i = 0; i < scalars.size(); ++i, ++c) {
    gate.scalars_.push_back({in_offsets[c], gate.irreps_out_.offset(i), scalars[i].mul,
                             scalars[i].ir.parity == 1 ? Activation::kGelu : Activation::kTanh});
  }
  const int64_t gates_offset = gates.size() > 0 ? in_offsets[c] : 0;
  c += gates.size();
  int copy = 0;
  for (int i = 0; i < gated.size(); ++i, ++c) {
    const int dim = gated[i].ir.dim();
    for (int u = 0; u < gated[i].mul; ++u, ++copy) {
      gate.gated_.push_back({in_offsets[c] + int64_t{u} * dim, gate.irreps_out_.offset(scalars.size() + i) + u * dim,
                             gates_offset + copy, dim});
    }
  }
  return gate;
}

template <class T>
void Gate::Forward(const T* in, int64_t rows, T* out) const {
  const int64_t dim_in = irreps_in_.dim(), dim_out = irreps_out_.dim();
  const T sigmoid_scale = static_cast<T>(SecondMomentConstant(Activation::kSigmoid));
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = in + r * dim_in;
    T* y = out + r * dim_out;
    for (const ScalarBlock& block : scalars_) {
      const T scale = static_cast<T>(SecondMomentConstant(block.activation));
      for (int u = 0; u < block.mul; ++u) {
        y[block.out_offset + u] = scale * ActivationValue(block.activation, x[block.in_offset + u]);
      }
    }
    for (const GatedCopy& copy : gated_) {
      const T g = sigmoid_scale * ActivationValue(Activation::kSigmoid, x[copy.gate_in_offset]);
      for (int m = 0; m < copy.dim; ++m) y[copy.out_offset + m] = x[copy.in_offset + m] * g;
    }
  }
}

template <class T>
void Gate::Backward(const T* in, int64_t rows, const T* grad_out, T* grad_in) const {
  const int64_t dim_in = irreps_in_.dim(), dim_out = irreps_out_.dim();
  const T sigmoid_scale = static_cast<T>(SecondMomentConstant(Activation::kSigmoid));
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = in + r * dim_in;
    const T* gy = grad_out + r * dim_out;
    T* gx = grad_in + r * dim_in;
    for (const ScalarBlock& block : scalars_) {
      const T scale = static_cast<T>(SecondMomentConstant(block.activation));
      for (int u = 0; u < block.mul; ++u) {
        const int64_t i = block.in_offset + u;
        gx[i] = gy[block.out_offset + u] * scale * ActivationDerivative(block.activation, x[i]);
      }
    }
    for (const GatedCopy& copy : gated_) {
      const T xg = x[copy.gate_in_offset];
      const T g = sigmoid_scale * ActivationValue(Activation::kSigmoid, xg);
      T grad_g = 0;
      for (int m = 0; m < copy.dim; ++m) {
        gx[copy.in_offset + m] = gy[copy.out_offset + m] * g;
        grad_g += gy[copy.out_offset + m] * x[copy.in_offset + m];
      }
      gx[copy.gate_in_offset] = grad_g * sigmoid_scale * ActivationDerivative(Activation::kSigmoid, xg);
    }
  }
}

template void Gate::Forward<float>(const float*, int64_t, float*) const;
template void Gate::Forward<double>(const double*, int64_t, double*) const;
template void Gate::Backward<float>(const float*, int64_t, const float*, float*) const;
template void Gate::Backward<double>(const double*, int64_t, const double*, double*) const;

}  // namespace tpserve::nn
