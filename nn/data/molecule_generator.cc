#include "nn/data/molecule_generator.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace tpserve::nn::data {
namespace {

using Vec3 = std::array<double, 3>;

enum : int32_t { kH = 0, kC = 1, kN = 2, kO = 3, kF = 4 };
constexpr int kValence[kNumElements] = {1, 4, 3, 2, 1};
constexpr double kPi = 3.14159265358979323846;

// SplitMix64: a fully specified generator, so a seed means the same molecule everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  int Below(int n) { return static_cast<int>(Next() % static_cast<uint64_t>(n)); }
  Vec3 UnitVector() {
    const double z = Uniform(-1.0, 1.0), phi = Uniform(0.0, 2 * kPi), r = std::sqrt(std::max(0.0, 1 - z * z));
    return {r * std::cos(phi), r * std::sin(phi), z};
  }

 private:
  uint64_t state_;
};

uint64_t MixSeed(uint64_t seed, uint64_t index) {
  Rng rng(seed ^ (index * 0xD1B54A32D192ED03ull));
  return rng.Next();
}

Vec3 Add(const Vec3& a, const Vec3& b) { return {a[0] + b[0], a[1] + b[1], a[2] + b[2]}; }
Vec3 Scale(const Vec3& a, double s) { return {a[0] * s, a[1] * s, a[2] * s}; }
double Dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
Vec3 Cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
double Norm(const Vec3& a) { return std::sqrt(Dot(a, a)); }
Vec3 Normalized(const Vec3& a) {
  const double n = Norm(a);
  return n > 1e-9 ? Scale(a, 1.0 / n) : Vec3{1, 0, 0};
}
// A unit vector perpendicular to unit `d`, at a random azimuth.
Vec3 RandomPerpendicular(const Vec3& d, Rng& rng) {
  for (;;) {
    Vec3 r = rng.UnitVector();
    Vec3 p = Add(r, Scale(d, -Dot(r, d)));
    if (Norm(p) > 0.1) return Normalized(p);
  }
}

// Single-bond lengths (Angstrom) of the pairs the generator makes; double bonds are ~0.12 shorter.
double BondLength(int32_t a, int32_t b) {
  if (a > b) std::swap(a, b);
  static constexpr double kLength[kNumElements][kNumElements] = {
      // H     C     N     O     F
      {0.74, 1.09, 1.01, 0.96, 0.92},  // H
      {0.0, 1.53, 1.47, 1.43, 1.35},   // C
      {0.0, 0.0, 1.45, 1.40, 1.36},    // N
      {0.0, 0.0, 0.0, 1.48, 1.42},     // O
      {0.0, 0.0, 0.0, 0.0, 1.42},      // F
  };
  return kLength[a][b];
}

struct Builder {
  std::vector<int32_t> species;
  std::vector<Vec3> positions;
  std::vector<std::vector<int>> neighbors;
  std::vector<int> bond_order_sum;  // sum of bond orders at each atom
  std::vector<std::pair<int, int>> heavy_bonds;

  int free_valence(int i) const { return kValence[species[i]] - bond_order_sum[i]; }

  int AddAtom(int32_t s, const Vec3& p) {
    species.push_back(s);
    positions.push_back(p);
    neighbors.emplace_back();
    bond_order_sum.push_back(0);
    return static_cast<int>(species.size()) - 1;
  }
  void Bond(int a, int b) {
    neighbors[a].push_back(b);
    neighbors[b].push_back(a);
    ++bond_order_sum[a];
    ++bond_order_sum[b];
    if (species[a] != kH && species[b] != kH) heavy_bonds.emplace_back(a, b);
  }
  // True when an atom of species `s` at `p`, bonded to `parent` only, keeps its distance from
  // every other atom (so distances give back exactly the placed bonds).
  bool Fits(int32_t s, const Vec3& p, int parent) const {
    for (size_t q = 0; q < species.size(); ++q) {
      if (static_cast<int>(q) == parent) continue;
      const double d = Norm(Add(p, Scale(positions[q], -1)));
      if (d < std::max(0.9, BondCutoff(s, species[q]) + 0.15)) return false;
    }
    return true;
  }
  // A direction for parent's next bond, near-tetrahedral to the bonds it has.
  Vec3 NextDirection(int parent, Rng& rng) const {
    std::vector<Vec3> d;
    for (int q : neighbors[parent]) d.push_back(Normalized(Add(positions[q], Scale(positions[parent], -1))));
    Vec3 dir;
    if (d.empty()) {
      dir = rng.UnitVector();
    } else if (d.size() == 1) {
      const double theta = 109.47 * kPi / 180;
      dir = Add(Scale(d[0], std::cos(theta)), Scale(RandomPerpendicular(d[0], rng), std::sin(theta)));
    } else if (d.size() == 2) {
      const Vec3 bisector = Add(d[0], d[1]);
      const Vec3 normal = Cross(d[0], d[1]);
      const Vec3 back = Norm(bisector) > 1e-3 ? Normalized(Scale(bisector, -1)) : RandomPerpendicular(d[0], rng);
      const Vec3 side = Norm(normal) > 1e-3 ? Normalized(normal) : RandomPerpendicular(back, rng);
      const double alpha = 54.74 * kPi / 180;
      dir = Add(Scale(back, std::cos(alpha)), Scale(side, (rng.Below(2) ? 1 : -1) * std::sin(alpha)));
    } else {
      Vec3 sum{0, 0, 0};
      for (const Vec3& v : d) sum = Add(sum, v);
      dir = Norm(sum) > 1e-3 ? Normalized(Scale(sum, -1)) : rng.UnitVector();
    }
    // A little disorder, as in relaxed geometries of real molecules.
    const Vec3 jitter = rng.UnitVector();
    return Normalized(Add(dir, Scale(jitter, 0.08)));
  }
  // Attaches a new atom of species s to parent; false (nothing added) when no placement fits.
  bool Attach(int parent, int32_t s, Rng& rng) {
    for (int attempt = 0; attempt < 16; ++attempt) {
      const double length = BondLength(species[parent], s) * rng.Uniform(0.98, 1.02);
      const Vec3 p = Add(positions[parent], Scale(NextDirection(parent, rng), length));
      if (!Fits(s, p, parent)) continue;
      const int atom = AddAtom(s, p);
      Bond(parent, atom);
      return true;
    }
    return false;
  }
};

int32_t DrawHeavyElement(Rng& rng) {
  const double u = rng.Uniform();
  if (u < 0.70) return kC;
  if (u < 0.82) return kN;
  if (u < 0.97) return kO;
  return kF;
}

int DrawHeavyCount(Rng& rng) {
  const double u = rng.Uniform();
  if (u < 0.70) return 9;
  if (u < 0.88) return 8;
  if (u < 0.96) return 7;
  return 1 + rng.Below(6);
}

// A planar 5- or 6-membered ring of C, N and O (no two O adjacent, as in QM9's rings).
void PlaceRing(Builder& b, int size, Rng& rng) {
  const double side = rng.Uniform(1.40, 1.48);
  const double radius = side / (2 * std::sin(kPi / size));
  const Vec3 u = rng.UnitVector();
  const Vec3 v = RandomPerpendicular(u, rng);
  for (int k = 0; k < size; ++k) {
    int32_t s = kC;
    const double r = rng.Uniform();
    if (r < 0.15) s = kN;
    else if (r < 0.27 && k > 0 && b.species.back() != kO && !(k == size - 1 && b.species.front() == kO)) s = kO;
    const double phi = 2 * kPi * k / size;
    b.AddAtom(s, Add(Scale(u, radius * std::cos(phi)), Scale(v, radius * std::sin(phi))));
  }
  for (int k = 0; k < size; ++k) b.Bond(k, (k + 1) % size);
}

}  // namespace

Molecule GenerateMolecule(uint64_t seed) {
  Rng rng(seed);
  Builder b;
  const int heavy = DrawHeavyCount(rng);
  if (heavy >= 5 && rng.Uniform() < 0.65) {
    PlaceRing(b, heavy >= 6 && rng.Below(2) ? 6 : 5, rng);
  } else {
    const double u = rng.Uniform();
    b.AddAtom(u < 0.85 ? kC : (u < 0.93 ? kN : kO), {0, 0, 0});
  }
  // The heavy skeleton, bond by bond.
  int failures = 0;
  while (static_cast<int>(b.species.size()) < heavy && failures < 32) {
    int32_t s = DrawHeavyElement(rng);
    std::vector<int> parents;
    for (int i = 0; i < static_cast<int>(b.species.size()); ++i) {
      if (b.free_valence(i) < 1) continue;
      if (s == kF && b.species[i] != kC) continue;  // F only on carbon
      if (s == kO && b.species[i] == kO) continue;  // no peroxides
      parents.push_back(i);
    }
    if (parents.empty() || !b.Attach(parents[rng.Below(static_cast<int>(parents.size()))], s, rng)) ++failures;
  }
  // Unsaturation: some bonds become double where both ends have valence to spare.
  for (const auto& [x, y] : b.heavy_bonds) {
    if (b.free_valence(x) >= 1 && b.free_valence(y) >= 1 && rng.Uniform() < 0.7) {
      ++b.bond_order_sum[x];
      ++b.bond_order_sum[y];
    }
  }
  // Hydrogens on the remaining valence (a few slots stay empty when no placement fits).
  const int heavy_placed = static_cast<int>(b.species.size());
  for (int i = 0; i < heavy_placed; ++i) {
    while (b.free_valence(i) > 0) {
      if (!b.Attach(i, kH, rng)) {
        ++b.bond_order_sum[i];  // give up this slot
      }
    }
  }
  Molecule m;
  m.name = absl::StrCat("gen-", seed);
  m.species = b.species;
  for (const Vec3& p : b.positions) m.positions.insert(m.positions.end(), p.begin(), p.end());
  SetBondsFromDistances(m);
  m.targets = SyntheticTargets(m);
  return m;
}

std::vector<Molecule> GenerateMolecules(int64_t count, uint64_t seed) {
  std::vector<Molecule> molecules;
  molecules.reserve(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (int64_t i = 0; i < count; ++i) molecules.push_back(GenerateMolecule(MixSeed(seed, static_cast<uint64_t>(i))));
  return molecules;
}

std::vector<double> SyntheticTargets(const Molecule& m) {
  static constexpr double kWeight[kNumElements] = {1, 4, 5, 6, 7};
  static constexpr double kCharge[kNumElements] = {0.3, -0.1, -0.3, -0.5, -0.4};
  const int64_t n = m.num_atoms();
  std::vector<double> t(kNumSyntheticTargets, 0.0);
  if (n == 0) return t;
  auto distance = [&m](int64_t i, int64_t j) {
    double d2 = 0;
    for (int k = 0; k < 3; ++k) {
      const double d = m.positions[3 * i + k] - m.positions[3 * j + k];
      d2 += d * d;
    }
    return std::sqrt(d2);
  };
  Vec3 centroid{0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 3; ++k) centroid[k] += m.positions[3 * i + k] / static_cast<double>(n);
  }
  double gyration = 0, coupling = 0;
  Vec3 dipole{0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = m.species[i];
    t[0] += kWeight[s] / 10;
    for (int k = 0; k < 3; ++k) {
      const double r = m.positions[3 * i + k] - centroid[k];
      gyration += r * r / static_cast<double>(n);
      dipole[k] += kCharge[s] * r;
    }
    for (int64_t j = i + 1; j < n; ++j) coupling += kWeight[s] * kWeight[m.species[j]] * std::exp(-distance(i, j));
  }
  for (int64_t e = 0; e < m.num_edges(); ++e) {
    if (m.edge_src[e] < m.edge_dst[e]) {
      const double d = distance(m.edge_src[e], m.edge_dst[e]) - 1.2;
      t[0] -= 0.5 * std::exp(-d * d / 0.05);
    }
  }
  t[1] = std::sqrt(gyration);
  t[2] = 0.05 * coupling / static_cast<double>(n);
  t[3] = Dot(dipole, dipole) / 4;
  return t;
}

}  // namespace tpserve::nn::data
