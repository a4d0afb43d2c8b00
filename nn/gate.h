// e3nn's Gate(irreps_scalars, acts, irreps_gates, [sigmoid...], irreps_gated) as the QM9 network
// uses it: scalars 0e through gelu and 0o through tanh, one 0e gate per gated irrep copy (sigmoid),
// every activation second-moment normalized (activation.h).
//
// Layouts, as e3nn builds them: the input (the convolution's output) is scalars + gates + gated,
// each simplified, concatenated, then sorted by irrep and simplified, e.g. for mul 4, lmax 1:
//   in  = 4x0o + 12x0e + 4x1o + 4x1e   (scalars 4x0e are the first 4 of the 12x0e, the 8 gates follow)
//   out = 4x0e + 4x0o + 4x1e + 4x1o    (scalars, then the gated irreps; gate k scales gated copy k)
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/core/irreps.h"
#include "nn/activation.h"

namespace tpserve::nn {

class Gate {
 public:
  // scalars: l = 0 entries (0e -> gelu, 0o -> tanh); gated: l > 0 entries, each copy gated by a 0e.
  static Gate Create(const Irreps& scalars, const Irreps& gated);

  const Irreps& irreps_in() const { return irreps_in_; }
  const Irreps& irreps_out() const { return irreps_out_; }

  // in: [rows, irreps_in.dim]; out: [rows, irreps_out.dim].
  template <class T>
  void Forward(const T* in, int64_t rows, T* out) const;
  // grad_in = d loss / d in, from the gate's input and d loss / d out.
  template <class T>
  void Backward(const T* in, int64_t rows, const T* grad_out, T* grad_in) const;

  // The layout tables (for device implementations of the same gate, nn/cuda/).
  struct ScalarBlock {
    int64_t in_offset = 0, out_offset = 0;
    int mul = 0;
    Activation activation = Activation::kGelu;
  };
  struct GatedCopy {  // one copy of a gated irrep
    int64_t in_offset = 0, out_offset = 0, gate_in_offset = 0;
    int dim = 0;
  };

  const std::vector<ScalarBlock>& scalar_blocks() const { return scalars_; }
  const std::vector<GatedCopy>& gated_copies() const { return gated_; }

 private:
  Irreps irreps_in_, irreps_out_;
  std::vector<ScalarBlock> scalars_;
  std::vector<GatedCopy> gated_;
};

}  // namespace tpserve::nn
