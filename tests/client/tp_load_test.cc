// tp-load against an in-process server with a small model and short phases: it verifies, times,
// and writes the JSON the H100 run will be read from.
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

TEST(TpLoadTest, VerifiesTimesAndWritesJson) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  TempDir dir;
  std::string json_path = dir.path() + "/load.json";
  std::string command = std::string(TP_LOAD_PATH) + " --server " + server->target() +
                        " --model small --irreps '4x0e + 4x1e' --batch 8 --latency_iters 20 --streams 2 --window 2"
                        " --duration_s 0.3 --json " + json_path + " > " + dir.path() + "/out.txt 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  std::ifstream in(json_path);
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << text.str();
  EXPECT_LT(json["verify_relative_error"].get<double>(), 1e-4);
  EXPECT_GT(json["latency_ms"]["p50"].get<double>(), 0);
  EXPECT_EQ(json["latency_ms"]["calls"].get<int>(), 20);
  EXPECT_EQ(json["paired_ms"]["pairs"].get<int>(), 20);  // --paired_iters defaults to --latency_iters
  EXPECT_GT(json["paired_ms"]["forward_p50"].get<double>(), 0);
  EXPECT_GT(json["paired_ms"]["echo_p50"].get<double>(), 0);
  EXPECT_TRUE(json["paired_ms"]["forward_minus_echo_p50"].is_number());
  EXPECT_GT(json["throughput"]["forward_requests_per_s"].get<double>(), 0);
  EXPECT_GT(json["throughput"]["stream_echo_requests_per_s"].get<double>(), 0);
  EXPECT_EQ(json["throughput"]["forward_errors"].get<int>(), 0);
  EXPECT_EQ(json["device"].get<std::string>(), "cpu");
  // The model it created is there, seeded.
  EXPECT_TRUE(server->core().GetModel("small").ok());
}

}  // namespace
}  // namespace tpserve::testing
