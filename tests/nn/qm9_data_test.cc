// tp_qm9_data: the molecule generator (shape, geometry, determinism, invariant targets), batching,
// and the loaders on real files written by the test (.npz by numpy itself, SDF + CSV by hand).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <queue>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nn/data/molecule_generator.h"
#include "nn/data/npz.h"
#include "nn/data/qm9_files.h"
#include "tests/support/random.h"

namespace tpserve::nn::data {
namespace {

namespace fs = std::filesystem;

double Distance(const Molecule& m, int64_t i, int64_t j) {
  double d2 = 0;
  for (int k = 0; k < 3; ++k) {
    const double d = m.positions[3 * i + k] - m.positions[3 * j + k];
    d2 += d * d;
  }
  return std::sqrt(d2);
}

std::string TempDir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("qm9_data_test-", ::getpid(), "-", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

TEST(MoleculeGenerator, MoleculesAreQm9Shaped) {
  uint64_t seed = 0;
  std::mt19937_64 rng = testing::FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  const std::vector<Molecule> molecules = GenerateMolecules(3000, rng());
  double atoms = 0, edges = 0;
  for (const Molecule& m : molecules) {
    SCOPED_TRACE(m.name);
    atoms += static_cast<double>(m.num_atoms());
    edges += static_cast<double>(m.num_edges());
    int heavy = 0;
    for (int32_t s : m.species) {
      ASSERT_GE(s, 0);
      ASSERT_LT(s, kNumElements);
      heavy += s != 0;
    }
    EXPECT_GE(heavy, 1);
    EXPECT_LE(heavy, 9);
    for (int64_t i = 0; i < m.num_atoms(); ++i) {
      for (int64_t j = i + 1; j < m.num_atoms(); ++j) ASSERT_GE(Distance(m, i, j), 0.9 - 1e-12);
    }
    // Edges: both ways, between bonded atoms at bond lengths, all inside the radial cutoff 1.9.
    std::set<std::pair<int32_t, int32_t>> edge_set;
    for (int64_t e = 0; e < m.num_edges(); ++e) edge_set.insert({m.edge_src[e], m.edge_dst[e]});
    std::vector<std::vector<int32_t>> adjacency(m.num_atoms());
    for (int64_t e = 0; e < m.num_edges(); ++e) {
      const double d = Distance(m, m.edge_src[e], m.edge_dst[e]);
      ASSERT_GT(d, 0.85);
      ASSERT_LT(d, 1.9);
      ASSERT_TRUE(edge_set.count({m.edge_dst[e], m.edge_src[e]}));
      adjacency[m.edge_src[e]].push_back(m.edge_dst[e]);
    }
    // One molecule: every atom reachable from the first.
    std::vector<bool> seen(m.num_atoms(), false);
    std::queue<int32_t> todo;
    todo.push(0);
    seen[0] = true;
    int64_t reached = 1;
    while (!todo.empty()) {
      const int32_t a = todo.front();
      todo.pop();
      for (int32_t b : adjacency[a]) {
        if (!seen[b]) seen[b] = true, ++reached, todo.push(b);
      }
    }
    EXPECT_EQ(reached, m.num_atoms());
    ASSERT_EQ(m.targets.size(), static_cast<size_t>(kNumSyntheticTargets));
  }
  // The scale of issue 19: 27 molecules ~ 486 atoms and ~950 directed edges.
  EXPECT_NEAR(atoms / molecules.size(), 18.0, 1.0);
  EXPECT_NEAR(edges / molecules.size(), 35.2, 2.0);
}

TEST(MoleculeGenerator, SameSeedSameMolecules_OtherSeedOthers) {
  const std::vector<Molecule> a = GenerateMolecules(20, 42), b = GenerateMolecules(30, 42), c = GenerateMolecules(20, 43);
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].species, b[i].species);
    EXPECT_EQ(a[i].positions, b[i].positions);
    EXPECT_EQ(a[i].edge_src, b[i].edge_src);
    EXPECT_EQ(a[i].targets, b[i].targets);
    differ += a[i].positions != c[i].positions;
  }
  EXPECT_EQ(differ, 20);
}

TEST(MoleculeGenerator, TargetsAreInvariantUnderRotationAndTranslation) {
  uint64_t seed = 0;
  std::mt19937_64 rng = testing::FreshRng(&seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  for (Molecule m : GenerateMolecules(20, rng())) {
    const std::vector<double> before = SyntheticTargets(m);
    // A random rotation (QR of a Gaussian matrix via Gram-Schmidt) and shift.
    std::vector<double> g = testing::RandomNormal(12, rng);
    double q[3][3];
    for (int r = 0; r < 3; ++r) {
      for (int k = 0; k < 3; ++k) q[r][k] = g[3 * r + k];
      for (int p = 0; p < r; ++p) {
        double dot = 0;
        for (int k = 0; k < 3; ++k) dot += q[r][k] * q[p][k];
        for (int k = 0; k < 3; ++k) q[r][k] -= dot * q[p][k];
      }
      const double norm = std::sqrt(q[r][0] * q[r][0] + q[r][1] * q[r][1] + q[r][2] * q[r][2]);
      for (int k = 0; k < 3; ++k) q[r][k] /= norm;
    }
    for (int64_t i = 0; i < m.num_atoms(); ++i) {
      double p[3];
      for (int r = 0; r < 3; ++r) p[r] = q[r][0] * m.positions[3 * i] + q[r][1] * m.positions[3 * i + 1] + q[r][2] * m.positions[3 * i + 2];
      for (int r = 0; r < 3; ++r) m.positions[3 * i + r] = p[r] + g[9 + r];
    }
    const std::vector<double> after = SyntheticTargets(m);
    for (int t = 0; t < kNumSyntheticTargets; ++t) EXPECT_NEAR(after[t], before[t], 1e-9 * (1 + std::abs(before[t])));
  }
}

TEST(MakeBatch, ConcatenatesMoleculesIntoAValidGraphBatch) {
  const std::vector<Molecule> molecules = GenerateMolecules(40, 5);
  absl::StatusOr<LabeledBatch> batch = MakeBatch(molecules, 10, 27);
  ASSERT_TRUE(batch.ok()) << batch.status();
  const GraphBatch& g = batch->graphs;
  EXPECT_EQ(g.num_graphs, 27);
  EXPECT_TRUE(ValidateGraphBatch(g).ok()) << ValidateGraphBatch(g);
  int64_t node = 0, edge = 0;
  for (int k = 0; k < 27; ++k) {
    const Molecule& m = molecules[10 + k];
    for (int64_t a = 0; a < m.num_atoms(); ++a) {
      EXPECT_EQ(g.graph_index[node + a], k);
      EXPECT_EQ(g.species[node + a], m.species[a]);
      EXPECT_EQ(g.positions[3 * (node + a) + 2], m.positions[3 * a + 2]);
    }
    for (int64_t e = 0; e < m.num_edges(); ++e) {
      EXPECT_EQ(g.edge_src[edge + e], m.edge_src[e] + node);
      EXPECT_EQ(g.edge_dst[edge + e], m.edge_dst[e] + node);
    }
    for (int t = 0; t < 4; ++t) EXPECT_EQ(batch->targets[4 * k + t], m.targets[t]);
    node += m.num_atoms();
    edge += m.num_edges();
  }
  EXPECT_EQ(g.num_nodes(), node);
  EXPECT_EQ(g.num_edges(), edge);
  EXPECT_FALSE(MakeBatch(molecules, 30, 27).ok());
  std::vector<Molecule> mixed = {molecules[0], molecules[1]};
  mixed[1].targets.pop_back();
  absl::StatusOr<LabeledBatch> bad = MakeBatch(mixed, 0, 2);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(mixed[1].name), std::string::npos) << bad.status();
}

// ---- .npz, written by numpy ---------------------------------------------------------------------

constexpr int kAtomicNumber[] = {1, 6, 7, 8, 9};

// Writes the molecules as text and has python3 + numpy turn them into an .npz of the given layout.
void WriteNpzWithNumpy(const std::vector<Molecule>& molecules, const std::string& dir, const std::string& layout,
                       const std::string& npz_path, int bad_atomic_number = 0) {
  std::string text;
  for (const Molecule& m : molecules) {
    absl::StrAppend(&text, m.num_atoms());
    for (double t : m.targets) absl::StrAppendFormat(&text, " %.17g", t);
    text += "\n";
    for (int64_t a = 0; a < m.num_atoms(); ++a) {
      const int z = bad_atomic_number != 0 && a == 1 ? bad_atomic_number : kAtomicNumber[m.species[a]];
      absl::StrAppendFormat(&text, "%d %.17g %.17g %.17g\n", z, m.positions[3 * a], m.positions[3 * a + 1],
                            m.positions[3 * a + 2]);
    }
  }
  WriteFile(dir + "/molecules.txt", text);
  const std::string script = R"PY(
import sys, numpy as np
src, layout, out = sys.argv[1:4]
lines = open(src).read().split("\n")
mols, i = [], 0
while i < len(lines) and lines[i].strip():
    head = lines[i].split(); n = int(head[0]); targets = [float(x) for x in head[1:]]
    atoms = [lines[i + 1 + k].split() for k in range(n)]
    mols.append((np.array([int(a[0]) for a in atoms]), np.array([[float(x) for x in a[1:]] for a in atoms]), targets))
    i += 1 + n
names = ["mu", "alpha", "homo", "lumo"]
t = {name: np.array([m[2][k] for m in mols]) for k, name in enumerate(names)}
if layout == "concatenated":
    np.savez(out, N=np.array([len(m[0]) for m in mols], dtype=np.int64), Z=np.concatenate([m[0] for m in mols]).astype(np.int64),
             R=np.concatenate([m[1] for m in mols]), **t)
else:
    width = max(len(m[0]) for m in mols)
    Z = np.zeros((len(mols), width), dtype=np.uint8); R = np.zeros((len(mols), width, 3), dtype=np.float32)
    for k, m in enumerate(mols):
        Z[k, :len(m[0])] = m[0]; R[k, :len(m[0])] = m[1]
    t = {name.upper() if name == "homo" else name: v for name, v in t.items()}
    np.savez_compressed(out, charges=Z, positions=R, num_atoms=np.array([len(m[0]) for m in mols], dtype=np.int32), **t)
)PY";
  WriteFile(dir + "/write_npz.py", script);
  const std::string command = absl::StrCat(TP_PYTHON3, " ", dir, "/write_npz.py ", dir, "/molecules.txt ", layout, " ", npz_path);
  ASSERT_EQ(std::system(command.c_str()), 0) << command << " (python3-numpy comes from tools/install-deps.sh)";
}

void ExpectSameMolecules(const std::vector<Molecule>& got, const std::vector<Molecule>& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("molecule ", i));
    EXPECT_EQ(got[i].species, want[i].species);
    ASSERT_EQ(got[i].positions.size(), want[i].positions.size());
    for (size_t k = 0; k < got[i].positions.size(); ++k) EXPECT_NEAR(got[i].positions[k], want[i].positions[k], tolerance);
    EXPECT_EQ(got[i].edge_src, want[i].edge_src);
    EXPECT_EQ(got[i].edge_dst, want[i].edge_dst);
    ASSERT_EQ(got[i].targets.size(), want[i].targets.size());
    for (size_t k = 0; k < got[i].targets.size(); ++k) EXPECT_NEAR(got[i].targets[k], want[i].targets[k], 1e-12);
  }
}

TEST(Qm9Npz, LoadsNumpysConcatenatedLayout) {
  const std::string dir = TempDir("npz-concat");
  const std::vector<Molecule> molecules = GenerateMolecules(12, 99);
  WriteNpzWithNumpy(molecules, dir, "concatenated", dir + "/qm9.npz");
  absl::StatusOr<std::vector<Molecule>> loaded = LoadQm9(dir);  // the directory form finds qm9.npz
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameMolecules(*loaded, molecules, 0.0);
  Qm9LoadOptions first5;
  first5.max_molecules = 5;
  first5.target_names = {"lumo"};
  absl::StatusOr<std::vector<Molecule>> some = LoadQm9Npz(dir + "/qm9.npz", first5);
  ASSERT_TRUE(some.ok()) << some.status();
  ASSERT_EQ(some->size(), 5u);
  EXPECT_EQ((*some)[4].targets, std::vector<double>{molecules[4].targets[3]});
  fs::remove_all(dir);
}

TEST(Qm9Npz, LoadsNumpysPaddedCompressedLayout) {
  const std::string dir = TempDir("npz-padded");
  const std::vector<Molecule> molecules = GenerateMolecules(9, 123);
  WriteNpzWithNumpy(molecules, dir, "padded", dir + "/padded.npz");
  // Deflated members, uint8 charges, float32 positions, "HOMO" matched ignoring case.
  absl::StatusOr<std::vector<Molecule>> loaded = LoadQm9Npz(dir + "/padded.npz");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameMolecules(*loaded, molecules, 1e-6);
  fs::remove_all(dir);
}

TEST(Qm9Npz, RejectsUnknownElementsMissingKeysAndDamage) {
  const std::string dir = TempDir("npz-bad");
  const std::vector<Molecule> molecules = GenerateMolecules(3, 7);
  WriteNpzWithNumpy(molecules, dir, "concatenated", dir + "/cl.npz", /*bad_atomic_number=*/17);
  absl::StatusOr<std::vector<Molecule>> chlorine = LoadQm9Npz(dir + "/cl.npz");
  EXPECT_EQ(chlorine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(chlorine.status().message().find("molecule 0, atom 1: atomic number 17"), std::string::npos)
      << chlorine.status();
  EXPECT_NE(chlorine.status().message().find("cl.npz"), std::string::npos) << chlorine.status();

  WriteNpzWithNumpy(molecules, dir, "concatenated", dir + "/ok.npz");
  Qm9LoadOptions gap;
  gap.target_names = {"gap"};
  absl::StatusOr<std::vector<Molecule>> missing = LoadQm9Npz(dir + "/ok.npz", gap);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("no target array 'gap'"), std::string::npos) << missing.status();

  // Cut short: the end-of-central-directory record is gone.
  std::ifstream in(dir + "/ok.npz", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  WriteFile(dir + "/cut.npz", bytes.substr(0, bytes.size() / 2));
  absl::StatusOr<std::vector<Molecule>> cut = LoadQm9Npz(dir + "/cut.npz");
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cut.status().message().find("cut.npz"), std::string::npos) << cut.status();
  // One flipped byte inside a member: its CRC-32 no longer matches.
  std::string flipped = bytes;
  const size_t at = flipped.rfind("\x93NUMPY") + 140;  // inside the last member's data
  flipped[at] = static_cast<char>(flipped[at] ^ 0x5a);
  WriteFile(dir + "/flipped.npz", flipped);
  absl::StatusOr<std::vector<Molecule>> damaged = LoadQm9Npz(dir + "/flipped.npz");
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(damaged.status().message().find("CRC-32"), std::string::npos) << damaged.status();
  EXPECT_EQ(LoadQm9Npz(dir + "/nothing.npz").status().code(), absl::StatusCode::kNotFound);
  fs::remove_all(dir);
}

// ---- SDF + CSV ------------------------------------------------------------------------------

// The molecules as V2000 records (bonds: each undirected edge once) and their CSV.
void WriteSdfAndCsv(const std::vector<Molecule>& molecules, const std::string& sdf, const std::string& csv,
                    const std::string& bad_symbol = "") {
  std::string text, table = "mol_id,A,B,C,mu,alpha,homo,lumo,gap\n";
  const char* kSymbol[] = {"H", "C", "N", "O", "F"};
  for (size_t i = 0; i < molecules.size(); ++i) {
    const Molecule& m = molecules[i];
    std::vector<std::pair<int32_t, int32_t>> bonds;
    for (int64_t e = 0; e < m.num_edges(); ++e) {
      if (m.edge_src[e] < m.edge_dst[e]) bonds.emplace_back(m.edge_src[e], m.edge_dst[e]);
    }
    absl::StrAppendFormat(&text, "gdb_%d\n     RDKit          3D\n\n%3d%3d  0  0  0  0  0  0  0  0999 V2000\n", i + 1,
                          m.num_atoms(), bonds.size());
    for (int64_t a = 0; a < m.num_atoms(); ++a) {
      const std::string symbol = !bad_symbol.empty() && i == 1 && a == 2 ? bad_symbol : kSymbol[m.species[a]];
      absl::StrAppendFormat(&text, "%10.4f%10.4f%10.4f %-3s 0  0  0  0  0  0  0  0  0  0  0  0\n", m.positions[3 * a],
                            m.positions[3 * a + 1], m.positions[3 * a + 2], symbol);
    }
    for (const auto& [a, b] : bonds) absl::StrAppendFormat(&text, "%3d%3d  1  0\n", a + 1, b + 1);
    text += "M  END\n$$$$\n";
  }
  // Rows in reverse order: records are matched by mol_id, not by position.
  for (size_t i = molecules.size(); i-- > 0;) {
    const std::vector<double>& t = molecules[i].targets;
    absl::StrAppendFormat(&table, "gdb_%d,1.0,2.0,3.0,%.17g,%.17g,%.17g,%.17g,0.25\n", i + 1, t[0], t[1], t[2], t[3]);
  }
  WriteFile(sdf, text);
  WriteFile(csv, table);
}

TEST(Qm9Sdf, LoadsRecordsBondsAndTargetsByMolId) {
  const std::string dir = TempDir("sdf");
  const std::vector<Molecule> molecules = GenerateMolecules(15, 2024);
  WriteSdfAndCsv(molecules, dir + "/gdb9.sdf", dir + "/gdb9.sdf.csv");
  absl::StatusOr<std::vector<Molecule>> loaded = LoadQm9(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), molecules.size());
  for (size_t i = 0; i < molecules.size(); ++i) {
    EXPECT_EQ((*loaded)[i].name, absl::StrCat("gdb_", i + 1));
    // Edges from the bond block (both ways) are the generator's edges, as sets.
    std::set<std::pair<int32_t, int32_t>> got, want;
    for (int64_t e = 0; e < (*loaded)[i].num_edges(); ++e) got.insert({(*loaded)[i].edge_src[e], (*loaded)[i].edge_dst[e]});
    for (int64_t e = 0; e < molecules[i].num_edges(); ++e) want.insert({molecules[i].edge_src[e], molecules[i].edge_dst[e]});
    EXPECT_EQ(got, want);
    EXPECT_EQ((*loaded)[i].num_edges(), molecules[i].num_edges());
    (*loaded)[i].edge_src = molecules[i].edge_src;
    (*loaded)[i].edge_dst = molecules[i].edge_dst;
  }
  ExpectSameMolecules(*loaded, molecules, 5e-5);  // %10.4f
  Qm9LoadOptions gap;
  gap.target_names = {"GAP"};
  absl::StatusOr<std::vector<Molecule>> gaps = LoadQm9Sdf(dir + "/gdb9.sdf", dir + "/gdb9.sdf.csv", gap);
  ASSERT_TRUE(gaps.ok()) << gaps.status();
  EXPECT_EQ((*gaps)[3].targets, std::vector<double>{0.25});
  fs::remove_all(dir);
}

TEST(Qm9Sdf, ErrorsNameFileLineAndWhatWasExpected) {
  const std::string dir = TempDir("sdf-bad");
  const std::vector<Molecule> molecules = GenerateMolecules(3, 1);
  WriteSdfAndCsv(molecules, dir + "/cl.sdf", dir + "/cl.sdf.csv", "Cl");
  absl::StatusOr<std::vector<Molecule>> chlorine = LoadQm9(dir + "/cl.sdf");
  EXPECT_EQ(chlorine.status().code(), absl::StatusCode::kInvalidArgument);
  // Record 2's third atom: 4 header lines of record 2 after record 1's lines.
  const int64_t line = (4 + molecules[0].num_atoms() + molecules[0].num_edges() / 2 + 2) + 4 + 3;
  EXPECT_NE(chlorine.status().message().find(absl::StrCat("cl.sdf:", line, ": atom 3: element 'Cl'")), std::string::npos)
      << chlorine.status();

  WriteSdfAndCsv(molecules, dir + "/ok.sdf", dir + "/ok.sdf.csv");
  Qm9LoadOptions cv;
  cv.target_names = {"cv"};
  absl::StatusOr<std::vector<Molecule>> no_column = LoadQm9Sdf(dir + "/ok.sdf", dir + "/ok.sdf.csv", cv);
  EXPECT_EQ(no_column.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_column.status().message().find("ok.sdf.csv:1: no column 'cv'"), std::string::npos) << no_column.status();

  WriteFile(dir + "/counts.sdf", "gdb_1\n\n\n  x  y\n");
  absl::StatusOr<std::vector<Molecule>> counts = LoadQm9Sdf(dir + "/counts.sdf", "", Qm9LoadOptions{{}, 0});
  EXPECT_EQ(counts.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(counts.status().message().find("counts.sdf:4: record 1"), std::string::npos) << counts.status();

  std::ifstream in(dir + "/ok.sdf");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  WriteFile(dir + "/cut.sdf", text.substr(0, text.size() - 6));  // no closing $$$$
  EXPECT_EQ(LoadQm9Sdf(dir + "/cut.sdf", dir + "/ok.sdf.csv").status().code(), absl::StatusCode::kInvalidArgument);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tpserve::nn::data
