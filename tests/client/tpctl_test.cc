// Runs the real tpctl binary on e3nn's reference cases, as the external contract tests do.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/npy.h"
#include "gtest/gtest.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"

namespace tpserve {
namespace {

namespace fs = std::filesystem;
using testing::LoadReferenceCase;
using testing::ReferenceCase;
using testing::RelativeError;

struct ToolRun {
  int exit_code;
  std::string stderr_text;
};

ToolRun RunTpctl(const std::string& args, const fs::path& dir) {
  const fs::path err = dir / "stderr.txt";
  const std::string command = absl::StrCat(TPCTL_PATH, " ", args, " 2>", err.string(), " >/dev/null");
  const int status = std::system(command.c_str());
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

NpyArray ToNpy(const std::vector<double>& values, std::vector<int64_t> shape, DType dtype) {
  NpyArray a = NpyArray::Zeros(DType::kFloat64, std::move(shape));
  std::memcpy(a.bytes.data(), values.data(), values.size() * sizeof(double));
  return ConvertNpy(a, dtype);
}

std::vector<double> FromNpy(const fs::path& path, DType expected_dtype) {
  absl::StatusOr<NpyArray> a = ReadNpy(path.string());
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return {};
  EXPECT_EQ(a->dtype, expected_dtype) << path;
  NpyArray d = ConvertNpy(*a, DType::kFloat64);
  const double* p = reinterpret_cast<const double*>(d.bytes.data());
  return std::vector<double>(p, p + d.numel());
}

class TpctlEvalTest : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / absl::StrCat("tpctl_test_", ::getpid(), "_", counter_++);
    fs::create_directories(dir_ / "out");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteInputs(const ReferenceCase& c, DType dtype) {
    const int64_t dim1 = c.x1.size() / c.batch, dim2 = c.x2.size() / c.batch, dim_out = c.out.size() / c.batch;
    EXPECT_TRUE(WriteNpy((dir_ / "w.npy").string(), ToNpy(c.weight, {c.weight_numel}, dtype)).ok());
    EXPECT_TRUE(WriteNpy((dir_ / "x1.npy").string(), ToNpy(c.x1, {c.batch, dim1}, dtype)).ok());
    EXPECT_TRUE(WriteNpy((dir_ / "x2.npy").string(), ToNpy(c.x2, {c.batch, dim2}, dtype)).ok());
    EXPECT_TRUE(WriteNpy((dir_ / "g.npy").string(), ToNpy(c.grad_out, {c.batch, dim_out}, dtype)).ok());
    return absl::StrCat("eval --irreps-in1 '", c.irreps_in1, "' --irreps-in2 '", c.irreps_in2, "' --irreps-out '",
                        c.irreps_out, "' --weights ", (dir_ / "w.npy").string(), " --x1 ",
                        (dir_ / "x1.npy").string(), " --x2 ", (dir_ / "x2.npy").string(), " --out ",
                        (dir_ / "out").string());
  }

  fs::path dir_;
  static inline int counter_ = 0;
};

TEST_P(TpctlEvalTest, MatchesE3nnForwardGradOutAndSumTanh) {
  const auto& [file, dtype] = GetParam();
  absl::StatusOr<ReferenceCase> c = LoadReferenceCase(file);
  ASSERT_TRUE(c.ok()) << c.status();
  const double tolerance = dtype == DType::kFloat64 ? 1e-10 : 1e-5;
  const std::string base = WriteInputs(*c, dtype);

  ToolRun forward = RunTpctl(base, dir_);
  ASSERT_EQ(forward.exit_code, 0) << forward.stderr_text;
  EXPECT_LT(RelativeError(FromNpy(dir_ / "out" / "out.npy", dtype), c->out), tolerance);
  EXPECT_FALSE(fs::exists(dir_ / "out" / "grad_weight.npy"));

  ToolRun vjp = RunTpctl(base + " --grad-out " + (dir_ / "g.npy").string(), dir_);
  ASSERT_EQ(vjp.exit_code, 0) << vjp.stderr_text;
  EXPECT_LT(RelativeError(FromNpy(dir_ / "out" / "grad_weight.npy", dtype), c->grad_weight), tolerance);
  EXPECT_LT(RelativeError(FromNpy(dir_ / "out" / "grad_x1.npy", dtype), c->grad_x1), tolerance);
  EXPECT_LT(RelativeError(FromNpy(dir_ / "out" / "grad_x2.npy", dtype), c->grad_x2), tolerance);

  fs::remove(dir_ / "out" / "grad_weight.npy");
  ToolRun tanh = RunTpctl(base + " --loss sum_tanh", dir_);
  ASSERT_EQ(tanh.exit_code, 0) << tanh.stderr_text;
  EXPECT_LT(RelativeError(FromNpy(dir_ / "out" / "grad_weight.npy", dtype), c->grad_weight_sum_tanh), tolerance);
  EXPECT_LT(RelativeError(FromNpy(dir_ / "out" / "out.npy", dtype), c->out), tolerance);
}

std::vector<std::tuple<std::string, DType>> Cases() {
  std::vector<std::tuple<std::string, DType>> cases;
  for (const std::string& file : testing::ReferenceCaseFiles())
    for (DType dtype : {DType::kFloat64, DType::kFloat32}) cases.emplace_back(file, dtype);
  return cases;
}

INSTANTIATE_TEST_SUITE_P(ReferenceCases, TpctlEvalTest, ::testing::ValuesIn(Cases()), [](const auto& info) {
  std::string name = std::get<0>(info.param).substr(4);
  name = name.substr(0, name.size() - 5);
  return name + (std::get<1>(info.param) == DType::kFloat64 ? "_float64" : "_float32");
});

TEST(TpctlReferenceTest, ReferenceCasesArePresent) {
  EXPECT_GE(testing::ReferenceCaseFiles().size(), 5u) << "no ref_*.json in " << testing::ReferenceDir();
}

class TpctlErrorTest : public TpctlEvalTest {};

TEST_F(TpctlErrorTest, BadInputsExitTwoWithOneLineNamingTheExpectation) {
  absl::StatusOr<ReferenceCase> c = LoadReferenceCase("ref_mixed_parity.json");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string base = WriteInputs(*c, DType::kFloat64);
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    ToolRun run = RunTpctl(args, dir_);
    EXPECT_EQ(run.exit_code, 2) << args << "\n" << run.stderr_text;
    EXPECT_NE(run.stderr_text.find(needle), std::string::npos) << args << "\n" << run.stderr_text;
    EXPECT_EQ(std::count(run.stderr_text.begin(), run.stderr_text.end(), '\n'), 1) << run.stderr_text;
  };
  // x1 with a wrong second dimension.
  ASSERT_TRUE(WriteNpy((dir_ / "bad.npy").string(), ToNpy(std::vector<double>(4 * 5, 0.5), {4, 5}, DType::kFloat64)).ok());
  std::string bad_x1 = base;
  bad_x1.replace(bad_x1.find("x1.npy"), 6, "bad.npy");
  expect_error(bad_x1, "x1: expected float64 [4, 14]");
  // weights of the wrong length.
  std::string swapped = base;
  swapped.replace(swapped.find("w.npy"), 5, "x2.npy");
  expect_error(swapped, "weights: expected float64 [84]");
  // garbage file
  { std::ofstream(dir_ / "garbage.npy") << "not a numpy file"; }
  expect_error(base + " --grad-out " + (dir_ / "garbage.npy").string(), "not a NumPy .npy file");
  expect_error(base + " --grad-out " + (dir_ / "missing.npy").string(), "cannot open");
  expect_error(base + " --loss sum_tanh --grad-out " + (dir_ / "g.npy").string(), "at most one of");
  expect_error(base + " --loss mean", "expected sum_tanh or sum");
  expect_error(base + " --precision fp8", "expected fp32, tf32 or bf16");
  expect_error("eval --irreps-in1 1o --irreps-in2 1o --x1 a --x2 b --weights c", "missing required flag --");
  expect_error(base + " --bogus 1", "unknown flag --bogus");
}

TEST_F(TpctlErrorTest, MalformedIrrepsSayWhereAndWhy) {
  absl::StatusOr<ReferenceCase> c = LoadReferenceCase("ref_mixed_parity.json");
  ASSERT_TRUE(c.ok()) << c.status();
  std::string args = WriteInputs(*c, DType::kFloat64);
  args.replace(args.find("'3x0e + 2x1o + 1x2e'"), 20, "'3x0e + 2x1q'");
  ToolRun run = RunTpctl(args, dir_);
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.stderr_text.find("term 1 ('2x1q')"), std::string::npos) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("expected parity"), std::string::npos) << run.stderr_text;
}

}  // namespace
}  // namespace tpserve
