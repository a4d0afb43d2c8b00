// Internal to nn/: what a Qm9Network is made of (shared by its copies), for the forward and
// backward passes, the FLOP count and the tests.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/core/irreps.h"
#include "nn/conv_layer.h"
#include "nn/gate.h"
#include "nn/qm9_network.h"

namespace tpserve::nn {

struct Qm9NetworkStructure {
  Qm9NetworkConfig config;
  Irreps irreps_sh, irreps_attr;
  std::vector<ConvLayer> convs;    // config.layers
  std::vector<Gate> gates;         // config.layers - 1, gate l follows conv l
  std::vector<int64_t> layer_offsets;  // first parameter of each conv
  int64_t num_parameters = 0;
};

// Builds the layers (irreps, plans prepared on `backend`; backend == nullptr: plans only).
absl::StatusOr<std::shared_ptr<Qm9NetworkStructure>> BuildQm9Structure(const Qm9NetworkConfig& config,
                                                                       Backend* backend);

}  // namespace tpserve::nn
