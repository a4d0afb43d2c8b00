// tpctl qm9 against an in-process server: create a network model, train it on generated molecules
// (the printed loss goes down over 20 steps) and on a data directory (SDF + CSV), predict to the
// terminal and to .npy, and the errors of a wrong kind or missing data.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/npy.h"
#include "gtest/gtest.h"
#include "nn/data/molecule_generator.h"
#include "tests/server/server_test_util.h"

#ifndef TPCTL_PATH
#error "TPCTL_PATH must name the tpctl binary"
#endif

namespace tpserve::testing {
namespace {

struct Ran {
  int code = -1;
  std::string out;  // stdout and stderr
};

Ran Tpctl(const std::string& args) {
  Ran ran;
  const std::string command = std::string(TPCTL_PATH) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return ran;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) ran.out.append(buffer, n);
  const int rc = pclose(pipe);
  ran.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return ran;
}

// The losses of "step k  loss X  version V" lines, in order.
std::vector<double> Losses(const std::string& out) {
  std::vector<double> losses;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    double loss = 0;
    if (words.size() == 6 && words[0] == "step" && words[2] == "loss" && absl::SimpleAtod(words[3], &loss)) {
      losses.push_back(loss);
    }
  }
  return losses;
}

class TpctlQm9Test : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = TestServer::Start();
    ASSERT_NE(server_, nullptr);
    server_flag_ = " --server " + server_->target();
  }
  std::unique_ptr<TestServer> server_;
  std::string server_flag_;
  TempDir dir_;
};

TEST_F(TpctlQm9Test, TrainOnGeneratedMolecules_PrintsALossThatGoesDown) {
  Ran created = Tpctl("qm9 create net --lmax 1 --mul 4 --layers 3 --seed 3" + server_flag_);
  ASSERT_EQ(created.code, 0) << created.out;
  EXPECT_NE(created.out.find("net  kind qm9  lmax 1  mul 4  layers 3"), std::string::npos) << created.out;
  Ran listed = Tpctl("list" + server_flag_);
  EXPECT_NE(listed.out.find("kind qm9"), std::string::npos) << listed.out;
  EXPECT_NE(created.out.find("  device cpu"), std::string::npos) << "where it computes: " << created.out;
  EXPECT_NE(listed.out.find("  device cpu"), std::string::npos) << listed.out;

  Ran trained = Tpctl("qm9 train net --generate 27 --steps 20 --batch 27" + server_flag_);
  ASSERT_EQ(trained.code, 0) << trained.out;
  const std::vector<double> losses = Losses(trained.out);
  ASSERT_EQ(losses.size(), 20u) << trained.out;
  EXPECT_LT(losses.back(), losses.front()) << trained.out;
  EXPECT_EQ(server_->core().GetModel("net")->version, 21u);

  // Predict: one line per molecule, and the same numbers in the .npy.
  const std::string out = dir_.path() + "/p.npy";
  Ran predicted = Tpctl("qm9 predict net --generate 5 --seed 9 --out " + out + server_flag_);
  ASSERT_EQ(predicted.code, 0) << predicted.out;
  absl::StatusOr<NpyArray> array = ReadNpy(out);
  ASSERT_TRUE(array.ok()) << array.status();
  ASSERT_EQ(array->shape, (std::vector<int64_t>{5, 4}));
  const double* values = reinterpret_cast<const double*>(array->bytes.data());
  const std::vector<nn::data::Molecule> molecules = nn::data::GenerateMolecules(5, 9);
  for (int k = 0; k < 5; ++k) {
    std::string line = molecules[k].name;
    for (int t = 0; t < 4; ++t) absl::StrAppendFormat(&line, " %.6f", values[4 * k + t]);
    EXPECT_NE(predicted.out.find(line + "\n"), std::string::npos) << line << "\n" << predicted.out;
  }
}

TEST_F(TpctlQm9Test, TrainOnAnSdfDirectory_ReadsItsTargetsByColumnName) {
  ASSERT_EQ(Tpctl("qm9 create net --lmax 1 --mul 4 --layers 2" + server_flag_).code, 0);
  // gdb9.sdf + gdb9.sdf.csv of 10 generated molecules (bonds from their edges).
  const std::vector<nn::data::Molecule> molecules = nn::data::GenerateMolecules(10, 77);
  std::string sdf, csv = "mol_id,mu,alpha,homo,lumo,gap\n";
  const char* kSymbol[] = {"H", "C", "N", "O", "F"};
  for (size_t i = 0; i < molecules.size(); ++i) {
    const nn::data::Molecule& m = molecules[i];
    std::vector<std::pair<int, int>> bonds;
    for (int64_t e = 0; e < m.num_edges(); ++e) {
      if (m.edge_src[e] < m.edge_dst[e]) bonds.emplace_back(m.edge_src[e], m.edge_dst[e]);
    }
    absl::StrAppendFormat(&sdf, "gdb_%d\n\n\n%3d%3d  0  0  0  0  0  0  0  0999 V2000\n", i + 1, m.num_atoms(),
                          bonds.size());
    for (int64_t a = 0; a < m.num_atoms(); ++a) {
      absl::StrAppendFormat(&sdf, "%10.4f%10.4f%10.4f %-3s 0  0\n", m.positions[3 * a], m.positions[3 * a + 1],
                            m.positions[3 * a + 2], kSymbol[m.species[a]]);
    }
    for (const auto& [a, b] : bonds) absl::StrAppendFormat(&sdf, "%3d%3d  1  0\n", a + 1, b + 1);
    sdf += "M  END\n$$$$\n";
    absl::StrAppendFormat(&csv, "gdb_%d,%.9f,%.9f,%.9f,%.9f,0.5\n", i + 1, m.targets[0], m.targets[1], m.targets[2],
                          m.targets[3]);
  }
  std::ofstream(dir_.path() + "/gdb9.sdf") << sdf;
  std::ofstream(dir_.path() + "/gdb9.sdf.csv") << csv;
  Ran trained = Tpctl("qm9 train net --data " + dir_.path() + " --steps 4 --batch 5" + server_flag_);
  ASSERT_EQ(trained.code, 0) << trained.out;
  EXPECT_EQ(Losses(trained.out).size(), 4u) << trained.out;
  // Three target columns for a model of four: refused before any step.
  Ran wrong = Tpctl("qm9 train net --data " + dir_.path() + " --targets mu,gap,homo --steps 1" + server_flag_);
  EXPECT_EQ(wrong.code, 2) << wrong.out;
  EXPECT_NE(wrong.out.find("3 targets per molecule"), std::string::npos) << wrong.out;
  EXPECT_EQ(server_->core().GetModel("net")->version, 5u);
}

TEST_F(TpctlQm9Test, Errors_NameTheKindOrTheMissingInput) {
  ASSERT_TRUE(server_->core().CreateModel("tp", {"2x0e", "2x0e", "2x0e"}, std::nullopt, 1).ok());
  Ran kind = Tpctl("qm9 predict tp --generate 2" + server_flag_);
  EXPECT_EQ(kind.code, 1) << kind.out;
  EXPECT_NE(kind.out.find("kind 'tp'"), std::string::npos) << kind.out;
  ASSERT_EQ(Tpctl("qm9 create net --lmax 1 --mul 2 --layers 2" + server_flag_).code, 0);
  Ran no_data = Tpctl("qm9 train net --steps 2" + server_flag_);
  EXPECT_EQ(no_data.code, 2) << no_data.out;
  EXPECT_NE(no_data.out.find("--data PATH or --generate N"), std::string::npos) << no_data.out;
  Ran missing = Tpctl("qm9 train net --data " + dir_.path() + "/none.npz --steps 2" + server_flag_);
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_NE(missing.out.find("none.npz"), std::string::npos) << missing.out;
  Ran bad_lmax = Tpctl("qm9 create other --lmax 5 --mul 2" + server_flag_);
  EXPECT_EQ(bad_lmax.code, 2) << bad_lmax.out;
  EXPECT_NE(bad_lmax.out.find("lmax"), std::string::npos) << bad_lmax.out;
}

}  // namespace
}  // namespace tpserve::testing
