// What a network model is (the model repository's second kind, beside tensor-product models):
// its kind and structure. Plain data, so that the repository stores it without knowing the
// network; server/core/network_model.h builds the network from it.
#pragma once

#include <cstdint>
#include <string>

namespace tpserve::server {

// The kinds of model the server holds ("tp": ModelSpec, served by the batcher and workers;
// "qm9": NetworkSpec, served by NetworkModels).
inline constexpr char kTensorProductKind[] = "tp";
inline constexpr char kQm9Kind[] = "qm9";

// The QM9 network's structure (nn::Qm9NetworkConfig's fields that a client chooses; the rest
// keep the architecture of issue 19).
struct NetworkSpec {
  int lmax = 1;
  int mul = 128;
  int layers = 6;
  int num_elements = 5;
  int num_targets = 4;
};

inline bool operator==(const NetworkSpec& a, const NetworkSpec& b) {
  return a.lmax == b.lmax && a.mul == b.mul && a.layers == b.layers && a.num_elements == b.num_elements &&
         a.num_targets == b.num_targets;
}

}  // namespace tpserve::server
