// tpctl's remote commands against an in-process server: `tpctl eval --server` writes the same
// files as the local `tpctl eval`, and the model commands round-trip through the service.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "client/npy.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"
#include "tests/support/random.h"
#include "tests/support/reference_case.h"

#ifndef TPCTL_PATH
#error "TPCTL_PATH must name the tpctl binary"
#endif

namespace tpserve::testing {
namespace {

NpyArray Array(std::vector<int64_t> shape, const std::vector<double>& values) {
  NpyArray a = NpyArray::Zeros(DType::kFloat64, std::move(shape));
  std::memcpy(a.bytes.data(), values.data(), values.size() * 8);
  return a;
}

std::vector<double> Load(const std::string& path) {
  auto array = ReadNpy(path);
  EXPECT_TRUE(array.ok()) << array.status();
  if (!array.ok()) return {};
  NpyArray f64 = ConvertNpy(*array, DType::kFloat64);
  const double* p = reinterpret_cast<const double*>(f64.bytes.data());
  return {p, p + f64.numel()};
}

int Tpctl(const std::string& args) {
  std::string command = std::string(TPCTL_PATH) + " " + args + " >/dev/null 2>&1";
  int rc = std::system(command.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class TpctlRemoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = TestServer::Start();
    ASSERT_NE(server_, nullptr);
    auto loaded = LoadReferenceCase("ref_mixed_parity.json");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    c_ = *loaded;
    int64_t d1 = c_.x1.size() / c_.batch, d2 = c_.x2.size() / c_.batch, d3 = c_.out.size() / c_.batch;
    ASSERT_TRUE(WriteNpy(dir_.path() + "/w.npy", Array({c_.weight_numel}, c_.weight)).ok());
    ASSERT_TRUE(WriteNpy(dir_.path() + "/x1.npy", Array({c_.batch, d1}, c_.x1)).ok());
    ASSERT_TRUE(WriteNpy(dir_.path() + "/x2.npy", Array({c_.batch, d2}, c_.x2)).ok());
    ASSERT_TRUE(WriteNpy(dir_.path() + "/g.npy", Array({c_.batch, d3}, c_.grad_out)).ok());
    irreps_ = "--irreps-in1 '" + c_.irreps_in1 + "' --irreps-in2 '" + c_.irreps_in2 + "' --irreps-out '" +
              c_.irreps_out + "'";
    server_flag_ = " --server " + server_->target() + " ";
  }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }

  TempDir dir_;
  std::unique_ptr<TestServer> server_;
  ReferenceCase c_;
  std::string irreps_, server_flag_;
};

TEST_F(TpctlRemoteTest, EvalWithServer_WritesWhatTheLocalEvalWrites) {
  for (std::string cotangent : {"--grad-out " + Path("g.npy"), std::string("--loss sum_tanh"), std::string("")}) {
    SCOPED_TRACE(cotangent);
    std::filesystem::remove_all(Path("local"));
    std::filesystem::remove_all(Path("remote"));
    std::filesystem::create_directories(Path("local"));
    std::filesystem::create_directories(Path("remote"));
    std::string common = "eval " + irreps_ + " --weights " + Path("w.npy") + " --x1 " + Path("x1.npy") + " --x2 " +
                         Path("x2.npy") + " " + cotangent;
    ASSERT_EQ(Tpctl(common + " --out " + Path("local")), 0);
    ASSERT_EQ(Tpctl(common + server_flag_ + " --out " + Path("remote")), 0);
    for (const char* file : {"out.npy", "grad_weight.npy", "grad_x1.npy", "grad_x2.npy"}) {
      bool local = std::filesystem::exists(Path("local/") + file);
      EXPECT_EQ(local, std::filesystem::exists(Path("remote/") + file)) << file;
      if (!local) continue;
      std::vector<double> want = Load(Path("local/") + file), got = Load(Path("remote/") + file);
      ASSERT_EQ(got.size(), want.size()) << file;
      EXPECT_LT(RelativeError(got, want), 1e-5) << file;  // the server computes in float32
    }
  }
  EXPECT_TRUE(server_->core().ListModels().empty()) << "eval --server must delete its temporary model";
}

TEST_F(TpctlRemoteTest, ModelCommands_RoundTripThroughTheService) {
  ASSERT_EQ(Tpctl("create" + server_flag_ + "--model m " + irreps_ + " --weights " + Path("w.npy")), 0);
  ASSERT_EQ(Tpctl("list" + server_flag_), 0);
  ASSERT_EQ(Tpctl("get" + server_flag_ + "--model m"), 0);
  ASSERT_EQ(Tpctl("forward" + server_flag_ + "--model m --x1 " + Path("x1.npy") + " --x2 " + Path("x2.npy") +
                  " --out " + dir_.path()),
            0);
  EXPECT_LT(RelativeError(Load(Path("out.npy")), c_.out), 1e-5);
  ASSERT_EQ(Tpctl("backward" + server_flag_ + "--model m --x1 " + Path("x1.npy") + " --x2 " + Path("x2.npy") +
                  " --grad-out " + Path("g.npy") + " --weight-grad accumulate --out " + dir_.path()),
            0);
  EXPECT_LT(RelativeError(Load(Path("grad_x1.npy")), c_.grad_x1), 1e-5);
  ASSERT_EQ(Tpctl("get-grad" + server_flag_ + "--model m --out " + Path("grad.npy")), 0);
  EXPECT_LT(RelativeError(Load(Path("grad.npy")), c_.grad_weight), 1e-5);
  ASSERT_EQ(Tpctl("sgd-step" + server_flag_ + "--model m --lr 0.5 --zero-grad"), 0);
  ASSERT_EQ(Tpctl("get-weights" + server_flag_ + "--model m --out " + Path("w2.npy")), 0);
  std::vector<double> expected(c_.weight.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = c_.weight[i] - 0.5 * c_.grad_weight[i];
  EXPECT_LT(RelativeError(Load(Path("w2.npy")), expected), 1e-6);
  ASSERT_EQ(Tpctl("zero-grad" + server_flag_ + "--model m"), 0);
  ASSERT_EQ(Tpctl("put-weights" + server_flag_ + "--model m --weights " + Path("w.npy")), 0);
  EXPECT_EQ(server_->core().GetModel("m")->version, 3u);
  ASSERT_EQ(Tpctl("delete" + server_flag_ + "--model m"), 0);
  EXPECT_EQ(Tpctl("get" + server_flag_ + "--model m"), 2) << "NOT_FOUND exits 2";
  EXPECT_EQ(Tpctl("create" + server_flag_ + "--model bad --irreps-in1 1xq --irreps-in2 1x0e --irreps-out 1x0e"), 2);
}

TEST(TpctlRemoteSecurity, TokenAndTlsFlagsReachTheServer) {
  TempDir dir;
  std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  std::string openssl = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=tpserve.test "
                        "-addext subjectAltName=DNS:tpserve.test -keyout " + key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(openssl.c_str()), 0);
  server::TransportConfig transport;
  transport.auth_token = "s3cret";
  transport.tls_cert_file = cert;
  transport.tls_key_file = key;
  auto server = TestServer::Start({}, transport);
  ASSERT_NE(server, nullptr);
  const std::string target = " --server " + server->target() + " --timeout 5 ";
  const std::string tls = " --tls --tls-ca " + cert + " --tls-server-name tpserve.test ";
  EXPECT_EQ(Tpctl("list" + target + tls + "--token s3cret"), 0);
  EXPECT_EQ(Tpctl("create" + target + tls + "--token s3cret --model m --irreps-in1 1x0e --irreps-in2 1x0e "
                  "--irreps-out 1x0e --seed 1"),
            0);
  EXPECT_EQ(Tpctl("list" + target + tls + "--token wrong"), 1) << "UNAUTHENTICATED";
  EXPECT_EQ(Tpctl("list" + target + "--token s3cret"), 1) << "plaintext to a TLS server";
  EXPECT_EQ(server->core().ListModels().size(), 1u);
  // The health check needs no token (probes carry none), but speaks TLS to a TLS server.
  EXPECT_EQ(Tpctl("health" + target + tls), 0);
  EXPECT_EQ(Tpctl("health" + target), 1) << "plaintext to a TLS server";
}

// `tpctl health` is the container's HEALTHCHECK: exit 0 only while the server answers SERVING.
TEST(TpctlHealth, ExitsZeroOnlyWhileTheServerIsServing) {
  TempDir dir;
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  const std::string target = " --server " + server->target() + " --timeout 5";
  const std::string printed = dir.path() + "/health.txt";
  const std::string command = std::string(TPCTL_PATH) + " health" + target + " >" + printed;
  const int rc = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << rc;
  std::ifstream in(printed);
  std::string status;
  in >> status;
  EXPECT_EQ(status, "SERVING");
  EXPECT_EQ(Tpctl("health" + target + " --service tp.v1.TensorProductService"), 0);
  EXPECT_EQ(Tpctl("health" + target + " --service tp.v1.ModelService"), 0);
  EXPECT_EQ(Tpctl("health" + target + " --service no.such.Service"), 2) << "NOT_FOUND";
  EXPECT_EQ(Tpctl("health --timeout 5"), 2) << "--server is required";
  // Draining (SIGTERM in tpserve): health goes NOT_SERVING and new calls are refused.
  server->grpc().Shutdown(absl::ZeroDuration());
  server->grpc().Wait();
  EXPECT_EQ(Tpctl("health" + target), 1);
}

}  // namespace
}  // namespace tpserve::testing
