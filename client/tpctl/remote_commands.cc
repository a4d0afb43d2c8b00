#include "client/tpctl/remote_commands.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <set>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/lib/tp_client.h"
#include "client/npy.h"
#include "client/tpctl/args.h"
#include "client/tpctl/qm9_commands.h"
#include "kernels/core/status_macros.h"

namespace tpserve {
namespace {

const std::set<std::string> kConnectionFlags = {"server",   "token",   "tls-ca",  "tls-server-name",
                                                "tls-cert", "tls-key", "timeout", "precision"};

std::set<std::string> With(std::set<std::string> flags) {
  flags.insert(kConnectionFlags.begin(), kConnectionFlags.end());
  return flags;
}

absl::StatusOr<std::unique_ptr<client::TpClient>> Connect(const CommandArgs& args) {
  client::ClientOptions options;
  ASSIGN_OR_RETURN(options.target, args.Require("server"));
  if (auto token = args.Get("token")) {
    options.auth_token = *token;
  } else if (const char* env = std::getenv("TPSERVE_TOKEN")) {
    options.auth_token = env;
  }
  options.tls = args.Has("tls");
  options.tls_ca_file = args.Get("tls-ca").value_or("");
  options.tls_server_name = args.Get("tls-server-name").value_or("");
  options.tls_cert_file = args.Get("tls-cert").value_or("");
  options.tls_key_file = args.Get("tls-key").value_or("");
  if (auto timeout = args.Get("timeout")) {
    if (!absl::SimpleAtod(*timeout, &options.timeout_seconds) || options.timeout_seconds < 0) {
      return absl::InvalidArgumentError("--timeout: expected seconds >= 0");
    }
  }
  return client::TpClient::Connect(options);
}

absl::StatusOr<tp::v1::Precision> PrecisionFlag(const CommandArgs& args) {
  std::string p = args.Get("precision").value_or("fp32");
  if (p == "fp32") return tp::v1::PRECISION_FP32;
  if (p == "tf32") return tp::v1::PRECISION_TF32;
  if (p == "bf16") return tp::v1::PRECISION_BF16;
  return absl::InvalidArgumentError("--precision: expected fp32, tf32 or bf16, got '" + p + "'");
}

tp::v1::Tensor ToWire(const NpyArray& array) {
  tp::v1::Tensor tensor;
  for (int64_t s : array.shape) tensor.add_shape(s);
  tensor.set_dtype(array.dtype == DType::kFloat64 ? tp::v1::DTYPE_FLOAT64 : tp::v1::DTYPE_FLOAT32);
  tensor.set_data(array.bytes.data(), array.bytes.size());
  return tensor;
}

absl::StatusOr<NpyArray> FromWire(const tp::v1::Tensor& tensor) {
  NpyArray array;
  array.shape.assign(tensor.shape().begin(), tensor.shape().end());
  if (tensor.dtype() == tp::v1::DTYPE_FLOAT64) {
    array.dtype = DType::kFloat64;
  } else if (tensor.dtype() == tp::v1::DTYPE_FLOAT32) {
    array.dtype = DType::kFloat32;
  } else {
    return absl::InternalError("server answered in a dtype .npy output does not use");
  }
  array.bytes.assign(tensor.data().begin(), tensor.data().end());
  return array;
}

absl::StatusOr<std::vector<float>> ReadWeights(const std::string& path) {
  ASSIGN_OR_RETURN(NpyArray array, ReadNpy(path));
  NpyArray f32 = ConvertNpy(array, DType::kFloat32);
  const float* data = reinterpret_cast<const float*>(f32.bytes.data());
  return std::vector<float>(data, data + f32.numel());
}

absl::Status WriteFloats(const std::string& path, const std::vector<float>& values, DType dtype) {
  NpyArray array = NpyArray::Zeros(DType::kFloat32, {static_cast<int64_t>(values.size())});
  std::memcpy(array.bytes.data(), values.data(), values.size() * sizeof(float));
  return WriteNpy(path, ConvertNpy(array, dtype));
}

void PrintModel(const tp::v1::ModelInfo& m) {
  if (m.kind() == "qm9") {
    std::cout << absl::StrFormat("%s  kind qm9  lmax %d  mul %d  layers %d  parameters %d  version %d  fnv1a64 %016x%s%s\n",
                                 m.name(), m.qm9().lmax(), m.qm9().mul(), m.qm9().layers(), m.weight_numel(),
                                 m.version(), m.weights_fnv1a64(), m.device().empty() ? "" : "  device " + m.device(),
                                 SavedVersionNote(m));
    return;
  }
  std::cout << absl::StrFormat("%s  version %d  weights %d  in1 %s  in2 %s  out %s  paths %d  fnv1a64 %016x\n",
                               m.name(), m.version(), m.weight_numel(), m.spec().irreps_in1(),
                               m.spec().irreps_in2(), m.spec().irreps_out(), m.num_paths(), m.weights_fnv1a64());
}

absl::StatusOr<tp::v1::WeightGradMode> WeightGradFlag(const CommandArgs& args) {
  std::string mode = args.Get("weight-grad").value_or("return");
  if (mode == "return") return tp::v1::WEIGHT_GRAD_RETURN;
  if (mode == "accumulate") return tp::v1::WEIGHT_GRAD_ACCUMULATE;
  if (mode == "none") return tp::v1::WEIGHT_GRAD_NONE;
  return absl::InvalidArgumentError("--weight-grad: expected return, accumulate or none");
}

// Forward and/or backward of `model` on .npy inputs, writing the local eval's files into out_dir.
absl::Status RunCompute(client::TpClient& client, const std::string& model, const CommandArgs& args,
                        bool forward_only, bool always_forward) {
  ASSIGN_OR_RETURN(std::string out_dir, args.Require("out"));
  RETURN_IF_ERROR(CreateOutputDirectory(out_dir));
  ASSIGN_OR_RETURN(std::string x1_path, args.Require("x1"));
  ASSIGN_OR_RETURN(std::string x2_path, args.Require("x2"));
  ASSIGN_OR_RETURN(NpyArray x1, ReadNpy(x1_path));
  ASSIGN_OR_RETURN(NpyArray x2, ReadNpy(x2_path));
  ASSIGN_OR_RETURN(tp::v1::Precision precision, PrecisionFlag(args));
  if (forward_only) {
    tp::v1::ForwardRequest request;
    request.set_model(model);
    *request.mutable_x1() = ToWire(x1);
    *request.mutable_x2() = ToWire(x2);
    request.set_precision(precision);
    ASSIGN_OR_RETURN(tp::v1::ForwardResponse response, client.Forward(request));
    ASSIGN_OR_RETURN(NpyArray out, FromWire(response.out()));
    return WriteNpy(out_dir + "/out.npy", out);
  }
  if (args.Has("grad-out") == args.Has("loss")) {
    return absl::InvalidArgumentError("backward: expected exactly one of --grad-out and --loss");
  }
  tp::v1::BackwardRequest request;
  request.set_model(model);
  *request.mutable_x1() = ToWire(x1);
  *request.mutable_x2() = ToWire(x2);
  request.set_precision(precision);
  ASSIGN_OR_RETURN(tp::v1::WeightGradMode weight_grad, WeightGradFlag(args));
  request.set_weight_grad(weight_grad);
  const bool with_grad_out = args.Has("grad-out");
  if (with_grad_out) {
    ASSIGN_OR_RETURN(NpyArray grad_out, ReadNpy(*args.Get("grad-out")));
    *request.mutable_grad_out() = ToWire(grad_out);
    request.set_want_grad_x1(true);
    request.set_want_grad_x2(true);
  } else {
    std::string loss = *args.Get("loss");
    if (loss != "sum" && loss != "sum_tanh") {
      return absl::InvalidArgumentError("--loss: expected sum_tanh or sum, got '" + loss + "'");
    }
    request.set_loss(loss == "sum" ? tp::v1::LOSS_SUM : tp::v1::LOSS_SUM_TANH);
    request.set_want_out(true);
  }
  ASSIGN_OR_RETURN(tp::v1::BackwardResponse response, client.BackwardChunked(request));
  if (response.has_out()) {
    ASSIGN_OR_RETURN(NpyArray out, FromWire(response.out()));
    RETURN_IF_ERROR(WriteNpy(out_dir + "/out.npy", out));
  } else if (always_forward) {
    tp::v1::ForwardRequest forward;
    forward.set_model(model);
    *forward.mutable_x1() = request.x1();
    *forward.mutable_x2() = request.x2();
    forward.set_precision(precision);
    ASSIGN_OR_RETURN(tp::v1::ForwardResponse result, client.Forward(forward));
    ASSIGN_OR_RETURN(NpyArray out, FromWire(result.out()));
    RETURN_IF_ERROR(WriteNpy(out_dir + "/out.npy", out));
  }
  if (response.has_grad_x1()) {
    ASSIGN_OR_RETURN(NpyArray g, FromWire(response.grad_x1()));
    RETURN_IF_ERROR(WriteNpy(out_dir + "/grad_x1.npy", g));
  }
  if (response.has_grad_x2()) {
    ASSIGN_OR_RETURN(NpyArray g, FromWire(response.grad_x2()));
    RETURN_IF_ERROR(WriteNpy(out_dir + "/grad_x2.npy", g));
  }
  if (response.has_grad_weight()) {
    // Chunks arrive as float32; the file keeps the inputs' dtype like the local eval.
    ASSIGN_OR_RETURN(NpyArray g, FromWire(response.grad_weight()));
    RETURN_IF_ERROR(WriteNpy(out_dir + "/grad_weight.npy", ConvertNpy(g, x1.dtype)));
  }
  return absl::OkStatus();
}

absl::Status Run(const std::string& command, const std::vector<std::string>& argv) {
  if (command == "eval") {
    ASSIGN_OR_RETURN(CommandArgs args,
                     CommandArgs::Parse(argv, With({"irreps-in1", "irreps-in2", "irreps-out", "weights", "x1", "x2",
                                                    "grad-out", "loss", "backend", "out"}),
                                        {"tls"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    tp::v1::ModelSpec spec;
    ASSIGN_OR_RETURN(*spec.mutable_irreps_in1(), args.Require("irreps-in1"));
    ASSIGN_OR_RETURN(*spec.mutable_irreps_in2(), args.Require("irreps-in2"));
    ASSIGN_OR_RETURN(*spec.mutable_irreps_out(), args.Require("irreps-out"));
    ASSIGN_OR_RETURN(std::string weights_path, args.Require("weights"));
    ASSIGN_OR_RETURN(std::vector<float> weights, ReadWeights(weights_path));
    std::string model = absl::StrCat("tpctl-eval-", ::getpid(), "-", std::random_device{}());
    RETURN_IF_ERROR(client->CreateModel(model, spec, &weights).status());
    absl::Status status = RunCompute(*client, model, args, !args.Has("grad-out") && !args.Has("loss"),
                                     /*always_forward=*/true);
    absl::Status deleted = client->DeleteModel(model);
    return status.ok() ? deleted : status;
  }
  if (command == "create") {
    ASSIGN_OR_RETURN(CommandArgs args,
                     CommandArgs::Parse(argv, With({"model", "irreps-in1", "irreps-in2", "irreps-out", "weights", "seed"}),
                                        {"tls"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    ASSIGN_OR_RETURN(std::string model, args.Require("model"));
    tp::v1::ModelSpec spec;
    ASSIGN_OR_RETURN(*spec.mutable_irreps_in1(), args.Require("irreps-in1"));
    ASSIGN_OR_RETURN(*spec.mutable_irreps_in2(), args.Require("irreps-in2"));
    ASSIGN_OR_RETURN(*spec.mutable_irreps_out(), args.Require("irreps-out"));
    if (args.Has("weights") && args.Has("seed")) return absl::InvalidArgumentError("expected --weights or --seed, not both");
    uint64_t seed = 0;
    if (auto s = args.Get("seed"); s && !absl::SimpleAtoi(*s, &seed)) {
      return absl::InvalidArgumentError("--seed: expected a non-negative integer");
    }
    std::optional<std::vector<float>> weights;
    if (auto path = args.Get("weights")) {
      ASSIGN_OR_RETURN(weights, ReadWeights(*path));
    }
    ASSIGN_OR_RETURN(tp::v1::ModelInfo info, client->CreateModel(model, spec, weights ? &*weights : nullptr, seed));
    PrintModel(info);
    return absl::OkStatus();
  }
  if (command == "list") {
    ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, With({}), {"tls"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    ASSIGN_OR_RETURN(std::vector<tp::v1::ModelInfo> models, client->ListModels());
    for (const auto& m : models) PrintModel(m);
    return absl::OkStatus();
  }
  if (command == "get" || command == "delete" || command == "zero-grad") {
    ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, With({"model"}), {"tls"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    ASSIGN_OR_RETURN(std::string model, args.Require("model"));
    if (command == "delete") return client->DeleteModel(model);
    if (command == "zero-grad") return client->ZeroGradient(model);
    ASSIGN_OR_RETURN(tp::v1::ModelInfo info, client->GetModel(model));
    PrintModel(info);
    return absl::OkStatus();
  }
  if (command == "forward" || command == "backward") {
    ASSIGN_OR_RETURN(CommandArgs args,
                     CommandArgs::Parse(argv, With({"model", "x1", "x2", "grad-out", "loss", "weight-grad", "out"}),
                                        {"tls"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    ASSIGN_OR_RETURN(std::string model, args.Require("model"));
    return RunCompute(*client, model, args, command == "forward", /*always_forward=*/false);
  }
  if (command == "get-weights" || command == "get-grad") {
    ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, With({"model", "out"}), {"tls"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    ASSIGN_OR_RETURN(std::string model, args.Require("model"));
    ASSIGN_OR_RETURN(std::string out, args.Require("out"));
    ASSIGN_OR_RETURN(std::vector<float> values,
                     command == "get-weights" ? client->DownloadWeights(model) : client->GetGradient(model));
    return WriteFloats(out, values, DType::kFloat32);
  }
  if (command == "put-weights") {
    ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, With({"model", "weights", "expected-version"}), {"tls"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    ASSIGN_OR_RETURN(std::string model, args.Require("model"));
    ASSIGN_OR_RETURN(std::string path, args.Require("weights"));
    uint64_t expected = 0;
    if (auto v = args.Get("expected-version"); v && !absl::SimpleAtoi(*v, &expected)) {
      return absl::InvalidArgumentError("--expected-version: expected a version number");
    }
    ASSIGN_OR_RETURN(std::vector<float> weights, ReadWeights(path));
    ASSIGN_OR_RETURN(tp::v1::ModelInfo info, client->UploadWeights(model, weights, expected));
    PrintModel(info);
    return absl::OkStatus();
  }
  if (command == "health") {
    // The container's HEALTHCHECK and a Kubernetes exec probe: exit 0 only while SERVING.
    ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, With({"service"}), {"tls"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    const std::string service = args.Get("service").value_or("");
    ASSIGN_OR_RETURN(grpc::health::v1::HealthCheckResponse::ServingStatus status, client->Health(service));
    const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(status);
    std::cout << name << "\n";
    if (status != grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::UnavailableError(absl::StrCat(service.empty() ? "server" : service, " is ", name));
    }
    return absl::OkStatus();
  }
  if (command == "qm9") return RunQm9Command(argv, kConnectionFlags, Connect);
  if (command == "sgd-step") {
    ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, With({"model", "lr"}), {"tls", "zero-grad"}));
    ASSIGN_OR_RETURN(auto client, Connect(args));
    ASSIGN_OR_RETURN(std::string model, args.Require("model"));
    ASSIGN_OR_RETURN(std::string lr_text, args.Require("lr"));
    double lr = 0;
    if (!absl::SimpleAtod(lr_text, &lr)) return absl::InvalidArgumentError("--lr: expected a number");
    ASSIGN_OR_RETURN(tp::v1::ModelInfo info, client->SgdStep(model, lr, args.Has("zero-grad")));
    PrintModel(info);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown command '" + command + "'; see tpctl help");
}

}  // namespace

int RunRemoteCommand(const std::string& command, const std::vector<std::string>& args) {
  absl::Status status = Run(command, args);
  if (status.ok()) return 0;
  std::cerr << "tpctl: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kNotFound ||
                 status.code() == absl::StatusCode::kOutOfRange
             ? 2
             : 1;
}

}  // namespace tpserve
