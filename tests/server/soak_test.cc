// Soak (issue 16, "Done when"): the real tpserve binary under mixed valid and hostile traffic from
// several clients for ~30 s (TPSERVE_SOAK_SECONDS), with a small memory budget. Checks that every
// valid call succeeds throughout, that the process's RSS (read from /proc/PID/status) stays under
// the budget, and that nothing acknowledged is lost: the last acknowledged weights download
// bitwise equal at the end and after a kill -9 and restart.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/grpc/tensor_codec.h"
#include "tests/server/server_test_util.h"
#include "tests/support/tpserve_process.h"

#ifndef TPSERVE_PATH
#error "TPSERVE_PATH must name the tpserve binary"
#endif

namespace tpserve::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kMiB = int64_t{1} << 20;
// Well under what the hostile clients ask for (a 1 GiB Echo alone took 2 GB before the limits).
constexpr int64_t kBudgetBytes = 512 * kMiB;

// tpserve with the limits under test, on a free loopback port; killed with the test.
class ServerProcess : public TpserveProcess {
 public:
  ServerProcess(const std::string& model_dir, const std::string& log_path)
      : TpserveProcess({TPSERVE_PATH,
                        {"--listen=127.0.0.1:0", "--metrics_address=", "--model_dir=" + model_dir, "--backend=cpu",
                         absl::StrCat("--max_memory_bytes=", kBudgetBytes), "--max_threads=64",
                         "--max_open_watch_streams=8", "--upload_idle_seconds=1", "--idle_release_seconds=2",
                         "--max_message_bytes=16777216"},
                        log_path}) {}
  std::unique_ptr<client::TpClient> Connect(double timeout_seconds = 30) const {
    client::ClientOptions options;
    options.target = target();
    options.timeout_seconds = timeout_seconds;
    options.chunk_elements = 16384;
    return *client::TpClient::Connect(options);
  }
  // A channel of its own (not shared with other clients' connections), as another host would have.
  std::shared_ptr<grpc::Channel> OwnChannel(int max_send_bytes = 64 << 20) const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxSendMessageSize(max_send_bytes);
    args.SetMaxReceiveMessageSize(64 << 20);
    return grpc::CreateCustomChannel(target(), grpc::InsecureChannelCredentials(), args);
  }
};

int64_t RssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  }
  return -1;
}

// Raw bytes to a method (garbage, or messages the typed stubs would not send).
grpc::Status CallRaw(grpc::Channel* channel, const std::string& method, const std::string& bytes) {
  grpc::GenericStub stub(channel->shared_from_this());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = std::move(s);
    done = true;
    cv.notify_one();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return status;
}

const tp::v1::ModelSpec kServeSpec = Spec("8x0e + 8x1o", "8x0e + 8x1o", "8x0e + 8x1o");
const tp::v1::ModelSpec kAckedSpec = Spec("32x0e + 32x1o", "32x0e + 32x1o", "32x0e + 32x1o");  // 131072 weights
const tp::v1::ModelSpec kBigSpec = Spec("128x0e", "128x0e", "256x0e");  // 16 MiB of weights

tp::v1::ForwardRequest ValidForward(int batch, std::mt19937& rng) {
  std::normal_distribution<double> normal;
  std::vector<double> x1(batch * 32), x2(batch * 32);
  for (double& v : x1) v = normal(rng);
  for (double& v : x2) v = normal(rng);
  tp::v1::ForwardRequest request;
  request.set_model("serve");
  *request.mutable_x1() = F32({batch, 32}, x1);
  *request.mutable_x2() = F32({batch, 32}, x2);
  return request;
}

struct Tally {
  std::atomic<int64_t> valid_ok{0}, valid_failed{0}, hostile{0};
  std::mutex mu;
  std::vector<std::string> failures;  // the first few valid-call failures, for the report
  void Fail(const std::string& what, const absl::Status& status) {
    valid_failed.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu);
    if (failures.size() < 10) failures.push_back(absl::StrCat(what, ": ", status.ToString().substr(0, 300)));
  }
};

TEST(SoakTest, MixedValidAndHostileTrafficKeepsServingWithinTheBudget) {
  const char* env_seconds = std::getenv("TPSERVE_SOAK_SECONDS");
  const double seconds = env_seconds != nullptr ? std::atof(env_seconds) : 30.0;
  TempDir dir;
  const std::string models = dir.path() + "/models", log = dir.path() + "/tpserve.log";
  std::vector<float> acked_weights(131072, 1.0f);
  uint64_t acked_version = 0;
  Tally tally;
  int64_t max_rss = 0, idle_rss = 0;
  {
    ServerProcess server(models, log + ".0");
    ASSERT_NE(server.port(), 0) << "tpserve did not start; see " << log << ".0";
    auto setup = server.Connect();
    ASSERT_TRUE(setup->CreateModel("serve", kServeSpec, nullptr, 1).ok());
    auto created = setup->CreateModel("acked", kAckedSpec, &acked_weights);
    ASSERT_TRUE(created.ok()) << created.status();
    acked_version = created->version();
    ASSERT_TRUE(setup->CreateModel("big", kBigSpec, nullptr, 2).ok());

    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    std::mutex acked_mu;
    // ---- valid clients ----
    for (int c = 0; c < 2; ++c) {
      threads.emplace_back([&, c] {
        auto client = server.Connect();
        std::mt19937 rng(c);
        while (!stop) {
          auto result = client->Forward(ValidForward(64, rng));
          if (result.ok() && result->out().shape_size() == 2) tally.valid_ok.fetch_add(1);
          else tally.Fail("Forward", result.status());
          auto health = client->Health();
          if (health.ok() && *health == grpc::health::v1::HealthCheckResponse::SERVING) tally.valid_ok.fetch_add(1);
          else tally.Fail("Health", health.status());
        }
      });
    }
    threads.emplace_back([&] {  // uploads of versions whose every weight is a distinct function of the version
      auto client = server.Connect();
      std::vector<float> weights(131072);
      for (uint64_t round = 2; !stop; ++round) {
        for (size_t i = 0; i < weights.size(); ++i) weights[i] = static_cast<float>(round) + 1e-6f * static_cast<float>(i);
        auto uploaded = client->UploadWeights("acked", weights);
        if (!uploaded.ok()) {
          tally.Fail("UploadWeights", uploaded.status());
          continue;
        }
        tally.valid_ok.fetch_add(1);
        std::lock_guard<std::mutex> lock(acked_mu);
        acked_weights = weights;
        acked_version = uploaded->version();
      }
    });
    threads.emplace_back([&] {  // a Stream client that reads its answers
      auto client = server.Connect();
      std::mt19937 rng(7);
      while (!stop) {
        client::TpClient::Stream stream = client->OpenStream();
        tp::v1::StreamRequest request;
        *request.mutable_forward() = ValidForward(32, rng);
        for (int i = 0; i < 8; ++i) {
          request.set_request_id(i);
          stream.rpc->Write(request);
        }
        stream.rpc->WritesDone();
        tp::v1::StreamResponse response;
        int answered = 0;
        while (stream.rpc->Read(&response)) {
          if (response.code() == 0) tally.valid_ok.fetch_add(1);
          else tally.Fail("Stream/Forward", absl::Status(static_cast<absl::StatusCode>(response.code()), response.message()));
          ++answered;
        }
        grpc::Status status = stream.rpc->Finish();
        if (!status.ok() || answered != 8) tally.Fail("Stream", absl::UnknownError(status.error_message()));
      }
    });
    // ---- hostile clients ----
    threads.emplace_back([&] {  // garbage, malformed and oversize messages; huge Echo; too many paths
      auto channel = server.OwnChannel(/*max_send_bytes=*/48 << 20);
      std::mt19937 rng(11);
      std::uniform_int_distribution<int> byte(0, 255);
      auto client = server.Connect();
      for (int round = 0; !stop; ++round) {
        std::string garbage(std::uniform_int_distribution<int>(1, 4096)(rng), '\0');
        for (char& c : garbage) c = static_cast<char>(byte(rng));
        for (const char* method : {"/tp.v1.TensorProductService/Forward", "/tp.v1.TensorProductService/Backward",
                                   "/tp.v1.ModelService/GetModel", "/tp.v1.TensorProductService/Echo"}) {
          CallRaw(channel.get(), method, garbage);
          tally.hostile.fetch_add(1);
        }
        tp::v1::ForwardRequest bad = ValidForward(4, rng);
        bad.mutable_x1()->set_shape(1, 0);  // [4, 0]
        client->Forward(bad).status().IgnoreError();
        *bad.mutable_x1() = F32({4, 32}, std::vector<double>(128, std::nan("")));
        client->Forward(bad).status().IgnoreError();
        tp::v1::EchoRequest echo;
        echo.set_response_bytes(int64_t{1} << 30);
        client->Echo(echo).status().IgnoreError();
        // 32 MB: past the server's 16 MiB message limit.
        CallRaw(channel.get(), "/tp.v1.TensorProductService/Echo",
                std::string("\x0a\x80\x80\x80\x10", 5) + std::string(32 << 20, 'x'));
        const std::string wide = [] {
          std::string t;
          for (int i = 0; i < 64; ++i) absl::StrAppend(&t, i ? "+" : "", "1x0e");
          return t;
        }();
        client->CreateModel(absl::StrCat("wide", round), Spec(wide, wide, wide), nullptr).status().IgnoreError();
        tally.hostile.fetch_add(6);
      }
    });
    threads.emplace_back([&] {  // many Watch streams, held
      auto channel = server.OwnChannel();
      auto stub = grpc::health::v1::Health::NewStub(channel);
      while (!stop) {
        std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
        std::vector<std::unique_ptr<grpc::ClientReader<grpc::health::v1::HealthCheckResponse>>> readers;
        for (int i = 0; i < 30 && !stop; ++i) {
          contexts.push_back(std::make_unique<grpc::ClientContext>());
          readers.push_back(stub->Watch(contexts.back().get(), grpc::health::v1::HealthCheckRequest()));
          grpc::health::v1::HealthCheckResponse response;
          readers.back()->Read(&response);
          tally.hostile.fetch_add(1);
        }
        for (int i = 0; i < 20 && !stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        for (auto& context : contexts) context->TryCancel();
        for (auto& reader : readers) reader->Finish().IgnoreError();
      }
    });
    threads.emplace_back([&] {  // slow uploads of the big model that stall, and a Stream that never reads
      auto client = server.Connect();
      std::mt19937 rng(13);
      while (!stop) {
        std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
        std::vector<std::unique_ptr<grpc::ClientWriter<tp::v1::UploadWeightsRequest>>> writers;
        std::vector<tp::v1::ModelInfo> infos(8);
        for (int i = 0; i < 8; ++i) {
          contexts.push_back(std::make_unique<grpc::ClientContext>());
          writers.push_back(client->models().UploadWeights(contexts.back().get(), &infos[i]));
          tp::v1::UploadWeightsRequest message;
          message.set_model("big");
          std::vector<float> chunk(1024, 0.5f);
          wire::ForEachChunk(chunk.data(), 1024, 1024, [&](const tp::v1::WeightsChunk& c) {
            *message.mutable_chunk() = c;
            return writers.back()->Write(message);
          });
          tally.hostile.fetch_add(1);
        }
        grpc::ClientContext stream_context;
        auto stream = client->compute().Stream(&stream_context);
        tp::v1::StreamRequest request;
        *request.mutable_forward() = ValidForward(1024, rng);
        for (int i = 0; i < 40 && !stop; ++i) {
          request.set_request_id(i);
          stream->Write(request);
        }
        tally.hostile.fetch_add(1);
        for (int i = 0; i < 20 && !stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        stream_context.TryCancel();
        stream->Finish().IgnoreError();
        for (auto& writer : writers) writer->Finish().IgnoreError();  // dropped by the server by now
      }
    });
    // ---- the watcher: RSS of the server process ----
    const auto start = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
      max_rss = std::max(max_rss, RssBytes(server.pid()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    stop = true;
    for (auto& thread : threads) thread.join();
    ASSERT_TRUE(server.alive()) << "tpserve died; see " << log << ".0";
    max_rss = std::max(max_rss, RssBytes(server.pid()));

    // Idle past --idle_release_seconds (pooled memory goes back): reported, for the record.
    std::this_thread::sleep_for(std::chrono::seconds(4));
    idle_rss = RssBytes(server.pid());
    auto client = server.Connect();
    uint64_t version = 0;
    auto downloaded = client->DownloadWeights("acked", &version);
    ASSERT_TRUE(downloaded.ok()) << downloaded.status();
    EXPECT_EQ(version, acked_version);
    ASSERT_EQ(downloaded->size(), acked_weights.size());
    EXPECT_EQ(std::memcmp(downloaded->data(), acked_weights.data(), acked_weights.size() * 4), 0)
        << "the last acknowledged weights differ";
    server.Kill9();
  }
  for (const std::string& failure : tally.failures) ADD_FAILURE() << "valid call failed: " << failure;
  EXPECT_EQ(tally.valid_failed.load(), 0);
  EXPECT_GT(tally.valid_ok.load(), 100) << "the valid clients never got going";
  EXPECT_GT(tally.hostile.load(), 100);
  EXPECT_GT(acked_version, 3u) << "too few acknowledged uploads to test anything";
  EXPECT_LT(max_rss, kBudgetBytes) << "RSS " << max_rss << " past the budget";
  RecordProperty("max_rss_bytes", static_cast<int>(max_rss));
  RecordProperty("valid_calls", static_cast<int>(tally.valid_ok.load()));
  RecordProperty("hostile_calls", static_cast<int>(tally.hostile.load()));
  std::cout << "soak: " << tally.valid_ok.load() << " valid calls OK, " << tally.hostile.load()
            << " hostile, max RSS " << max_rss / kMiB << " MiB (budget " << kBudgetBytes / kMiB << " MiB), idle RSS "
            << idle_rss / kMiB << " MiB, "
            << acked_version << " acknowledged versions" << std::endl;

  // After kill -9 and a restart: the last acknowledged version, bit for bit.
  ServerProcess restarted(models, log + ".1");
  ASSERT_NE(restarted.port(), 0) << "tpserve did not restart; see " << log << ".1";
  uint64_t version = 0;
  auto downloaded = restarted.Connect()->DownloadWeights("acked", &version);
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_EQ(version, acked_version);
  ASSERT_EQ(downloaded->size(), acked_weights.size());
  EXPECT_EQ(std::memcmp(downloaded->data(), acked_weights.data(), acked_weights.size() * 4), 0)
      << "the last acknowledged weights differ after the restart";
}

}  // namespace
}  // namespace tpserve::testing
