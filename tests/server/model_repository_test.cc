// The model repository on disk: round trips, atomic commits, and recovery from the leftovers a
// crash can leave at each step of the commit protocol.
#include "server/core/model_repository.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace tpserve::server {
namespace {

namespace fs = std::filesystem;
using ::tpserve::testing::TempDir;

const ModelSpec kSpec{"2x0e+1x1o", "1x0e", "2x0e+1x1o"};

StoredModel Make(const std::string& name, uint64_t version, std::vector<float> weights) {
  uint64_t fnv = Fnv1a64(weights.data(), weights.size() * 4);
  return StoredModel{name, kSpec, version, std::move(weights), fnv};
}

TEST(ModelRepositoryTest, CreateThenLoad_RoundTripsEveryField) {
  TempDir dir;
  ModelRepository repo(dir.path());
  ASSERT_TRUE(repo.Init().ok());
  ASSERT_TRUE(repo.Create(Make("b", 1, {1, 2, 3, 4, 5})).ok());
  ASSERT_TRUE(repo.Create(Make("a", 1, {6, 7})).ok());
  auto loaded = repo.LoadAll();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ((*loaded)[0].name, "a");
  EXPECT_EQ((*loaded)[1].weights, (std::vector<float>{1, 2, 3, 4, 5}));
  EXPECT_EQ((*loaded)[1].spec.irreps_in1, kSpec.irreps_in1);
  EXPECT_EQ((*loaded)[1].version, 1u);
  EXPECT_EQ(repo.Create(Make("a", 1, {6, 7})).code(), absl::StatusCode::kAlreadyExists);
}

TEST(ModelRepositoryTest, WriteWeights_ReplacesTheVersionAndRemovesTheOldFile) {
  TempDir dir;
  ModelRepository repo(dir.path());
  ASSERT_TRUE(repo.Init().ok());
  ASSERT_TRUE(repo.Create(Make("m", 1, {1, 1})).ok());
  StoredModel next = Make("m", 2, {2, 2});
  ASSERT_TRUE(repo.WriteWeights("m", kSpec, 2, next.weights, next.weights_fnv1a64).ok());
  EXPECT_FALSE(fs::exists(dir.path() + "/m/weights-v1.bin"));
  EXPECT_TRUE(fs::exists(dir.path() + "/m/weights-v2.bin"));
  auto loaded = repo.LoadAll();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ((*loaded)[0].version, 2u);
  EXPECT_EQ((*loaded)[0].weights, (std::vector<float>{2, 2}));
}

TEST(ModelRepositoryTest, CrashBeforeConfigRename_LoadsThePreviousVersionAndDropsTheOrphan) {
  TempDir dir;
  ModelRepository repo(dir.path());
  ASSERT_TRUE(repo.Init().ok());
  ASSERT_TRUE(repo.Create(Make("m", 1, {1, 1})).ok());
  // What a kill between the two renames leaves: the new weights file and a temp config.
  std::ofstream(dir.path() + "/m/weights-v2.bin", std::ios::binary) << "garbage!";
  std::ofstream(dir.path() + "/m/config.json.tmp") << "{half";
  std::ofstream(dir.path() + "/m/weights-v3.bin.tmp") << "x";
  auto loaded = repo.LoadAll();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)[0].version, 1u);
  EXPECT_EQ((*loaded)[0].weights, (std::vector<float>{1, 1}));
  EXPECT_FALSE(fs::exists(dir.path() + "/m/weights-v2.bin"));
  EXPECT_FALSE(fs::exists(dir.path() + "/m/config.json.tmp"));
}

TEST(ModelRepositoryTest, InterruptedCreateAndDelete_LeaveNoModelAndAreCleanedAtInit) {
  TempDir dir;
  fs::create_directories(dir.path() + "/.tmp-half-123-0");
  fs::create_directories(dir.path() + "/.deleted-old-123-1");
  ModelRepository repo(dir.path());
  ASSERT_TRUE(repo.Init().ok());
  EXPECT_FALSE(fs::exists(dir.path() + "/.tmp-half-123-0"));
  EXPECT_FALSE(fs::exists(dir.path() + "/.deleted-old-123-1"));
  EXPECT_TRUE(repo.LoadAll()->empty());
}

TEST(ModelRepositoryTest, Remove_DeletesAndReportsUnknownModels) {
  TempDir dir;
  ModelRepository repo(dir.path());
  ASSERT_TRUE(repo.Init().ok());
  ASSERT_TRUE(repo.Create(Make("m", 1, {1})).ok());
  ASSERT_TRUE(repo.Remove("m").ok());
  EXPECT_TRUE(repo.LoadAll()->empty());
  EXPECT_EQ(repo.Remove("m").code(), absl::StatusCode::kNotFound);
}

TEST(ModelRepositoryTest, CorruptWeights_AreDataLossNotServed) {
  TempDir dir;
  ModelRepository repo(dir.path());
  ASSERT_TRUE(repo.Init().ok());
  ASSERT_TRUE(repo.Create(Make("m", 1, {1, 2})).ok());
  {
    std::fstream f(dir.path() + "/m/weights-v1.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2);
    f.put('\x7f');
  }
  auto loaded = repo.LoadAll();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("checksum"), std::string::npos) << loaded.status();
}

TEST(ModelRepositoryTest, EmptyRoot_KeepsNothing) {
  ModelRepository repo("");
  EXPECT_FALSE(repo.persistent());
  ASSERT_TRUE(repo.Init().ok());
  ASSERT_TRUE(repo.Create(Make("m", 1, {1})).ok());
  EXPECT_TRUE(repo.LoadAll()->empty());
}

}  // namespace
}  // namespace tpserve::server
