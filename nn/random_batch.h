// Random molecule-like batches for the tests and the CPU benchmark of nn/: chains of atoms with
// bond-like distances (not chemistry: species are drawn uniformly), edges both ways between atoms
// closer than 1.6 A, so every edge lies inside the radial cutoff (1.9 A).
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "nn/graph_batch.h"

namespace tpserve::nn {

// num_graphs chains of 2..max_atoms atoms (random species, bonds of 0.95..1.55 A in random
// directions, no two atoms closer than 0.9 A), edges both ways between atoms closer than 1.6 A.
inline GraphBatch RandomChainBatch(std::mt19937_64& rng, int num_graphs, int max_atoms, int num_elements = 5) {
  GraphBatch batch;
  batch.num_graphs = num_graphs;
  std::uniform_int_distribution<int> atoms_dist(2, max_atoms), species_dist(0, num_elements - 1);
  std::uniform_real_distribution<double> bond(0.95, 1.55);
  std::normal_distribution<double> normal;
  for (int g = 0; g < num_graphs; ++g) {
    const int base = static_cast<int>(batch.num_nodes());
    const int atoms = atoms_dist(rng);
    std::vector<double> p = {normal(rng), normal(rng), normal(rng)};
    for (int a = 0; a < atoms; ++a) {
      batch.species.push_back(species_dist(rng));
      batch.graph_index.push_back(g);
      batch.positions.insert(batch.positions.end(), p.begin(), p.end());
      for (int attempt = 0; attempt < 100; ++attempt) {  // the next atom, away from the others
        double d[3] = {normal(rng), normal(rng), normal(rng)};
        const double norm = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
        const double length = bond(rng);
        std::vector<double> q = {p[0] + length * d[0] / norm, p[1] + length * d[1] / norm, p[2] + length * d[2] / norm};
        bool clear = true;
        for (int b = base; b <= base + a; ++b) {
          const double* r = &batch.positions[3 * b];
          clear &= std::hypot(q[0] - r[0], q[1] - r[1], q[2] - r[2]) > 0.9;
        }
        if (clear) {
          p = q;
          break;
        }
      }
    }
    for (int a = base; a < base + atoms; ++a) {
      for (int b = base; b < base + atoms; ++b) {
        const double* pa = &batch.positions[3 * a];
        const double* pb = &batch.positions[3 * b];
        if (a != b && std::hypot(pa[0] - pb[0], pa[1] - pb[1], pa[2] - pb[2]) < 1.6) {
          batch.edge_src.push_back(a);
          batch.edge_dst.push_back(b);
        }
      }
    }
  }
  return batch;
}

}  // namespace tpserve::nn
