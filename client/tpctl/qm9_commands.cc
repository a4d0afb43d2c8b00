#include "client/tpctl/qm9_commands.h"

#include <algorithm>
#include <cstring>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/npy.h"
#include "kernels/core/status_macros.h"
#include "nn/data/molecule_generator.h"
#include "nn/data/qm9_files.h"
#include "wire/graph_wire.h"

namespace tpserve {
namespace {

absl::StatusOr<int64_t> IntFlag(const CommandArgs& args, const std::string& name, int64_t fallback, int64_t min) {
  std::optional<std::string> text = args.Get(name);
  if (!text) return fallback;
  int64_t value = 0;
  if (!absl::SimpleAtoi(*text, &value) || value < min) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": expected an integer >= ", min, ", got '", *text, "'"));
  }
  return value;
}

absl::StatusOr<double> DoubleFlag(const CommandArgs& args, const std::string& name, double fallback) {
  std::optional<std::string> text = args.Get(name);
  if (!text) return fallback;
  double value = 0;
  if (!absl::SimpleAtod(*text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": expected a number, got '", *text, "'"));
  }
  return value;
}

// The molecules of --data or --generate (exactly one of them).
absl::StatusOr<std::vector<nn::data::Molecule>> Molecules(const CommandArgs& args, bool want_targets) {
  if (args.Has("data") == args.Has("generate")) {
    return absl::InvalidArgumentError("expected --data PATH or --generate N (one of them)");
  }
  if (args.Has("generate")) {
    ASSIGN_OR_RETURN(int64_t count, IntFlag(args, "generate", 0, 1));
    ASSIGN_OR_RETURN(int64_t seed, IntFlag(args, "seed", 0, 0));
    return nn::data::GenerateMolecules(count, static_cast<uint64_t>(seed));
  }
  nn::data::Qm9LoadOptions options;
  if (!want_targets) options.target_names.clear();
  if (auto targets = args.Get("targets")) options.target_names = absl::StrSplit(*targets, ',', absl::SkipEmpty());
  ASSIGN_OR_RETURN(std::vector<nn::data::Molecule> molecules, nn::data::LoadQm9(*args.Get("data"), options));
  if (molecules.empty()) return absl::InvalidArgumentError(absl::StrCat(*args.Get("data"), ": holds no molecules"));
  return molecules;
}

absl::StatusOr<tp::v1::ModelInfo> GetModel(client::TpClient& client, const std::string& name) {
  ASSIGN_OR_RETURN(tp::v1::ModelInfo info, client.GetModel(name));
  if (info.kind() != "qm9") {
    return absl::FailedPreconditionError(absl::StrCat("model '", name, "' is of kind '", info.kind(),
                                                      "'; tpctl qm9 needs a qm9 network model"));
  }
  return info;
}

void PrintNetwork(const tp::v1::ModelInfo& m) {
  std::cout << absl::StrFormat("%s  kind qm9  lmax %d  mul %d  layers %d  elements %d  targets %d  parameters %d  "
                               "version %d  fnv1a64 %016x%s%s\n",
                               m.name(), m.qm9().lmax(), m.qm9().mul(), m.qm9().layers(), m.qm9().num_elements(),
                               m.qm9().num_targets(), m.weight_numel(), m.version(), m.weights_fnv1a64(),
                               m.device().empty() ? "" : "  device " + m.device(), SavedVersionNote(m));
}

absl::Status Create(client::TpClient& client, const std::string& name, const CommandArgs& args) {
  ASSIGN_OR_RETURN(int64_t lmax, IntFlag(args, "lmax", -1, 0));
  ASSIGN_OR_RETURN(int64_t mul, IntFlag(args, "mul", -1, 1));
  if (lmax < 0 || mul < 0) return absl::InvalidArgumentError("qm9 create: --lmax and --mul are required");
  ASSIGN_OR_RETURN(int64_t layers, IntFlag(args, "layers", 6, 1));
  ASSIGN_OR_RETURN(int64_t seed, IntFlag(args, "seed", 0, 0));
  tp::v1::CreateModelRequest request;
  tp::v1::CreateModelHeader* header = request.mutable_header();
  header->set_name(name);
  header->mutable_qm9()->set_lmax(static_cast<int32_t>(lmax));
  header->mutable_qm9()->set_mul(static_cast<int32_t>(mul));
  header->mutable_qm9()->set_layers(static_cast<int32_t>(layers));
  header->set_seed(static_cast<uint64_t>(seed));
  tp::v1::ModelInfo info;
  std::unique_ptr<grpc::ClientContext> context = client.NewContext();
  auto writer = client.models().CreateModel(context.get(), &info);
  writer->Write(request);
  writer->WritesDone();
  RETURN_IF_ERROR(client::FromGrpc(writer->Finish()));
  PrintNetwork(info);
  return absl::OkStatus();
}

absl::Status Train(client::TpClient& client, const std::string& name, const CommandArgs& args) {
  ASSIGN_OR_RETURN(tp::v1::ModelInfo info, GetModel(client, name));
  ASSIGN_OR_RETURN(int64_t steps, IntFlag(args, "steps", -1, 1));
  if (steps < 1) return absl::InvalidArgumentError("qm9 train: --steps N is required");
  ASSIGN_OR_RETURN(int64_t batch_size, IntFlag(args, "batch", 27, 1));
  ASSIGN_OR_RETURN(double lr, DoubleFlag(args, "lr", 1e-2));
  ASSIGN_OR_RETURN(double momentum, DoubleFlag(args, "momentum", 0.9));
  ASSIGN_OR_RETURN(std::vector<nn::data::Molecule> molecules, Molecules(args, /*want_targets=*/true));
  if (static_cast<int>(molecules[0].targets.size()) != info.qm9().num_targets()) {
    return absl::InvalidArgumentError(absl::StrCat("the data carries ", molecules[0].targets.size(),
                                                   " targets per molecule; model '", name, "' predicts ",
                                                   info.qm9().num_targets()));
  }
  const size_t per_batch = std::min<size_t>(static_cast<size_t>(batch_size), molecules.size());
  double first = 0, last = 0;
  size_t next = 0;
  for (int64_t step = 0; step < steps; ++step) {
    if (next + per_batch > molecules.size()) next = 0;
    ASSIGN_OR_RETURN(nn::data::LabeledBatch batch, nn::data::MakeBatch(molecules, next, per_batch));
    next += per_batch;
    const tp::v1::TrainStepRequest request = wire::MakeTrainStepRequest(name, batch, lr, momentum);
    tp::v1::TrainStepResponse response;
    std::unique_ptr<grpc::ClientContext> context = client.NewContext();
    auto stub = tp::v1::NetworkService::NewStub(client.channel());
    RETURN_IF_ERROR(client::FromGrpc(stub->TrainStep(context.get(), request, &response)));
    if (step == 0) first = response.loss();
    last = response.loss();
    std::cout << absl::StrFormat("step %d  loss %.6f  version %d\n", step + 1, response.loss(),
                                 response.model_version())
              << std::flush;
  }
  std::cout << absl::StrFormat("first loss %.6f  last loss %.6f\n", first, last);
  return absl::OkStatus();
}

absl::Status Predict(client::TpClient& client, const std::string& name, const CommandArgs& args) {
  ASSIGN_OR_RETURN(tp::v1::ModelInfo info, GetModel(client, name));
  ASSIGN_OR_RETURN(int64_t batch_size, IntFlag(args, "batch", 27, 1));
  ASSIGN_OR_RETURN(std::vector<nn::data::Molecule> molecules, Molecules(args, /*want_targets=*/false));
  for (nn::data::Molecule& m : molecules) m.targets.clear();  // generated ones carry theirs
  const int num_targets = info.qm9().num_targets();
  std::vector<double> all;
  auto stub = tp::v1::NetworkService::NewStub(client.channel());
  for (size_t begin = 0; begin < molecules.size(); begin += static_cast<size_t>(batch_size)) {
    const size_t count = std::min<size_t>(static_cast<size_t>(batch_size), molecules.size() - begin);
    ASSIGN_OR_RETURN(nn::data::LabeledBatch batch, nn::data::MakeBatch(molecules, begin, count));
    tp::v1::PredictRequest request;
    request.set_model(name);
    wire::EncodeGraphBatch(batch.graphs, request.mutable_graphs());
    request.set_output_dtype(tp::v1::DTYPE_FLOAT64);
    tp::v1::PredictResponse response;
    std::unique_ptr<grpc::ClientContext> context = client.NewContext();
    RETURN_IF_ERROR(client::FromGrpc(stub->Predict(context.get(), request, &response)));
    const std::vector<double> outputs = wire::TensorToDoubles(response.outputs());
    if (outputs.size() != count * static_cast<size_t>(num_targets)) {
      return absl::InternalError(absl::StrCat("the server answered ", outputs.size(), " outputs for ", count,
                                              " molecules of ", num_targets, " targets"));
    }
    for (size_t k = 0; k < count; ++k) {
      std::string line = molecules[begin + k].name;
      for (int t = 0; t < num_targets; ++t) absl::StrAppendFormat(&line, " %.6f", outputs[k * num_targets + t]);
      std::cout << line << "\n";
    }
    all.insert(all.end(), outputs.begin(), outputs.end());
  }
  if (auto out = args.Get("out")) {
    NpyArray array = NpyArray::Zeros(DType::kFloat64, {static_cast<int64_t>(molecules.size()), num_targets});
    std::memcpy(array.bytes.data(), all.data(), all.size() * sizeof(double));
    RETURN_IF_ERROR(WriteNpy(*out, array));
  }
  return absl::OkStatus();
}

}  // namespace

std::string SavedVersionNote(const tp::v1::ModelInfo& model) {
  if (model.saved_version() == 0 || model.saved_version() == model.version()) return "";
  return absl::StrCat("  saved version ", model.saved_version());
}

absl::Status RunQm9Command(const std::vector<std::string>& argv, const std::set<std::string>& connection_flags,
                           const ConnectFn& connect) {
  std::set<std::string> flags = {"lmax", "mul",  "layers",  "seed",  "data",  "generate",
                                 "steps", "batch", "lr", "momentum", "targets", "out"};
  flags.insert(connection_flags.begin(), connection_flags.end());
  ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, flags, {"tls"}));
  if (args.positional().size() != 2) {
    return absl::InvalidArgumentError("usage: tpctl qm9 create|train|predict NAME ... (see tpctl help)");
  }
  const std::string& subcommand = args.positional()[0];
  const std::string& name = args.positional()[1];
  if (subcommand != "create" && subcommand != "train" && subcommand != "predict") {
    return absl::InvalidArgumentError(absl::StrCat("qm9: unknown subcommand '", subcommand,
                                                   "'; expected create, train or predict"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<client::TpClient> client, connect(args));
  if (subcommand == "create") return Create(*client, name, args);
  if (subcommand == "train") return Train(*client, name, args);
  return Predict(*client, name, args);
}

}  // namespace tpserve
