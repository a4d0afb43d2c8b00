// One molecule of a QM9-style data set (H, C, N, O, F), and the concatenation of molecules into
// the network's GraphBatch. The generator (molecule_generator.h) and the file loaders
// (qm9_files.h) both produce these.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nn/graph_batch.h"

namespace tpserve::nn::data {

inline constexpr int kNumElements = 5;  // species 0..4 = H, C, N, O, F

struct Molecule {
  std::string name;                  // "gen-<seed>", "gdb_1", "npz[17]", ... (for error messages)
  std::vector<int32_t> species;      // [num_atoms], 0..4 = H, C, N, O, F
  std::vector<double> positions;     // [num_atoms * 3], Angstrom
  std::vector<int32_t> edge_src;     // directed edges, each bond both ways
  std::vector<int32_t> edge_dst;
  std::vector<double> targets;       // [num_targets]; empty when the data carries none

  int64_t num_atoms() const { return static_cast<int64_t>(species.size()); }
  int64_t num_edges() const { return static_cast<int64_t>(edge_src.size()); }
};

// Species of an atomic number (1, 6, 7, 8, 9) or of an element symbol ("H", "C", ...; case as
// written in SDF files); -1 for anything else.
int32_t SpeciesOfAtomicNumber(int64_t atomic_number);
int32_t SpeciesOfSymbol(absl::string_view symbol);
const char* SymbolOfSpecies(int32_t species);

// Two atoms are bonded when closer than 1.2 x the sum of their covalent radii (H 0.31, C 0.76,
// N 0.71, O 0.66, F 0.57 Angstrom). Every such cutoff is below 1.9 Angstrom, the network's
// max_radius, so every edge made from distances lies inside the radial basis.
double BondCutoff(int32_t species_a, int32_t species_b);
// Replaces the molecule's edges by those of BondsFromDistances: both directions of every bonded
// pair, in (src, dst) lexicographic order.
void SetBondsFromDistances(Molecule& molecule);

// Molecules [begin, begin + count) concatenated: node indices shifted per molecule, graph_index
// the molecule's position in the batch; targets concatenated graph-major ([num_graphs *
// num_targets]). INVALID_ARGUMENT when the range is out of bounds or the molecules carry
// different numbers of targets (naming the first that differs).
struct LabeledBatch {
  GraphBatch graphs;
  std::vector<double> targets;  // empty when the molecules carry none
  int num_targets = 0;
};
absl::StatusOr<LabeledBatch> MakeBatch(const std::vector<Molecule>& molecules, size_t begin, size_t count);

}  // namespace tpserve::nn::data
