// Shared by the server tests: an in-process tpserve (CPU backend) on a loopback port, temporary
// directories, and wire-tensor helpers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/lib/tp_client.h"
#include "server/core/inference_core.h"
#include "server/grpc/grpc_server.h"
#include "server/metrics/metrics.h"
#include "tests/support/reference_case.h"
#include "grpcpp/grpcpp.h"
#include "tp/v1/tensor_product.grpc.pb.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::testing {

// A fresh empty directory under $TMPDIR (removed by the destructor).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class TestServer {
 public:
  // `backends` empty: one CPU backend.
  static std::unique_ptr<TestServer> Start(server::CoreConfig core = {}, server::TransportConfig transport = {},
                                           std::vector<std::unique_ptr<Backend>> backends = {});
  ~TestServer();

  int port() const { return grpc_->port(); }
  std::string target() const { return "127.0.0.1:" + std::to_string(port()); }
  client::ClientOptions ClientOptions() const;
  std::unique_ptr<client::TpClient> Connect() const;

  server::Metrics& metrics() { return *metrics_; }
  server::InferenceCore& core() { return *core_; }
  server::GrpcServer& grpc() { return *grpc_; }

 private:
  std::unique_ptr<server::Metrics> metrics_;
  std::unique_ptr<server::InferenceCore> core_;
  std::unique_ptr<server::GrpcServer> grpc_;
  server::TransportConfig transport_;
};

tp::v1::Tensor F32(std::vector<int64_t> shape, const std::vector<double>& values);
tp::v1::Tensor F64(std::vector<int64_t> shape, const std::vector<double>& values);
std::vector<double> ToDoubles(const tp::v1::Tensor& tensor);
std::vector<float> ToFloats(const std::vector<double>& values);
std::vector<double> ToDoubles(const std::vector<float>& values);

tp::v1::ModelSpec Spec(const std::string& in1, const std::string& in2, const std::string& out);

// ---- requests from e3nn reference cases (tests/support/reference_case.h) ----
// The reference case `file` (an EXPECT failure, and an empty case, when it does not load).
ReferenceCase LoadCase(const std::string& file = "ref_mixed_parity.json");
// The width of a [batch, width] matrix held flat.
int64_t Dim(const std::vector<double>& flat, int batch);
// Creates `name` from a reference case with its weights uploaded (EXPECTs that it worked).
tp::v1::ModelInfo CreateFromCase(client::TpClient& client, const std::string& name, const ReferenceCase& c);
// The case's x1 and x2 as float32; the backward one with its grad_out as well.
tp::v1::ForwardRequest ForwardFor(const std::string& model, const ReferenceCase& c);
tp::v1::BackwardRequest BackwardFor(const std::string& model, const ReferenceCase& c);

// Sum of the values of every sample line "name{...labels...} value" whose labels contain all of
// `label_substrings`, in Prometheus text format. -1 when no line matches.
double MetricValue(const std::string& text, const std::string& name, const std::vector<std::string>& label_substrings);

// grpc.reflection.v1alpha.ServerReflectionInfo with {list_services: ""}, spoken as raw bytes so
// tests need no copy of reflection.proto: the response's bytes, empty when the call failed.
std::string ListServicesByReflection(const std::string& target);

// A self-signed certificate for localhost and 127.0.0.1, written by openssl to `cert` and `key`
// (PEM); false when openssl failed.
bool MakeSelfSignedCertificate(const std::string& cert, const std::string& key);

// A file's whole contents ("" when it cannot be read).
std::string ReadFile(const std::string& path);

// CreateModel of a network model (kind qm9) with the given architecture and initialization seed.
grpc::Status CreateQm9Model(tp::v1::ModelService::Stub& models, const std::string& name, int lmax, int mul,
                            int layers, uint64_t seed, tp::v1::ModelInfo* info);

}  // namespace tpserve::testing
