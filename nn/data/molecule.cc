#include "nn/data/molecule.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace tpserve::nn::data {
namespace {

constexpr double kCovalentRadius[kNumElements] = {0.31, 0.76, 0.71, 0.66, 0.57};
constexpr const char* kSymbols[kNumElements] = {"H", "C", "N", "O", "F"};
constexpr double kBondTolerance = 1.2;

}  // namespace

int32_t SpeciesOfAtomicNumber(int64_t atomic_number) {
  switch (atomic_number) {
    case 1: return 0;
    case 6: return 1;
    case 7: return 2;
    case 8: return 3;
    case 9: return 4;
    default: return -1;
  }
}

int32_t SpeciesOfSymbol(absl::string_view symbol) {
  for (int32_t s = 0; s < kNumElements; ++s) {
    if (symbol == kSymbols[s]) return s;
  }
  return -1;
}

const char* SymbolOfSpecies(int32_t species) {
  return species >= 0 && species < kNumElements ? kSymbols[species] : "?";
}

double BondCutoff(int32_t a, int32_t b) {
  if (a < 0 || a >= kNumElements || b < 0 || b >= kNumElements) return 0.0;
  return kBondTolerance * (kCovalentRadius[a] + kCovalentRadius[b]);
}

void SetBondsFromDistances(Molecule& m) {
  m.edge_src.clear();
  m.edge_dst.clear();
  const int64_t n = m.num_atoms();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (i == j) continue;
      double d2 = 0;
      for (int k = 0; k < 3; ++k) {
        const double d = m.positions[3 * i + k] - m.positions[3 * j + k];
        d2 += d * d;
      }
      const double cutoff = BondCutoff(m.species[i], m.species[j]);
      if (d2 < cutoff * cutoff) {
        m.edge_src.push_back(static_cast<int32_t>(i));
        m.edge_dst.push_back(static_cast<int32_t>(j));
      }
    }
  }
}

absl::StatusOr<LabeledBatch> MakeBatch(const std::vector<Molecule>& molecules, size_t begin, size_t count) {
  if (begin > molecules.size() || count > molecules.size() - begin) {
    return absl::InvalidArgumentError(absl::StrCat("batch [", begin, ", ", begin + count, ") of ", molecules.size(),
                                                   " molecules: out of range"));
  }
  LabeledBatch out;
  if (count > 0) out.num_targets = static_cast<int>(molecules[begin].targets.size());
  GraphBatch& g = out.graphs;
  g.num_graphs = static_cast<int32_t>(count);
  for (size_t k = 0; k < count; ++k) {
    const Molecule& m = molecules[begin + k];
    if (static_cast<int>(m.targets.size()) != out.num_targets) {
      return absl::InvalidArgumentError(absl::StrCat("molecule '", m.name, "' carries ", m.targets.size(),
                                                     " targets, the batch's first carries ", out.num_targets));
    }
    const int32_t offset = static_cast<int32_t>(g.species.size());
    g.species.insert(g.species.end(), m.species.begin(), m.species.end());
    g.positions.insert(g.positions.end(), m.positions.begin(), m.positions.end());
    g.graph_index.insert(g.graph_index.end(), m.species.size(), static_cast<int32_t>(k));
    for (size_t e = 0; e < m.edge_src.size(); ++e) {
      g.edge_src.push_back(m.edge_src[e] + offset);
      g.edge_dst.push_back(m.edge_dst[e] + offset);
    }
    out.targets.insert(out.targets.end(), m.targets.begin(), m.targets.end());
  }
  return out;
}

}  // namespace tpserve::nn::data
