// tp-bench --qm9_edge: the QM9 network's edge tensor product (per-edge 'uvu' weights; see
// tp_per_sample.h) timed on the CUDA backend, with its bytes moved and the bandwidth floor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tpserve {

struct Qm9EdgeBenchConfig {
  std::vector<int> lmaxes = {1, 2};
  std::vector<int> muls = {128, 256, 512};
  int64_t edges = 950;
  int runs = 100;
  int warmup = 10;
  std::string json_path;  // empty: no JSON
};

// Verifies every case against the float64 CPU backend, then times it. 0 when all verified.
int RunQm9EdgeBench(const Qm9EdgeBenchConfig& config);

}  // namespace tpserve
