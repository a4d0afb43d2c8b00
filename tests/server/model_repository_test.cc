// The model repository on disk: round trips, atomic commits, and recovery from the leftovers a
// crash can leave at each step of the commit protocol.
#include "server/core/model_repository.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/core/inference_core.h"
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

void Replace(const std::string& path, const std::string& from, const std::string& to) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  ASSERT_NE(s.find(from), std::string::npos) << s;
  s.replace(s.find(from), from.size(), to);
  std::ofstream(path, std::ios::trunc) << s;
}

// Each way a model directory can be damaged is DATA_LOSS naming the file, never an exception, an
// allocation the file does not justify, or a read outside the model's directory.
TEST(ModelRepositoryTest, DamagedModels_AreDataLossNamingTheFile) {
  const std::vector<std::pair<std::string, std::function<void(const std::string&)>>> damages = {
      {"weights-v1.bin", [](const std::string& d) { fs::resize_file(d + "/weights-v1.bin", 6); }},
      {"weights-v1.bin", [](const std::string& d) { fs::remove(d + "/weights-v1.bin"); }},
      {"config.json", [](const std::string& d) { std::ofstream(d + "/config.json", std::ios::trunc); }},
      {"config.json", [](const std::string& d) { std::ofstream(d + "/config.json", std::ios::trunc) << "[1, 2]"; }},
      {"config.json", [](const std::string& d) { Replace(d + "/config.json", "\"weight_numel\": 3", "\"weight_numel\": -1"); }},
      {"config.json",
       [](const std::string& d) { Replace(d + "/config.json", "\"weight_numel\": 3", "\"weight_numel\": 4000000000000000000"); }},
      {"config.json", [](const std::string& d) { Replace(d + "/config.json", "\"version\": 1", "\"version\": \"one\""); }},
      {"config.json",
       [](const std::string& d) {
         fs::copy_file(d + "/weights-v1.bin", d + "/../stolen.bin");  // whole and checksummed: only the name is wrong
         Replace(d + "/config.json", "\"weights-v1.bin\"", "\"../stolen.bin\"");
       }},
      {"config.json", [](const std::string& d) { fs::remove_all(d); fs::create_directory(d); }},
  };
  for (size_t i = 0; i < damages.size(); ++i) {
    SCOPED_TRACE(i);
    TempDir dir;
    ModelRepository repo(dir.path());
    ASSERT_TRUE(repo.Init().ok());
    ASSERT_TRUE(repo.Create(Make("bad", 1, {1, 2, 3})).ok());
    ASSERT_TRUE(repo.Create(Make("good", 1, {4, 5})).ok());
    damages[i].second(dir.path() + "/bad");
    auto contents = repo.Scan();
    ASSERT_TRUE(contents.ok()) << contents.status();
    ASSERT_EQ(contents->models.size(), 1u);
    EXPECT_EQ(contents->models[0].name, "good");
    ASSERT_EQ(contents->damaged.size(), 1u);
    const absl::Status& why = contents->damaged[0].why;
    EXPECT_EQ(why.code(), absl::StatusCode::kDataLoss) << why;
    EXPECT_NE(why.message().find(dir.path() + "/bad/" + damages[i].first), std::string::npos) << why;
    EXPECT_EQ(repo.LoadAll().status(), why) << "LoadAll refuses a damaged repository";
  }
}

TEST(ModelRepositoryTest, ModelDirThatIsAFile_IsFailedPreconditionNamingIt) {
  TempDir dir;
  const std::string file = dir.path() + "/file";
  std::ofstream(file) << "x";
  absl::Status status = ModelRepository(file).Init();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find(file + ": not a directory"), std::string::npos) << status;
}

TEST(ModelRepositoryTest, MoveAside_KeepsTheFilesAndFreesTheName) {
  TempDir dir;
  ModelRepository repo(dir.path());
  ASSERT_TRUE(repo.Init().ok());
  ASSERT_TRUE(repo.Create(Make("m", 1, {1, 2})).ok());
  auto aside = repo.MoveAside("m");
  ASSERT_TRUE(aside.ok()) << aside.status();
  EXPECT_TRUE(fs::exists(*aside + "/weights-v1.bin"));
  EXPECT_EQ(fs::path(*aside).filename().string().rfind(".damaged-m-", 0), 0u) << *aside;
  ASSERT_TRUE(repo.Init().ok());
  EXPECT_TRUE(fs::exists(*aside)) << "Init keeps models set aside for a person to look at";
  EXPECT_TRUE(repo.LoadAll()->empty());
  EXPECT_TRUE(repo.Create(Make("m", 1, {3})).ok());
}

// InferenceCore::Create failing on a damaged repository used to crash in its destructor (the
// batcher it shut down was never built).
TEST(ModelRepositoryTest, CoreOverADamagedRepository_FailsCleanlyOrSkipsTheModel) {
  TempDir dir;
  {
    ModelRepository repo(dir.path());
    ASSERT_TRUE(repo.Init().ok());
    std::vector<float> weights(64, 0.25f);
    ASSERT_TRUE(repo.Create(StoredModel{"ok", {"4x0e", "4x0e", "4x0e"}, 1, weights, Fnv1a64(weights.data(), 256)}).ok());
    ASSERT_TRUE(repo.Create(Make("bad", 1, {1, 2, 3})).ok());  // 3 weights: its irreps need 5
  }
  CoreConfig config;
  config.model_dir = dir.path();
  auto backends = [] {
    std::vector<std::unique_ptr<Backend>> b;
    b.push_back(std::make_unique<CpuBackend>(CpuBackendOptions{1}));
    return b;
  };
  auto refused = InferenceCore::Create(config, backends(), nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(refused.status().message().find(dir.path() + "/bad/config.json"), std::string::npos) << refused.status();
  config.skip_damaged_models = true;
  auto core = InferenceCore::Create(config, backends(), nullptr);
  ASSERT_TRUE(core.ok()) << core.status();
  ASSERT_EQ((*core)->ListModels().size(), 1u);
  EXPECT_EQ((*core)->ListModels()[0].name, "ok");
  EXPECT_FALSE(fs::exists(dir.path() + "/bad"));
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
