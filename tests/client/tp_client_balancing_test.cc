// The client library over several real servers on loopback (in-process tpserve, CPU backend): the
// channel's target forms, round_robin over every server, health checking (a server that reports
// NOT_SERVING gets no calls), retries of Forward on UNAVAILABLE and none for Backward, deadlines.
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/lib/channel_stats.h"
#include "client/lib/channel_target.h"
#include "client/lib/service_config.h"
#include "client/lib/tp_client.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_test_util.h"
#include "tests/support/fault_injecting_backend.h"

namespace tpserve::testing {
namespace {

using grpc::health::v1::HealthCheckResponse;

const tp::v1::ModelSpec kSpec = Spec("4x0e + 2x1o", "2x0e + 1x1o", "4x0e + 2x1o");

tp::v1::ForwardRequest Request(int batch = 3) {
  tp::v1::ForwardRequest request;
  request.set_model("m");
  std::vector<double> x1(static_cast<size_t>(batch * 10)), x2(static_cast<size_t>(batch * 5));
  for (size_t i = 0; i < x1.size(); ++i) x1[i] = 0.1 * static_cast<double>(i % 7) - 0.3;
  for (size_t i = 0; i < x2.size(); ++i) x2[i] = 0.2 * static_cast<double>(i % 5) - 0.4;
  *request.mutable_x1() = F32({batch, 10}, x1);
  *request.mutable_x2() = F32({batch, 5}, x2);
  return request;
}

double ForwardCount(TestServer& server, const std::string& code) {
  double v = MetricValue(server.metrics().Serialize(), "tp_requests_total", {"method=\"Forward\"", "code=\"" + code + "\""});
  return v < 0 ? 0 : v;
}

double BackwardCount(TestServer& server, const std::string& code) {
  double v = MetricValue(server.metrics().Serialize(), "tp_requests_total", {"method=\"Backward\"", "code=\"" + code + "\""});
  return v < 0 ? 0 : v;
}

// Servers with the same seeded model "m".
std::vector<std::unique_ptr<TestServer>> StartServers(int n) {
  std::vector<std::unique_ptr<TestServer>> servers;
  for (int i = 0; i < n; ++i) {
    servers.push_back(TestServer::Start());
    EXPECT_NE(servers.back(), nullptr);
    EXPECT_TRUE(servers.back()->Connect()->CreateModel("m", kSpec, nullptr, /*seed=*/5).ok());
  }
  return servers;
}

std::string List(const std::vector<TestServer*>& servers) {
  std::string list;
  for (TestServer* s : servers) list += (list.empty() ? "" : ",") + s->target();
  return list;
}

std::unique_ptr<client::TpClient> Balanced(const std::string& list, int max_attempts = 3) {
  client::ClientOptions options;
  options.target = list;
  options.timeout_seconds = 10;
  options.policy.max_attempts = max_attempts;
  auto connected = client::TpClient::Connect(options);
  EXPECT_TRUE(connected.ok()) << connected.status();
  return connected.ok() ? *std::move(connected) : nullptr;
}

// Calls Forward until every server in `expect_ready` has answered one (subchannels connect and pass
// their health check one by one); false after 10 s.
bool WarmUp(client::TpClient& client, const std::vector<TestServer*>& expect_ready) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  const tp::v1::ForwardRequest request = Request();
  while (std::chrono::steady_clock::now() < deadline) {
    if (!client.Forward(request).ok()) return false;
    bool all = true;
    for (TestServer* s : expect_ready) all = all && ForwardCount(*s, "OK") > 0;
    if (all) return true;
  }
  return false;
}

TEST(ChannelTargetTest, ListsBecomeOneResolverTarget) {
  EXPECT_EQ(*client::ChannelTarget("127.0.0.1:5000"), "127.0.0.1:5000");
  EXPECT_EQ(*client::ChannelTarget("127.0.0.1:1, 127.0.0.2:2"), "ipv4:127.0.0.1:1,127.0.0.2:2");
  EXPECT_EQ(*client::ChannelTarget("localhost:7,127.0.0.1:8"), "ipv4:127.0.0.1:7,127.0.0.1:8");
  EXPECT_EQ(*client::ChannelTarget("[::1]:7,[::1]:8"), "ipv6:[::1]:7,[::1]:8");
  EXPECT_EQ(*client::ChannelTarget("dns:///tpserve.internal:50051"), "dns:///tpserve.internal:50051");
  EXPECT_EQ(*client::ChannelTarget("ipv4:127.0.0.1:1,127.0.0.1:2"), "ipv4:127.0.0.1:1,127.0.0.1:2");
  EXPECT_FALSE(client::ChannelTarget("").ok());
  EXPECT_FALSE(client::ChannelTarget("127.0.0.1:1,noport").ok());
  EXPECT_FALSE(client::ChannelTarget("127.0.0.1:1,[::1]:2").ok());
  EXPECT_EQ(client::ListedAddresses("ipv4:127.0.0.1:1,127.0.0.1:2"),
            (std::vector<std::string>{"127.0.0.1:1", "127.0.0.1:2"}));
  EXPECT_EQ(client::ListedAddresses("a:1"), (std::vector<std::string>{"a:1"}));
  EXPECT_TRUE(client::ListedAddresses("dns:///x:1").empty());
}

TEST(ServiceConfigTest, RetriesOnlyIdempotentCallsOnUnavailable) {
  nlohmann::json config = nlohmann::json::parse(client::ServiceConfigJson({}));
  EXPECT_EQ(config["loadBalancingConfig"][0].begin().key(), "round_robin");
  EXPECT_EQ(config["healthCheckConfig"]["serviceName"], "tp.v1.TensorProductService");
  const nlohmann::json& method = config["methodConfig"][0];
  EXPECT_EQ(method["retryPolicy"]["retryableStatusCodes"], nlohmann::json::array({"UNAVAILABLE"}));
  std::vector<std::string> names;
  for (const auto& n : method["name"]) names.push_back(n["method"].get<std::string>());
  EXPECT_EQ(names, (std::vector<std::string>{"Forward", "GetModel", "ListModels", "DownloadWeights"}));
  client::ChannelPolicy none;
  none.max_attempts = 1;
  none.health_service.clear();
  nlohmann::json plain = nlohmann::json::parse(client::ServiceConfigJson(none));
  EXPECT_FALSE(plain.contains("methodConfig"));
  EXPECT_FALSE(plain.contains("healthCheckConfig"));
}

TEST(TpClientTest, EveryCallCarriesTheDefaultDeadline) {
  client::ClientOptions options;
  options.target = "127.0.0.1:1";
  auto client = client::TpClient::Connect(options);
  ASSERT_TRUE(client.ok());
  auto left = (*client)->NewContext()->deadline() - std::chrono::system_clock::now();
  EXPECT_GT(left, std::chrono::seconds(50));
  EXPECT_LE(left, std::chrono::seconds(61));
}

TEST(TpClientBalancingTest, RoundRobin_SpreadsCallsOverEveryServer) {
  auto servers = StartServers(3);
  std::vector<TestServer*> all{servers[0].get(), servers[1].get(), servers[2].get()};
  auto client = Balanced(List(all));
  ASSERT_TRUE(WarmUp(*client, all)) << "not every server became ready";
  std::vector<double> before;
  for (TestServer* s : all) before.push_back(ForwardCount(*s, "OK"));
  const tp::v1::ForwardRequest request = Request();
  auto expected = servers[0]->Connect()->Forward(request);
  ASSERT_TRUE(expected.ok());
  before[0] += 1;  // the direct call above
  for (int i = 0; i < 60; ++i) {
    auto r = client->Forward(request);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->out().data(), expected->out().data()) << "same seed, same weights, same answer";
  }
  double total = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const double share = ForwardCount(*all[i], "OK") - before[i];
    EXPECT_NEAR(share, 20, 2) << "server " << i;  // strict rotation once all are READY
    total += share;
  }
  EXPECT_EQ(total, 60);
  // channelz sees the same spread, per address.
  auto calls = client::ReadChannelCalls(client->channel_target());
  ASSERT_TRUE(calls.ok()) << calls.status();
  EXPECT_EQ(calls->by_address.size(), 3u);
}

// A resolver URI: dns:///localhost:PORT resolves (127.0.0.1, and ::1 where it exists, on which
// nothing listens: round_robin keeps to the address that is READY).
TEST(TpClientBalancingTest, DnsTarget_Works) {
  auto servers = StartServers(1);
  auto client = Balanced("dns:///localhost:" + std::to_string(servers[0]->port()));
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 5; ++i) {
    auto r = client->Forward(Request());
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_EQ(ForwardCount(*servers[0], "OK"), 5);
  EXPECT_EQ(client->channel_target(), "dns:///localhost:" + std::to_string(servers[0]->port()));
}

TEST(TpClientBalancingTest, NotServingServer_GetsNoCalls) {
  auto servers = StartServers(2);
  auto device = std::make_shared<FakeDevice>();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<FaultInjectingBackend>(device));
  auto sick = TestServer::Start({}, {}, std::move(backends));
  ASSERT_NE(sick, nullptr);
  auto direct = sick->Connect();
  ASSERT_TRUE(direct->CreateModel("m", kSpec, nullptr, /*seed=*/5).ok());
  // A device fault: every device lost, so the server reports NOT_SERVING (and stays up).
  device->fault.store(InjectedFault::kDeviceFault);
  EXPECT_FALSE(direct->Forward(Request()).ok());
  ASSERT_EQ(*direct->Health(), HealthCheckResponse::NOT_SERVING);
  const double sick_before = ForwardCount(*sick, "OK") + ForwardCount(*sick, "UNAVAILABLE") + ForwardCount(*sick, "INTERNAL");

  std::vector<TestServer*> healthy{servers[0].get(), servers[1].get()};
  auto client = Balanced(List({servers[0].get(), sick.get(), servers[1].get()}));
  ASSERT_TRUE(WarmUp(*client, healthy));
  for (int i = 0; i < 40; ++i) {
    auto r = client->Forward(Request());
    ASSERT_TRUE(r.ok()) << r.status();
  }
  const double sick_after = ForwardCount(*sick, "OK") + ForwardCount(*sick, "UNAVAILABLE") + ForwardCount(*sick, "INTERNAL");
  EXPECT_EQ(sick_after, sick_before) << "a NOT_SERVING server was sent calls";
  EXPECT_GE(ForwardCount(*servers[0], "OK"), 15);
  EXPECT_GE(ForwardCount(*servers[1], "OK"), 15);
  // Health() still reaches a server (it bypasses the health-checked channel).
  EXPECT_TRUE(client->Health().ok());
}

// One healthy server and one whose core has stopped (health still SERVING, calls UNAVAILABLE):
// Forward calls that land there are retried on the other; Backward calls are not.
class RetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    servers_ = StartServers(2);
    good_ = servers_[0].get();
    broken_ = servers_[1].get();
    broken_->core().Shutdown();
  }
  std::vector<std::unique_ptr<TestServer>> servers_;
  TestServer* good_ = nullptr;
  TestServer* broken_ = nullptr;
};

TEST_F(RetryTest, Forward_IsRetriedOnAnotherServer) {
  auto client = Balanced(List({good_, broken_}));
  const tp::v1::ForwardRequest request = Request();
  auto expected = good_->Connect()->Forward(request);
  ASSERT_TRUE(expected.ok());
  // Connected first: each subchannel's health Watch is an attempt of its own, not a retry.
  ASSERT_TRUE(WarmUp(*client, {good_}));
  const double good_before = ForwardCount(*good_, "OK"), refused_before = ForwardCount(*broken_, "UNAVAILABLE");
  auto calls_before = client::ReadChannelCalls(client->channel_target());
  for (int i = 0; i < 30; ++i) {
    auto r = client->Forward(request);
    ASSERT_TRUE(r.ok()) << "call " << i << ": " << r.status();
    EXPECT_EQ(r->out().data(), expected->out().data()) << "a retried request is sent whole";
  }
  const double refused = ForwardCount(*broken_, "UNAVAILABLE") - refused_before;
  EXPECT_GT(refused, 0) << "round_robin never picked the broken server";
  EXPECT_EQ(ForwardCount(*good_, "OK") - good_before, 30) << "each call answered once";
  auto calls_after = client::ReadChannelCalls(client->channel_target());
  ASSERT_TRUE(calls_before.ok() && calls_after.ok());
  client::ChannelCalls delta = client::Difference(*calls_after, *calls_before);
  EXPECT_EQ(delta.calls.started, 30);
  EXPECT_EQ(delta.attempts() - delta.calls.started, refused) << "one retry per refused attempt";
}

TEST_F(RetryTest, Forward_WithoutRetries_SeesTheUnavailable) {
  auto client = Balanced(List({good_, broken_}), /*max_attempts=*/1);
  int unavailable = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = client->Forward(Request());
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
      ++unavailable;
    }
  }
  EXPECT_GT(unavailable, 0);
  EXPECT_EQ(unavailable, ForwardCount(*broken_, "UNAVAILABLE"));
}

TEST_F(RetryTest, Backward_IsNotRetried) {
  auto client = Balanced(List({good_, broken_}));
  tp::v1::BackwardRequest request;
  const tp::v1::ForwardRequest forward = Request();
  request.set_model("m");
  *request.mutable_x1() = forward.x1();
  *request.mutable_x2() = forward.x2();
  request.set_loss(tp::v1::LOSS_SUM);
  request.set_want_grad_x1(true);
  int ok = 0, unavailable = 0;
  for (int i = 0; i < 30; ++i) {
    auto r = client->Backward(request);
    if (r.ok()) ++ok;
    else if (r.status().code() == absl::StatusCode::kUnavailable) ++unavailable;
    else ADD_FAILURE() << r.status();
  }
  EXPECT_GT(unavailable, 0) << "round_robin never picked the broken server";
  EXPECT_EQ(unavailable, BackwardCount(*broken_, "UNAVAILABLE")) << "a Backward was retried";
  EXPECT_EQ(ok, BackwardCount(*good_, "OK"));
}

}  // namespace
}  // namespace tpserve::testing
