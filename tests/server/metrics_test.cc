// The metrics module: every family is exported, buckets span 50 us to 10 s, and /metrics serves
// text that parses.
#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <regex>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace tpserve::server {
namespace {

using ::tpserve::testing::MetricValue;

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return "";
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, static_cast<size_t>(n));
  close(fd);
  return response;
}

// Every non-comment line must be `name{labels} value` or `name value` with a numeric value.
void ExpectParses(const std::string& text) {
  std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? ([-+]?[0-9.eE+-]+|[-+]?Inf|NaN|Nan)$)");
  std::istringstream lines(text);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << "unparsable: " << line;
    ++samples;
  }
  EXPECT_GT(samples, 0);
}

TEST(MetricsTest, LatencyBuckets_Resolve50MicrosecondsTo10Seconds) {
  std::vector<double> buckets = LatencyBuckets();
  EXPECT_DOUBLE_EQ(buckets.front(), 50e-6);
  EXPECT_GE(buckets.back(), 10.0);
  for (size_t i = 1; i < buckets.size(); ++i) EXPECT_NEAR(buckets[i] / buckets[i - 1], 1.5, 1e-9);
}

TEST(MetricsTest, EveryFamily_IsExportedWithItsLabels) {
  Metrics metrics;
  metrics.OnModelAdded("m");
  metrics.RequestStarted("Forward");
  metrics.RequestFinished("Forward", "m", "cpu", "OK", 0.002);
  metrics.RequestStarted("Forward");
  metrics.OnBatch("m", "cpu", 48, 3, 0.001);
  metrics.OnQueueTime("m", "cpu", 0.0001);
  metrics.OnLaunchStages("cpu", 0.00002, 0.0009, 0.00003);
  metrics.OnDeviceMemory("cpu", 0, 4000);
  metrics.OnDeviceMemory("cpu", 1, 96);  // two workers on one device add up
  metrics.OnQueueDepth(2);
  std::string text = metrics.Serialize();
  ExpectParses(text);
  EXPECT_EQ(MetricValue(text, "tp_request_latency_seconds_count", {"method=\"Forward\"", "model=\"m\"", "device=\"cpu\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_requests_total",
                        {"method=\"Forward\"", "model=\"m\"", "device=\"cpu\"", "code=\"OK\""}),
            1);
  EXPECT_EQ(MetricValue(text, "tp_in_flight_requests", {"method=\"Forward\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_batch_size_sum", {"model=\"m\"", "device=\"cpu\""}), 48);
  EXPECT_EQ(MetricValue(text, "tp_batch_requests_sum", {"device=\"cpu\""}), 3);
  EXPECT_EQ(MetricValue(text, "tp_compute_time_seconds_count", {"device=\"cpu\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_queue_time_seconds_count", {"model=\"m\""}), 1);
  EXPECT_DOUBLE_EQ(MetricValue(text, "tp_launch_stage_seconds_sum", {"device=\"cpu\"", "stage=\"gather\""}), 0.00002);
  EXPECT_DOUBLE_EQ(MetricValue(text, "tp_launch_stage_seconds_sum", {"device=\"cpu\"", "stage=\"device\""}), 0.0009);
  EXPECT_DOUBLE_EQ(MetricValue(text, "tp_launch_stage_seconds_sum", {"device=\"cpu\"", "stage=\"scatter\""}), 0.00003);
  EXPECT_EQ(MetricValue(text, "tp_device_memory_bytes", {"device=\"cpu\""}), 4096);
  EXPECT_EQ(MetricValue(text, "tp_queue_depth", {}), 2);
  // The 2 ms observation is counted by every bucket whose bound is >= 2 ms and by no other.
  std::regex bucket(R"re(tp_request_latency_seconds_bucket\{.*le="([^"]+)"\} ([0-9.]+))re");
  std::istringstream lines(text);
  std::string line;
  int buckets = 0;
  while (std::getline(lines, line)) {
    std::smatch match;
    if (!std::regex_search(line, match, bucket)) continue;
    ++buckets;
    double le = match[1] == "+Inf" ? INFINITY : std::stod(match[1]);
    EXPECT_EQ(std::stod(match[2]), le >= 0.002 ? 1 : 0) << line;
  }
  EXPECT_EQ(buckets, static_cast<int>(LatencyBuckets().size()) + 1);
}

TEST(MetricsTest, HttpEndpoint_ServesParsableText) {
  Metrics metrics;
  metrics.OnModelAdded("m");
  ASSERT_TRUE(metrics.StartHttp("127.0.0.1:0").ok());
  ASSERT_GT(metrics.port(), 0);
  metrics.OnBatch("m", "cpu", 7, 1, 0.01);
  std::string response = HttpGet(metrics.port(), "/metrics");
  ASSERT_NE(response.find("200 OK"), std::string::npos) << response.substr(0, 200);
  std::string body = response.substr(response.find("\r\n\r\n") + 4);
  ExpectParses(body);
  EXPECT_EQ(MetricValue(body, "tp_batch_size_sum", {"model=\"m\""}), 7);
}

// Model names become label values only while the model exists, and its series go with it: a
// client cannot grow the label set, and deleted models leave nothing behind.
TEST(MetricsTest, ModelLabels_OnlyForLiveModels_AndRemovedWithTheModel) {
  Metrics metrics;
  metrics.OnModelAdded("m");
  metrics.OnModelAdded("kept");
  for (const char* model : {"m", "kept", "never-created"}) {
    metrics.RequestStarted("Forward");
    metrics.RequestFinished("Forward", model, "cuda:0", "INTERNAL", 0.001);
    metrics.OnBatch(model, "cuda:0", 4, 1, 0.001);
    metrics.OnQueueTime(model, "cuda:0", 0.0001);
  }
  std::string text = metrics.Serialize();
  EXPECT_EQ(text.find("never-created"), std::string::npos);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"model=\"-\"", "device=\"cuda:0\"", "code=\"INTERNAL\""}), 1);
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"model=\"m\"", "device=\"cuda:0\""}), 1);
  metrics.OnModelRemoved("m");
  text = metrics.Serialize();
  ExpectParses(text);
  EXPECT_EQ(text.find("model=\"m\""), std::string::npos) << text;
  for (const char* family : {"tp_requests_total", "tp_request_latency_seconds_count", "tp_batch_size_count",
                             "tp_batch_requests_count", "tp_queue_time_seconds_count"}) {
    EXPECT_EQ(MetricValue(text, family, {"model=\"kept\""}), 1) << family;
  }
  // Per-device errors are still summed over what remains.
  EXPECT_EQ(MetricValue(text, "tp_requests_total", {"device=\"cuda:0\"", "code=\"INTERNAL\""}), 2);
}

}  // namespace
}  // namespace tpserve::server
