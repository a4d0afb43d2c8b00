// The metrics module: every family is exported, buckets span 50 us to 10 s, and /metrics serves
// text that parses; the endpoint against hostile clients (real sockets): a trickling client is cut
// at the deadline while others scrape, connections are served at once up to a bound, accept()
// errors do not spin, and the token and TLS options hold.
#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace tpserve::server {
namespace {

using ::tpserve::testing::MetricValue;

// A connected loopback socket (-1 on failure).
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string HttpGet(int port, const std::string& path, const std::string& headers = "") {
  int fd = Connect(port);
  if (fd < 0) return "";
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n" + headers + "Connection: close\r\n\r\n";
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

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Reads until the peer closes (or 20 s pass); the seconds that took.
double SecondsUntilClosed(int fd) {
  timeval timeout{20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  const auto start = std::chrono::steady_clock::now();
  char buffer[256];
  while (read(fd, buffer, sizeof(buffer)) > 0) {
  }
  return SecondsSince(start);
}

TEST(MetricsHttpTest, TricklingClient_IsCutAtTheDeadlineAndNeverBlocksScrapes) {
  Metrics metrics;
  HttpExposerOptions options;
  options.address = "127.0.0.1:0";
  options.deadline = absl::Seconds(2);
  ASSERT_TRUE(metrics.StartHttp(options).ok());
  // One byte of a request every 1.5 s: each read succeeds, the request never ends.
  const int trickler = Connect(metrics.port());
  ASSERT_GE(trickler, 0);
  const auto connected = std::chrono::steady_clock::now();
  std::atomic<bool> cut{false};
  std::atomic<double> cut_after{-1};
  std::thread trickle([&] {
    const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for (char c : request) {
      if (send(trickler, &c, 1, MSG_NOSIGNAL) != 1) break;
      pollfd p{trickler, POLLIN, 0};
      if (poll(&p, 1, 1500) > 0) break;  // the server closed it (readable: EOF)
    }
    cut_after = SecondsSince(connected);
    char byte;
    cut = read(trickler, &byte, 1) <= 0;
  });
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const std::string response = HttpGet(metrics.port(), "/metrics");
    EXPECT_NE(response.find("200 OK"), std::string::npos);
    EXPECT_LT(SecondsSince(start), 1.0) << "a scrape waited on the trickling client";
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  trickle.join();
  close(trickler);
  EXPECT_TRUE(cut) << "the trickling client was never disconnected";
  EXPECT_LT(cut_after, 4.0) << "cut after " << cut_after << " s with a 2 s deadline";
}

TEST(MetricsHttpTest, SeveralConnectionsAtOnce_UpToABound) {
  Metrics metrics;
  HttpExposerOptions options;
  options.address = "127.0.0.1:0";
  options.max_connections = 4;
  options.deadline = absl::Seconds(3);
  ASSERT_TRUE(metrics.StartHttp(options).ok());
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(Connect(metrics.port()));  // connected, silent
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto start = std::chrono::steady_clock::now();
  EXPECT_NE(HttpGet(metrics.port(), "/metrics").find("200 OK"), std::string::npos) << "3 idle of 4: one left";
  EXPECT_LT(SecondsSince(start), 1.0);
  idle.push_back(Connect(metrics.port()));  // the fourth: the bound is reached
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  start = std::chrono::steady_clock::now();
  const std::string refused = HttpGet(metrics.port(), "/metrics");
  EXPECT_NE(refused.find("503"), std::string::npos) << refused.substr(0, 100);
  EXPECT_LT(SecondsSince(start), 1.0) << "refused at once, not queued";
  for (int fd : idle) EXPECT_LT(SecondsUntilClosed(fd), 5.0) << "idle connections end at the deadline";
  for (int fd : idle) close(fd);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_NE(HttpGet(metrics.port(), "/metrics").find("200 OK"), std::string::npos);
}

TEST(MetricsHttpTest, AcceptErrors_BackOffInsteadOfSpinning) {
  // In a child process: the exposer runs out of descriptors with a connection pending, so every
  // accept() fails with EMFILE. Its CPU time over one second shows whether the loop spins.
  int report[2], ready[2];
  ASSERT_EQ(pipe(report), 0);
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  if (child == 0) {
    Metrics child_metrics;
    if (!child_metrics.StartHttp("127.0.0.1:0").ok()) _exit(3);
    const int port = child_metrics.port();
    (void)!write(ready[1], &port, sizeof(port));
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_cur, 4096);
    setrlimit(RLIMIT_NOFILE, &limit);
    while (dup(0) >= 0) {
    }
    char go;
    (void)!read(ready[0], &go, 1);  // the parent has connected
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    timespec before{}, after{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &before);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &after);
    const double cpu_ms = (after.tv_sec - before.tv_sec) * 1e3 + (after.tv_nsec - before.tv_nsec) / 1e6;
    (void)!write(report[1], &cpu_ms, sizeof(cpu_ms));
    _exit(0);
  }
  int port = 0;
  ASSERT_EQ(read(ready[0], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the child fills its table
  const int pending = Connect(port);  // completes in the kernel's backlog; accept() cannot take it
  ASSERT_GE(pending, 0);
  const char go = 1;
  (void)!write(ready[1], &go, 1);
  double cpu_ms = -1;
  ASSERT_EQ(read(report[0], &cpu_ms, sizeof(cpu_ms)), static_cast<ssize_t>(sizeof(cpu_ms)));
  int status = 0;
  waitpid(child, &status, 0);
  close(pending);
  EXPECT_LT(cpu_ms, 200) << "the accept loop spun on EMFILE (" << cpu_ms << " ms of CPU in 1 s)";
}

TEST(MetricsHttpTest, RequiresTheTokenWhenConfigured) {
  Metrics metrics;
  HttpExposerOptions options;
  options.address = "127.0.0.1:0";
  options.bearer_token = "scrape-secret";
  ASSERT_TRUE(metrics.StartHttp(options).ok());
  EXPECT_NE(HttpGet(metrics.port(), "/metrics").find("401 Unauthorized"), std::string::npos);
  EXPECT_NE(HttpGet(metrics.port(), "/metrics", "Authorization: Bearer wrong\r\n").find("401"), std::string::npos);
  const std::string ok = HttpGet(metrics.port(), "/metrics", "authorization: Bearer scrape-secret\r\n");
  EXPECT_NE(ok.find("200 OK"), std::string::npos) << ok.substr(0, 100);
  EXPECT_NE(ok.find("tp_queue_depth"), std::string::npos);
}

TEST(MetricsHttpTest, ServesHttpsWithACertificateMadeAtTestTime) {
  testing::TempDir dir;
  const std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  ASSERT_TRUE(testing::MakeSelfSignedCertificate(cert, key));
  Metrics metrics;
  HttpExposerOptions options;
  options.address = "127.0.0.1:0";
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  options.bearer_token = "t";
  ASSERT_TRUE(metrics.StartHttp(options).ok());
  const std::string body = dir.path() + "/body";
  const std::string curl = "curl -sS --max-time 10 --cacert " + cert + " -H 'Authorization: Bearer t' -o " + body +
                           " -w '%{http_code}' https://localhost:" + std::to_string(metrics.port()) + "/metrics";
  FILE* pipe = popen(curl.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char code[16] = {0};
  (void)!fread(code, 1, sizeof(code) - 1, pipe);
  pclose(pipe);
  EXPECT_STREQ(code, "200") << curl;
  std::ifstream in(body);
  std::stringstream text;
  text << in.rdbuf();
  ExpectParses(text.str());
  // Plain HTTP to the HTTPS port gets no metrics.
  EXPECT_EQ(HttpGet(metrics.port(), "/metrics").find("200 OK"), std::string::npos);
  // A key that is not the certificate's is refused at start.
  const std::string other_key = dir.path() + "/other.pem";
  ASSERT_EQ(std::system(("openssl genrsa -out " + other_key + " 2048 >/dev/null 2>&1").c_str()), 0);
  Metrics mismatched;
  options.tls_key_file = other_key;
  absl::Status status = mismatched.StartHttp(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("does not belong"), std::string::npos) << status;
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
