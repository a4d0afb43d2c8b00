// Scale-out on loopback: three tpserve processes, one tp-load run over all of them (round_robin
// through the client library). Every server's /metrics shows its share; one server is killed
// (SIGKILL, calls in flight) in the middle of the run: the run carries on over the other two, the
// Forward calls caught on the dead server are retried by the channel (counted by channelz), every
// request gets exactly one outcome, and any errors are reported by code. About 8 s.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "client/tp-load/metrics_scrape.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_test_util.h"
#include "tests/support/tpserve_process.h"

#ifndef TPSERVE_PATH
#error "TPSERVE_PATH must name the tpserve binary"
#endif
#ifndef TP_LOAD_PATH
#error "TP_LOAD_PATH must name the tp-load binary"
#endif

namespace tpserve::testing {
namespace {


// A tpserve process on free loopback ports (gRPC and /metrics), CPU backend, with the seeded demo
// model "small" (same seed everywhere, so the same weights).
class ServerProcess : public TpserveProcess {
 public:
  explicit ServerProcess(const std::string& log_path)
      : TpserveProcess({TPSERVE_PATH,
                        {"--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0", "--backend=cpu", "--demo_model=small",
                         "--demo_irreps_in1=8x0e + 8x1e", "--demo_irreps_in2=8x0e + 8x1e",
                         "--demo_irreps_out=8x0e + 8x1e", "--shutdown_grace_seconds=1"},
                        log_path}) {}
  void Kill() { Kill9(); }
  std::string address() const { return target(); }
  std::string metrics_address() const { return metrics_target(); }

  // Forward calls it answered OK so far; -1 when /metrics does not answer.
  double ForwardOk() const {
    absl::StatusOr<std::string> text = load::HttpGet(metrics_address(), "/metrics", 2.0);
    if (!text.ok()) return -1;
    return load::SumSeries(load::ParsePrometheus(*text), "tp_requests_total", {"method=\"Forward\"", "code=\"OK\""});
  }
};

TEST(ScaleOutTest, ThreeServers_OneKilledMidRun_LoadCarriesOnWithRetries) {
  TempDir dir;
  std::vector<std::unique_ptr<ServerProcess>> servers;
  std::string list, metrics;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(std::make_unique<ServerProcess>(dir.path() + "/tpserve" + std::to_string(i) + ".log"));
    ASSERT_NE(servers.back()->port(), 0) << ReadFile(dir.path() + "/tpserve" + std::to_string(i) + ".log");
    list += (i ? "," : "") + servers.back()->address();
    metrics += (i ? "," : "") + servers.back()->metrics_address();
  }
  const std::string json_path = dir.path() + "/scale.json", out_path = dir.path() + "/tp-load.txt";
  const std::string command = std::string(TP_LOAD_PATH) + " --server " + list + " --metrics " + metrics +
                              " --model small --batch 16 --concurrency 6 --warmup_s 0.3 --duration_s 4"
                              " --stability 0 --deadline_s 5 --progress off --json " + json_path + " > " + out_path +
                              " 2>&1";
  int exit_status = -1;
  std::thread load([&] { exit_status = std::system(command.c_str()); });

  // Once the load runs on every server, the victim's count just before it dies.
  ServerProcess& victim = *servers[1];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool all_busy = false;
  while (!all_busy && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    all_busy = true;
    for (auto& s : servers) all_busy = all_busy && s->ForwardOk() > 200;
  }
  ASSERT_TRUE(all_busy) << "the load did not reach every server";
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // inside the measured window
  const double victim_ok = victim.ForwardOk();
  victim.Kill();
  load.join();
  ASSERT_EQ(WEXITSTATUS(exit_status), 0) << ReadFile(out_path);

  nlohmann::json json = nlohmann::json::parse(ReadFile(json_path), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << ReadFile(out_path);
  const nlohmann::json& level = json["levels"][0];
  // The run carried on: answers all along, errors (if any slipped past the retries) by code.
  EXPECT_GT(level["ok"].get<int>(), 500) << level.dump(1);
  EXPECT_LE(level["errors"].get<int>(), 2) << level["errors_by_code"].dump();
  for (const auto& [code, count] : level["errors_by_code"].items()) {
    EXPECT_TRUE(code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED") << code << ": " << count;
  }
  // The calls caught on the dead server were retried on the others (channelz: attempts > calls).
  EXPECT_GE(level["channel"]["retries"].get<int>(), 1) << level["channel"].dump(1);
  EXPECT_EQ(level["channel"]["by_address"].size(), 3u);
  // Per-server shares from /metrics: the two survivors measured, the dead one unreachable at the end.
  ASSERT_EQ(level["servers"].size(), 3u);
  EXPECT_FALSE(level["servers"][1]["measured"].get<bool>());
  for (int i : {0, 2}) {
    EXPECT_TRUE(level["servers"][i]["measured"].get<bool>());
    EXPECT_GT(level["servers"][i]["forward_ok"].get<double>(), 200) << i;
  }
  // Every request had one outcome; and the servers answered as many as tp-load received: the
  // survivors' final counts plus the victim's count at its death (read just before the kill; a few
  // more may have finished in between) make tp-load's OK total, plus its 4 setup calls.
  EXPECT_EQ(json["totals"]["issued"], json["totals"]["completed"]);
  const double client_ok = json["totals"]["ok"].get<double>() + 4;
  const double survivors_ok = servers[0]->ForwardOk() + servers[2]->ForwardOk();
  EXPECT_GE(client_ok - survivors_ok, victim_ok - 2) << "more answers than requests";
  EXPECT_LE(client_ok - survivors_ok, victim_ok + 30);
}

}  // namespace
}  // namespace tpserve::testing
