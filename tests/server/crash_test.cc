// kill -9 of the real tpserve binary (fork/exec) in the middle of weight uploads: after a restart
// every acknowledged write is there and no model is torn or half-written.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

#ifndef TPSERVE_PATH
#error "TPSERVE_PATH must name the tpserve binary"
#endif

namespace tpserve::testing {
namespace {

class ServerProcess {
 public:
  // Starts tpserve on a free loopback port with `model_dir`; waits for its "serving on port" line.
  // Each start logs to a file of its own, so an earlier run's port line is never mistaken for this one's.
  explicit ServerProcess(const std::string& model_dir, const std::string& log_prefix) {
    static int starts = 0;
    const std::string log_path = log_prefix + "." + std::to_string(starts++);
    pid_ = fork();
    if (pid_ == 0) {
      // Dies with the test, even when the test itself crashes before its destructors run.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(TPSERVE_PATH, TPSERVE_PATH, "--listen=127.0.0.1:0", "--metrics_address=",
            ("--model_dir=" + model_dir).c_str(), "--backend=cpu", static_cast<char*>(nullptr));
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    std::regex serving("serving on port ([0-9]+)");
    while (std::chrono::steady_clock::now() < deadline && port_ == 0) {
      std::ifstream in(log_path);
      std::stringstream text;
      text << in.rdbuf();
      std::smatch match;
      std::string log = text.str();
      if (std::regex_search(log, match, serving)) port_ = std::stoi(match[1]);
      else std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~ServerProcess() { Kill9(); }

  int port() const { return port_; }
  void Kill9() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::unique_ptr<client::TpClient> Connect() const {
    client::ClientOptions options;
    options.target = "127.0.0.1:" + std::to_string(port_);
    options.timeout_seconds = 30;
    options.chunk_elements = 4096;
    return *client::TpClient::Connect(options);
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
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

}  // namespace
}  // namespace tpserve::testing
