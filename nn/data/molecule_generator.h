// QM9-shaped molecules for tests and benchmarks (the real QM9 cannot be downloaded here).
//
// Each molecule has 1 to 9 heavy atoms (C, N, O, F; mostly 9, as in QM9), a 5- or 6-membered
// ring in most of them, some double bonds, and hydrogens on the remaining valence. Atoms are
// placed bond by bond at tabulated bond lengths (0.92-1.53 Angstrom) in near-tetrahedral
// directions, and a placement that comes closer than 0.9 Angstrom, or than its bond cutoff
// + 0.15 Angstrom, to an atom it is not bonded to is drawn again, so that the bonds made from
// distances (SetBondsFromDistances) are exactly the bonds placed, all shorter than 1.9 Angstrom.
// On average (measured over 10,000 molecules, molecule_generator_test) a molecule has ~18 atoms
// and ~35 directed edges (18.04 and 35.35 for seed 7): a batch of 27 is ~486 atoms and ~950
// edges, the scale of issue 19.
//
// Everything is deterministic in the seed (SplitMix64 and arithmetic of our own, no standard
// library distributions), and molecule i of GenerateMolecules(n, seed) does not depend on n.
#pragma once

#include <cstdint>
#include <vector>

#include "nn/data/molecule.h"

namespace tpserve::nn::data {

inline constexpr int kNumSyntheticTargets = 4;

// One molecule, with its 4 SyntheticTargets.
Molecule GenerateMolecule(uint64_t seed);
// `count` molecules, molecule i from a seed mixed of (seed, i).
std::vector<Molecule> GenerateMolecules(int64_t count, uint64_t seed);

// Four smooth, rotation- and translation-invariant functions of the geometry, each O(1):
//   t0 = sum_i c[Z_i] / 10 - 0.5 sum_{bonds} exp(-(d - 1.2)^2 / 0.05)   (c = 1, 4, 5, 6, 7)
//   t1 = radius of gyration (Angstrom)
//   t2 = 0.05 sum_{i<j} c[Z_i] c[Z_j] exp(-d_ij) / num_atoms
//   t3 = |sum_i q[Z_i] (r_i - centroid)|^2 / 4  (q = +0.3, -0.1, -0.3, -0.5, -0.4)
// so that a network can learn them and a training run can lower its loss.
std::vector<double> SyntheticTargets(const Molecule& molecule);

}  // namespace tpserve::nn::data
