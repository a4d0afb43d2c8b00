// kill -9 of the real tpserve binary (fork/exec) in the middle of weight uploads, and at exact
// points of the commit protocol (tests/support/crash_points.cc, preloaded): after a restart every
// acknowledged write is there and no model is torn or half-written.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"
#include "tests/support/tpserve_process.h"

#ifndef TPSERVE_PATH
#error "TPSERVE_PATH must name the tpserve binary"
#endif
#ifndef TPSERVE_CRASH_POINTS_LIB
#error "TPSERVE_CRASH_POINTS_LIB must name the crash-points preload library"
#endif

namespace tpserve::testing {
namespace {

// tpserve on a free loopback port over `model_dir`; each start logs to a file of its own.
// `env`: NAME=VALUE pairs set in the child only (the crash points).
class ServerProcess : public TpserveProcess {
 public:
  ServerProcess(const std::string& model_dir, const std::string& log_prefix, const std::vector<std::string>& env = {})
      : TpserveProcess({TPSERVE_PATH,
                        {"--listen=127.0.0.1:0", "--metrics_address=", "--model_dir=" + model_dir, "--backend=cpu"},
                        log_prefix + "." + std::to_string(starts_++),
                        env}) {}
  std::unique_ptr<client::TpClient> Connect() const {
    client::ClientOptions options;
    options.target = target();
    options.timeout_seconds = 30;
    options.chunk_elements = 4096;
    return *client::TpClient::Connect(options);
  }

 private:
  static inline int starts_ = 0;
};

// 4 paths of 32^3 weights: 131072 floats, 32 upload chunks of 4096.
const tp::v1::ModelSpec kSpec = Spec("32x0e + 32x1o", "32x0e + 32x1o", "32x0e + 32x1o");

// Every committed version k holds the value k everywhere, so a torn write is visible.
void ExpectIntact(client::TpClient& client, uint64_t min_version) {
  auto info = client.GetModel("m");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_GE(info->version(), min_version) << "an acknowledged upload was lost";
  uint64_t version = 0;
  auto weights = client.DownloadWeights("m", &version);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_EQ(weights->size(), 131072u);
  EXPECT_EQ(version, info->version());
  float expected = static_cast<float>(version);
  for (size_t i = 0; i < weights->size(); ++i) {
    ASSERT_EQ((*weights)[i], expected) << "weights torn at " << i << " (version " << version << ")";
  }
}

TEST(CrashTest, KillDuringUploadKeepsThePreviousVersionIntact) {
  TempDir dir;
  std::string models = dir.path() + "/models", log = dir.path() + "/tpserve.log";
  uint64_t acked = 0;
  {
    ServerProcess server(models, log);
    ASSERT_NE(server.port(), 0) << "tpserve did not start; see " << log;
    auto client = server.Connect();
    std::vector<float> weights(131072, 1.0f);
    auto created = client->CreateModel("m", kSpec, &weights);
    ASSERT_TRUE(created.ok()) << created.status();
    ASSERT_EQ(created->weight_numel(), 131072);
    for (uint64_t v = 2; v <= 3; ++v) {
      std::fill(weights.begin(), weights.end(), static_cast<float>(v));
      auto uploaded = client->UploadWeights("m", weights);
      ASSERT_TRUE(uploaded.ok()) << uploaded.status();
      acked = uploaded->version();
    }
    // Half an upload, then kill -9.
    std::fill(weights.begin(), weights.end(), 4.0f);
    auto interrupted = client->UploadWeights("m", weights, 0, [&](int64_t sent) {
      if (sent == 16 * 4096) server.Kill9();
    });
    EXPECT_FALSE(interrupted.ok());
  }
  ServerProcess restarted(models, log);
  ASSERT_NE(restarted.port(), 0);
  auto client = restarted.Connect();
  ExpectIntact(*client, acked);
  auto info = client->GetModel("m");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version(), 3u);
}

TEST(CrashTest, KillAtRandomMomentsLosesNothingAcknowledged) {
  TempDir dir;
  std::string models = dir.path() + "/models", log = dir.path() + "/tpserve.log";
  std::mt19937 rng(std::random_device{}());
  uint64_t acked = 1;
  {
    ServerProcess server(models, log);
    ASSERT_NE(server.port(), 0);
    std::vector<float> weights(131072, 1.0f);
    ASSERT_TRUE(server.Connect()->CreateModel("m", kSpec, &weights).ok());
  }
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE(round);
    ServerProcess server(models, log);
    ASSERT_NE(server.port(), 0);
    auto client = server.Connect();
    ExpectIntact(*client, acked);
    auto current = client->GetModel("m");
    ASSERT_TRUE(current.ok()) << current.status();
    uint64_t version = current->version();
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> last_acked{version};
    std::thread uploader([&] {
      std::vector<float> w(131072);
      for (uint64_t next = version + 1; !stop; ++next) {
        std::fill(w.begin(), w.end(), static_cast<float>(next));
        // expected_version makes "value == version" hold even when a commit raced the kill.
        auto uploaded = client->UploadWeights("m", w, next - 1);
        if (!uploaded.ok()) return;
        last_acked = uploaded->version();
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 400)(rng)));
    server.Kill9();
    stop = true;
    uploader.join();
    acked = last_acked;
  }
  ServerProcess server(models, log);
  ASSERT_NE(server.port(), 0);
  ExpectIntact(*server.Connect(), acked);
  EXPECT_GT(acked, 2u) << "the uploads never got going; the test proved nothing";
  RecordProperty("acknowledged_versions", static_cast<int>(acked));
}

TEST(CrashTest, KillRightAfterCreateKeepsTheModel) {
  TempDir dir;
  std::string models = dir.path() + "/models", log = dir.path() + "/tpserve.log";
  {
    ServerProcess server(models, log);
    ASSERT_NE(server.port(), 0);
    auto client = server.Connect();
    ASSERT_TRUE(client->CreateModel("seeded", Spec("4x0e", "4x0e", "4x0e"), nullptr, 5).ok());
    server.Kill9();
  }
  ServerProcess server(models, log);
  ASSERT_NE(server.port(), 0);
  auto info = server.Connect()->GetModel("seeded");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->weight_numel(), 64);
}

// The commit protocol killed at exact points, many times: each round preloads a crash point
// (the n-th fsync, rename or unlink of the process, before or after the call runs: a temp file
// written, renamed, the directory synced, the old version removed), drives creates and uploads
// until the server dies there (or kills it after a while), and checks the previous round's state
// at the next start. Bounded by rounds and by time.
TEST(CrashTest, KillInsideTheCommitAtRandomPointsLosesNothingAcknowledged) {
  TempDir dir;
  std::string models = dir.path() + "/models", log = dir.path() + "/tpserve.log";
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  RecordProperty("seed", static_cast<int>(seed));
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  {
    ServerProcess server(models, log);
    ASSERT_NE(server.port(), 0);
    std::vector<float> weights(131072, 1.0f);
    ASSERT_TRUE(server.Connect()->CreateModel("m", kSpec, &weights).ok());
  }
  const tp::v1::ModelSpec small = Spec("4x0e", "4x0e", "4x0e");  // 64 weights
  uint64_t acked = 1;
  std::map<std::string, float> created;          // acknowledged creates: name -> value of every weight
  std::map<std::string, float> maybe_created;    // creates the kill may have cut (absent or whole)
  int rounds = 0, died_at_point = 0;
  const auto stop_at = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  const char* calls[] = {"fsync", "rename", "unlink"};
  for (; rounds < 60 && std::chrono::steady_clock::now() < stop_at; ++rounds) {
    const std::string point = absl::StrCat(calls[rng() % 3], ":", 1 + rng() % 14, ":", rng() % 2 ? "after" : "before");
    SCOPED_TRACE(::testing::Message() << "round " << rounds << ", crash point " << point);
    ServerProcess server(models, log, {std::string("LD_PRELOAD=") + TPSERVE_CRASH_POINTS_LIB, "TPSERVE_CRASH_AT=" + point});
    if (server.port() == 0) {
      // The point fell in start-up (its own fsync and orphan removal): killed before serving.
      ASSERT_TRUE(server.Exited(true));
      ASSERT_TRUE(server.died_of_sigkill()) << "tpserve failed to start for another reason; see " << log;
      ++died_at_point;
      continue;
    }
    auto client = server.Connect();
    // The state every earlier round acknowledged, as this start loaded it.
    ExpectIntact(*client, acked);
    for (const auto& [name, value] : created) {
      auto weights = client->DownloadWeights(name);
      ASSERT_TRUE(weights.ok()) << name << ": " << weights.status();
      ASSERT_EQ(*weights, std::vector<float>(64, value)) << name;
    }
    if (HasFailure()) return;
    auto current = client->GetModel("m");
    ASSERT_TRUE(current.ok()) << current.status();
    std::atomic<uint64_t> last_acked{current->version()};
    std::thread driver([&, version = current->version(), round = rounds] {
      // A create, then uploads, until a call fails (the server is gone).
      const std::string name = absl::StrCat("c", round);
      std::vector<float> small_weights(64, static_cast<float>(round + 1));
      maybe_created[name] = round + 1;
      if (!client->CreateModel(name, small, &small_weights).ok()) return;
      created[name] = round + 1;
      maybe_created.erase(name);
      std::vector<float> w(131072);
      for (uint64_t next = version + 1;; ++next) {
        std::fill(w.begin(), w.end(), static_cast<float>(next));
        auto uploaded = client->UploadWeights("m", w, next - 1);
        if (!uploaded.ok()) return;
        last_acked = uploaded->version();
      }
    });
    if (server.ExitsWithin(std::chrono::milliseconds(1500))) {
      EXPECT_TRUE(server.died_of_sigkill()) << "tpserve ended, but not at the crash point";
      ++died_at_point;
    } else {
      server.Kill9();  // the point lies past this round's calls: an ordinary kill -9
    }
    driver.join();
    acked = last_acked;
  }
  ServerProcess server(models, log);
  ASSERT_NE(server.port(), 0) << "the repository did not load after the last kill; see " << log;
  auto client = server.Connect();
  ExpectIntact(*client, acked);
  for (const auto& [name, value] : created) {
    auto weights = client->DownloadWeights(name);
    ASSERT_TRUE(weights.ok()) << "acknowledged create of " << name << " lost: " << weights.status();
    EXPECT_EQ(*weights, std::vector<float>(64, value)) << name;
  }
  for (const auto& [name, value] : maybe_created) {
    auto weights = client->DownloadWeights(name);
    if (weights.ok()) EXPECT_EQ(*weights, std::vector<float>(64, value)) << "half-created " << name;
    else EXPECT_EQ(weights.status().code(), absl::StatusCode::kNotFound) << name << ": " << weights.status();
  }
  RecordProperty("rounds", rounds);
  RecordProperty("died_at_crash_point", died_at_point);
  EXPECT_GE(rounds, 20) << "too few rounds to mean much";
  EXPECT_GE(died_at_point, rounds / 2) << "most rounds should die at their crash point, not by the fallback kill";
  EXPECT_GT(acked, 3u) << "the uploads never got going; the test proved nothing";
}

}  // namespace
}  // namespace tpserve::testing
