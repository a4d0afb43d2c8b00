#include "tests/server/server_test_util.h"

#include <fstream>

#include "grpcpp/generic/generic_stub.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/tpserve-test-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  char* made = mkdtemp(buffer.data());
  EXPECT_NE(made, nullptr) << std::strerror(errno);
  path_ = made != nullptr ? made : "";
}

TempDir::~TempDir() {
  std::error_code ignored;
  if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
}

std::unique_ptr<TestServer> TestServer::Start(server::CoreConfig core, server::TransportConfig transport,
                                              std::vector<std::unique_ptr<Backend>> backends) {
  auto test_server = std::unique_ptr<TestServer>(new TestServer());
  test_server->metrics_ = std::make_unique<server::Metrics>();
  if (backends.empty()) backends.push_back(std::make_unique<CpuBackend>(CpuBackendOptions{2}));
  auto created = server::InferenceCore::Create(core, std::move(backends), test_server->metrics_.get(),
                                               std::make_unique<CpuBackend>(CpuBackendOptions{2}));
  EXPECT_TRUE(created.ok()) << created.status();
  if (!created.ok()) return nullptr;
  test_server->core_ = *std::move(created);
  transport.listen_address = "127.0.0.1:0";
  test_server->transport_ = transport;
  auto grpc = server::GrpcServer::Start(transport, test_server->core_.get(), test_server->metrics_.get());
  EXPECT_TRUE(grpc.ok()) << grpc.status();
  if (!grpc.ok()) return nullptr;
  test_server->grpc_ = *std::move(grpc);
  return test_server;
}

TestServer::~TestServer() {
  if (grpc_) {
    grpc_->Shutdown(absl::Seconds(5));
    grpc_->Wait();
    grpc_.reset();
  }
  if (core_) core_->Shutdown();
}

client::ClientOptions TestServer::ClientOptions() const {
  client::ClientOptions options;
  options.target = target();
  options.auth_token = transport_.auth_token;
  options.timeout_seconds = 30;
  return options;
}

std::unique_ptr<client::TpClient> TestServer::Connect() const {
  auto connected = client::TpClient::Connect(ClientOptions());
  EXPECT_TRUE(connected.ok()) << connected.status();
  return connected.ok() ? *std::move(connected) : nullptr;
}

tp::v1::Tensor F32(std::vector<int64_t> shape, const std::vector<double>& values) {
  tp::v1::Tensor t;
  for (int64_t s : shape) t.add_shape(s);
  t.set_dtype(tp::v1::DTYPE_FLOAT32);
  std::vector<float> f = ToFloats(values);
  wire::FloatsToBytes(f.data(), f.size(), tp::v1::DTYPE_FLOAT32, t.mutable_data());
  return t;
}

tp::v1::Tensor F64(std::vector<int64_t> shape, const std::vector<double>& values) {
  tp::v1::Tensor t;
  for (int64_t s : shape) t.add_shape(s);
  t.set_dtype(tp::v1::DTYPE_FLOAT64);
  t.set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 8));
  return t;
}

std::vector<double> ToDoubles(const tp::v1::Tensor& tensor) {
  auto floats = wire::BytesToFloats(tensor.dtype(), tensor.data(), "tensor");
  EXPECT_TRUE(floats.ok()) << floats.status();
  return floats.ok() ? ToDoubles(*floats) : std::vector<double>{};
}

std::vector<float> ToFloats(const std::vector<double>& values) { return {values.begin(), values.end()}; }
std::vector<double> ToDoubles(const std::vector<float>& values) { return {values.begin(), values.end()}; }

tp::v1::ModelSpec Spec(const std::string& in1, const std::string& in2, const std::string& out) {
  tp::v1::ModelSpec spec;
  spec.set_irreps_in1(in1);
  spec.set_irreps_in2(in2);
  spec.set_irreps_out(out);
  return spec;
}

double MetricValue(const std::string& text, const std::string& name, const std::vector<std::string>& labels) {
  double total = -1;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    if (!absl::StartsWith(line, name + "{") && !absl::StartsWith(line, name + " ")) continue;
    bool all = true;
    for (const std::string& label : labels) all = all && absl::StrContains(line, label);
    if (!all) continue;
    size_t space = line.rfind(' ');
    double value = 0;
    if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &value)) continue;
    total = (total < 0 ? 0 : total) + value;
  }
  return total;
}

std::string ListServicesByReflection(const std::string& target) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  const std::string request("\x3a\x00", 2);  // field 7 (list_services), length 0
  grpc::Slice slice(request);
  grpc::ByteBuffer buffer(&slice, 1);
  call->Write(buffer, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  std::string bytes;
  if (ok) {
    std::vector<grpc::Slice> slices;
    response.Dump(&slices);
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return bytes;
}

bool MakeSelfSignedCertificate(const std::string& cert, const std::string& key) {
  const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                              "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + key + " -out " + cert +
                              " >/dev/null 2>&1";
  return std::system(command.c_str()) == 0;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

grpc::Status CreateQm9Model(tp::v1::ModelService::Stub& models, const std::string& name, int lmax, int mul,
                            int layers, uint64_t seed, tp::v1::ModelInfo* info) {
  grpc::ClientContext context;
  auto writer = models.CreateModel(&context, info);
  tp::v1::CreateModelRequest request;
  request.mutable_header()->set_name(name);
  request.mutable_header()->mutable_qm9()->set_lmax(lmax);
  request.mutable_header()->mutable_qm9()->set_mul(mul);
  request.mutable_header()->mutable_qm9()->set_layers(layers);
  request.mutable_header()->set_seed(seed);
  writer->Write(request);
  writer->WritesDone();
  return writer->Finish();
}

ReferenceCase LoadCase(const std::string& file) {
  auto loaded = LoadReferenceCase(file);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded.ok() ? *loaded : ReferenceCase{};
}

int64_t Dim(const std::vector<double>& flat, int batch) { return static_cast<int64_t>(flat.size()) / batch; }

tp::v1::ModelInfo CreateFromCase(client::TpClient& client, const std::string& name, const ReferenceCase& c) {
  std::vector<float> weights = ToFloats(c.weight);
  auto info = client.CreateModel(name, Spec(c.irreps_in1, c.irreps_in2, c.irreps_out), &weights);
  EXPECT_TRUE(info.ok()) << info.status();
  return info.ok() ? *info : tp::v1::ModelInfo{};
}

tp::v1::ForwardRequest ForwardFor(const std::string& model, const ReferenceCase& c) {
  tp::v1::ForwardRequest request;
  request.set_model(model);
  *request.mutable_x1() = F32({c.batch, Dim(c.x1, c.batch)}, c.x1);
  *request.mutable_x2() = F32({c.batch, Dim(c.x2, c.batch)}, c.x2);
  return request;
}

tp::v1::BackwardRequest BackwardFor(const std::string& model, const ReferenceCase& c) {
  tp::v1::BackwardRequest request;
  request.set_model(model);
  *request.mutable_x1() = F32({c.batch, Dim(c.x1, c.batch)}, c.x1);
  *request.mutable_x2() = F32({c.batch, Dim(c.x2, c.batch)}, c.x2);
  *request.mutable_grad_out() = F32({c.batch, Dim(c.out, c.batch)}, c.grad_out);
  return request;
}

}  // namespace tpserve::testing
