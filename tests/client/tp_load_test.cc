// tp-load (the real binary) against an in-process CPU server with a small model: a short closed-loop
// sweep with the server's breakdown from its /metrics, an open-loop run on streams, --help, and
// a bad flag. Bounded: a few seconds in all.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_test_util.h"

#ifndef TP_LOAD_PATH
#error "TP_LOAD_PATH must name the tp-load binary"
#endif

namespace tpserve::testing {
namespace {


// Runs tp-load with `flags`; its exit code, and its stdout+stderr in `output`.
int RunTpLoad(const std::string& flags, const TempDir& dir, std::string* output) {
  const std::string out = dir.path() + "/out.txt";
  const std::string command = std::string(TP_LOAD_PATH) + " " + flags + " > " + out + " 2>&1";
  int status = std::system(command.c_str());
  *output = ReadFile(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(ReadFile(path), nullptr, false);
}

TEST(TpLoadTest, ClosedLoopSweep_WritesEveryFigureAndTheServerBreakdown) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->metrics().StartHttp("127.0.0.1:0").ok());
  TempDir dir;
  const std::string json_path = dir.path() + "/load.json", csv = dir.path() + "/load.csv", svg = dir.path() + "/load.svg";
  std::string output;
  const std::string flags = "--server " + server->target() + " --metrics 127.0.0.1:" +
                            std::to_string(server->metrics().port()) +
                            " --model small --irreps '4x0e + 4x1e' --batch 8 --concurrency 1:4:x2 --warmup_s 0.2"
                            " --duration_s 0.3 --stability 0.5 --max_windows 4 --verify_fraction 0.2 --json " +
                            json_path + " --csv " + csv + " --svg " + svg;
  ASSERT_EQ(RunTpLoad(flags, dir, &output), 0) << output;
  nlohmann::json json = ReadJson(json_path);
  ASSERT_FALSE(json.is_discarded()) << ReadFile(json_path);
  EXPECT_EQ(json["device"], "cpu");
  EXPECT_LT(json["verify"]["first_response_error"].get<double>(), 1e-4);
  EXPECT_GT(json["verify"]["checked"].get<int>(), 1);
  EXPECT_EQ(json["verify"]["failed"].get<int>(), 0);
  ASSERT_EQ(json["levels"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const nlohmann::json& level = json["levels"][i];
    EXPECT_EQ(level["concurrency"].get<double>(), 1 << i);
    EXPECT_GT(level["requests_per_s"].get<double>(), 0);
    EXPECT_DOUBLE_EQ(level["samples_per_s"].get<double>(), 8 * level["requests_per_s"].get<double>());
    EXPECT_GT(level["megabytes_per_s"].get<double>(), 0);
    const nlohmann::json& lat = level["latency_ms"];
    EXPECT_GT(lat["p50"].get<double>(), 0);
    EXPECT_LE(lat["p50"].get<double>(), lat["p90"].get<double>());
    EXPECT_LE(lat["p90"].get<double>(), lat["p95"].get<double>());
    EXPECT_LE(lat["p99"].get<double>(), lat["p99_9"].get<double>());
    EXPECT_LE(lat["p99_9"].get<double>(), lat["max"].get<double>());
    EXPECT_EQ(level["errors"].get<int>(), 0);
    EXPECT_GE(level["windows"].size(), 1u);
    // The server counted at least the answers tp-load counted in the same windows (it also
    // finishes calls whose answers land just after a window closes).
    const nlohmann::json& server_side = level["server_total"];
    EXPECT_GE(server_side["forward_ok"].get<double>(), level["ok"].get<double>() * 0.9);
    EXPECT_GT(server_side["compute_ms_mean"].get<double>(), 0);
    EXPECT_GE(server_side["batch_samples_mean"].get<double>(), 8);
    EXPECT_GT(level["channel"]["attempts"].get<int>(), 0);
  }
  EXPECT_NE(output.find("p99.9 ms"), std::string::npos) << output;
  std::string csv_text = ReadFile(csv);
  EXPECT_EQ(std::count(csv_text.begin(), csv_text.end(), '\n'), 4) << csv_text;
  EXPECT_NE(ReadFile(svg).find("<polyline"), std::string::npos);
  EXPECT_TRUE(server->core().GetModel("small").ok()) << "tp-load created the model";
}

TEST(TpLoadTest, OpenLoopOnStreams_MixedOperations) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  TempDir dir;
  const std::string json_path = dir.path() + "/open.json";
  std::string output;
  const std::string flags = "--server " + server->target() +
                            " --model small --irreps '4x0e + 4x1e' --batch 4 --rate 200 --arrivals constant"
                            " --transport stream --streams 2 --op mixed --loss sum --warmup_s 0.1 --duration_s 0.5"
                            " --stability 0 --verify_fraction 0.5 --json " + json_path;
  ASSERT_EQ(RunTpLoad(flags, dir, &output), 0) << output;
  nlohmann::json json = ReadJson(json_path);
  ASSERT_FALSE(json.is_discarded());
  ASSERT_EQ(json["levels"].size(), 1u);
  const nlohmann::json& level = json["levels"][0];
  EXPECT_EQ(level["mode"], "open");
  EXPECT_EQ(level["rate_per_s"].get<double>(), 200);
  // 200/s for ~0.5 s: the open loop keeps its schedule whatever the latency.
  EXPECT_NEAR(level["requests_per_s"].get<double>(), 200, 40);
  EXPECT_EQ(level["errors"].get<int>(), 0) << level.dump();
  EXPECT_GT(json["verify"]["checked"].get<int>(), 5);
  EXPECT_EQ(json["verify"]["failed"].get<int>(), 0);
  // Both kinds ran: the server saw Forward and Backward on its streams.
  const std::string metrics = server->metrics().Serialize();
  EXPECT_GT(MetricValue(metrics, "tp_batch_size_count", {}), 0);
}

// --op echo: the same bytes as a Forward, no compute; its throughput is the transport's ceiling.
TEST(TpLoadTest, EchoOp_SendsTheForwardsBytesWithoutCompute) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  TempDir dir;
  const std::string json_path = dir.path() + "/echo.json";
  std::string output;
  for (const char* transport : {"unary", "stream"}) {
    const std::string flags = "--server " + server->target() + " --model small --irreps '4x0e + 4x1e' --batch 8 --op echo"
                              " --concurrency 2 --warmup_s 0.1 --duration_s 0.3 --stability 0 --transport " +
                              transport + " --json " + json_path;
    ASSERT_EQ(RunTpLoad(flags, dir, &output), 0) << output;
    nlohmann::json json = ReadJson(json_path);
    ASSERT_FALSE(json.is_discarded());
    const nlohmann::json& level = json["levels"][0];
    EXPECT_GT(level["requests_per_s"].get<double>(), 0) << transport;
    EXPECT_EQ(level["errors"].get<int>(), 0) << transport;
    EXPECT_EQ(level["samples_per_s"].get<double>(), 0) << transport;
    EXPECT_NEAR(level["megabytes_per_s"].get<double>() * 1e6 / level["requests_per_s"].get<double>(),
                json["forward_bytes"].get<double>(), 1) << transport;
  }
}

TEST(TpLoadTest, Help_ListsEveryFlagWithItsDefault) {
  TempDir dir;
  std::string output;
  RunTpLoad("--help", dir, &output);
  EXPECT_EQ(output.find("No flags matched"), std::string::npos) << output;
  for (const char* flag : {"--server", "--metrics", "--concurrency", "--rate", "--arrivals", "--transport", "--op",
                           "--batch", "--precision", "--duration_s", "--requests", "--warmup_s", "--stability",
                           "--json", "--csv", "--svg", "--max_attempts", "--deadline_s"}) {
    EXPECT_NE(output.find(std::string("    ") + flag + " "), std::string::npos) << flag << "\n" << output;
  }
  EXPECT_NE(output.find("default: \"poisson\""), std::string::npos) << output;
}

TEST(TpLoadTest, BadSweep_IsRefusedWithAClearMessage) {
  TempDir dir;
  std::string output;
  EXPECT_EQ(RunTpLoad("--concurrency 64:1:x2", dir, &output), 2);
  EXPECT_NE(output.find("END is below START"), std::string::npos) << output;
}

}  // namespace
}  // namespace tpserve::testing
