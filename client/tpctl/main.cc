// tpctl: the command-line tool of tpserve.
//   tpctl eval   run one tensor product locally (or with --server, through the service)
//   tpctl bench  time the seed task on a local backend
//   tpctl plan   print the paths of a FullyConnectedTensorProduct
// Remote model commands (create, list, forward, ...) take --server HOST:PORT.
// Exit codes: 0 success, 2 bad input (one-line error on stderr), 1 anything else.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "client/npy.h"
#include "client/tpctl/args.h"
#include "client/tpctl/local_eval.h"
#include "kernels/backend_factory.h"
#include "kernels/core/status_macros.h"
#ifdef TPCTL_HAVE_REMOTE
#include "client/tpctl/remote_commands.h"
#endif

namespace tpserve {
namespace {

constexpr char kUsage[] = R"(usage: tpctl COMMAND [flags]        (tpctl help, tpctl COMMAND --help: this text)

local commands (defaults in parentheses):
  eval   --irreps-in1 S --irreps-in2 S --irreps-out S --weights W.npy --x1 X1.npy --x2 X2.npy
         [--grad-out G.npy | --loss sum_tanh|sum] [--backend cpu|cuda (cpu)] [--precision fp32|tf32|bf16 (fp32)]
         [--server HOST:PORT] --out DIR            (DIR is created when missing)
  bench  [--backend cpu|cuda (cpu)] [--irreps S (128x0e + 128x1e + 128x2e)] [--batch N (64)] [--iters N (10)]
         [--precision P (fp32)]
  plan   --irreps-in1 S --irreps-in2 S --irreps-out S

remote commands (--server HOST:PORT required):
  create   --model M --irreps-in1 S --irreps-in2 S --irreps-out S [--weights W.npy | --seed K (0)]
  list;  get|delete|zero-grad --model M
  forward  --model M --x1 X1.npy --x2 X2.npy --out DIR
  backward --model M --x1 X1.npy --x2 X2.npy (--grad-out G.npy | --loss sum|sum_tanh)
           [--weight-grad return|accumulate|none (return)] --out DIR
  get-weights|get-grad --model M --out F.npy;  put-weights --model M --weights W.npy [--expected-version V (0: any)]
  sgd-step --model M --lr LR [--zero-grad]
  health [--service NAME]   exit 0 only while the server (or NAME) is SERVING (no token needed)
  qm9 create NAME --lmax L --mul M [--layers N (6)] [--seed K (0)]     a QM9 network model
  qm9 train NAME (--data PATH | --generate N) --steps S [--batch B (27)] [--lr X (1e-2)] [--momentum X (0.9)]
          [--seed K (0): of generated molecules] [--targets mu,alpha,homo,lumo]   prints the loss per step
  qm9 predict NAME (--data PATH | --generate N) [--batch B (27)] [--out F.npy]   per-molecule outputs
      --data: an .npz, an .sdf (+ PATH.csv) or a directory holding one (README, "QM9 data")
  connection flags: --token T ($TPSERVE_TOKEN) --tls (off) --tls-ca PEM (system roots) --tls-server-name N
                    --tls-cert PEM --tls-key PEM (client certificate, for servers with --tls_client_ca)
                    --timeout S (0: none) --precision fp32|tf32|bf16 (fp32)

exit codes: 0 success, 2 bad input (one line on stderr), 1 anything else
)";

int Fail(const absl::Status& status) {
  std::cerr << "tpctl: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kNotFound ||
                 status.code() == absl::StatusCode::kOutOfRange
             ? 2
             : 1;
}

absl::Status RunEval(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(CommandArgs args,
                   CommandArgs::Parse(argv, {"irreps-in1", "irreps-in2", "irreps-out", "weights", "x1", "x2",
                                             "grad-out", "loss", "backend", "precision", "out"}));
  EvalInputs in;
  ASSIGN_OR_RETURN(in.irreps_in1, args.Require("irreps-in1"));
  ASSIGN_OR_RETURN(in.irreps_in2, args.Require("irreps-in2"));
  ASSIGN_OR_RETURN(in.irreps_out, args.Require("irreps-out"));
  ASSIGN_OR_RETURN(std::string out_dir, args.Require("out"));
  ASSIGN_OR_RETURN(std::string weights_path, args.Require("weights"));
  ASSIGN_OR_RETURN(std::string x1_path, args.Require("x1"));
  ASSIGN_OR_RETURN(std::string x2_path, args.Require("x2"));
  if (args.Has("grad-out") && args.Has("loss")) {
    return absl::InvalidArgumentError("expected at most one of --grad-out and --loss");
  }
  ASSIGN_OR_RETURN(in.weights, ReadNpy(weights_path));
  ASSIGN_OR_RETURN(in.x1, ReadNpy(x1_path));
  ASSIGN_OR_RETURN(in.x2, ReadNpy(x2_path));
  if (auto path = args.Get("grad-out")) {
    ASSIGN_OR_RETURN(in.grad_out, ReadNpy(*path));
  }
  if (auto loss = args.Get("loss")) {
    if (*loss != "sum_tanh" && *loss != "sum") {
      return absl::InvalidArgumentError("--loss: expected sum_tanh or sum, got '" + *loss + "'");
    }
    ASSIGN_OR_RETURN(in.loss, ParseLoss(*loss));
  }
  ASSIGN_OR_RETURN(in.precision, ParsePrecision(args.Get("precision").value_or("fp32")));
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(args.Get("backend").value_or("cpu")));
  ASSIGN_OR_RETURN(EvalOutputs outputs, EvalOnBackend(*backend, in));
  RETURN_IF_ERROR(CreateOutputDirectory(out_dir));
  RETURN_IF_ERROR(WriteNpy(out_dir + "/out.npy", outputs.out));
  if (outputs.grad_weight) RETURN_IF_ERROR(WriteNpy(out_dir + "/grad_weight.npy", *outputs.grad_weight));
  if (outputs.grad_x1) RETURN_IF_ERROR(WriteNpy(out_dir + "/grad_x1.npy", *outputs.grad_x1));
  if (outputs.grad_x2) RETURN_IF_ERROR(WriteNpy(out_dir + "/grad_x2.npy", *outputs.grad_x2));
  return absl::OkStatus();
}

absl::Status RunPlan(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, {"irreps-in1", "irreps-in2", "irreps-out"}));
  ASSIGN_OR_RETURN(std::string in1, args.Require("irreps-in1"));
  ASSIGN_OR_RETURN(std::string in2, args.Require("irreps-in2"));
  ASSIGN_OR_RETURN(std::string out, args.Require("irreps-out"));
  ASSIGN_OR_RETURN(TensorProductPlan plan, TensorProductPlan::FullyConnected(in1, in2, out));
  std::cout << plan.DebugString();
  return absl::OkStatus();
}

// Times forward and d/dw sum tanh TP on random inputs (after a warm-up run), reporting median
// and min wall time; the seed task by default.
absl::Status RunBench(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(CommandArgs args, CommandArgs::Parse(argv, {"backend", "irreps", "batch", "iters", "precision"}));
  const std::string irreps = args.Get("irreps").value_or("128x0e + 128x1e + 128x2e");
  int64_t batch = 64;
  int iters = 10;
  if (auto b = args.Get("batch"); b && (!absl::SimpleAtoi(*b, &batch) || batch <= 0))
    return absl::InvalidArgumentError("--batch: expected a positive integer");
  if (auto n = args.Get("iters"); n && (!absl::SimpleAtoi(*n, &iters) || iters <= 0))
    return absl::InvalidArgumentError("--iters: expected a positive integer");
  ASSIGN_OR_RETURN(Precision precision, ParsePrecision(args.Get("precision").value_or("fp32")));
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(args.Get("backend").value_or("cpu")));
  ASSIGN_OR_RETURN(TensorProductPlan plan, TensorProductPlan::FullyConnected(irreps, irreps, irreps));

  std::mt19937_64 rng(std::random_device{}());
  std::normal_distribution<float> normal;
  auto random = [&](std::vector<int64_t> shape) {
    NpyArray a = NpyArray::Zeros(DType::kFloat32, std::move(shape));
    float* data = reinterpret_cast<float*>(a.bytes.data());
    for (int64_t i = 0; i < a.numel(); ++i) data[i] = normal(rng);
    return a;
  };
  EvalInputs in;
  in.irreps_in1 = in.irreps_in2 = in.irreps_out = irreps;
  in.weights = random({plan.weight_numel()});
  in.x1 = random({batch, plan.dim_in1()});
  in.x2 = random({batch, plan.dim_in2()});
  in.precision = precision;

  std::cout << absl::StrFormat("tpctl bench: %s, batch %d, %d paths, %d weights, backend %s, %s, %d iterations\n",
                               irreps, batch, plan.paths().size(), plan.weight_numel(), backend->name(),
                               PrecisionName(precision), iters);
  // Times whole EvalOnBackend calls minus nothing: on the CPU backend staging is a memcpy,
  // small next to the tensor product; tp-bench times device kernels alone.
  for (bool gradient : {false, true}) {
    in.loss = gradient ? std::optional<Loss>(Loss::kSumTanh) : std::nullopt;
    std::vector<double> times_ms;
    for (int i = 0; i <= iters; ++i) {
      const auto start = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(EvalOutputs outputs, EvalOnBackend(*backend, in));
      const auto stop = std::chrono::steady_clock::now();
      if (i > 0) times_ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
      const float* out = reinterpret_cast<const float*>(outputs.out.bytes.data());
      if (!std::all_of(out, out + outputs.out.numel(), [](float v) { return std::isfinite(v); })) {
        return absl::InternalError("bench: non-finite output");
      }
    }
    std::sort(times_ms.begin(), times_ms.end());
    const double median = times_ms[times_ms.size() / 2];
    const double flops = plan.ForwardFlops(batch) * (gradient ? 2 : 1);
    std::cout << absl::StrFormat("  %-22s median %9.3f ms  min %9.3f ms  %7.1f GFLOP/s\n",
                                 gradient ? "d/dw sum tanh TP" : "forward", median, times_ms.front(),
                                 flops / median / 1e6);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  using namespace tpserve;
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  const std::vector<std::string> rest(argv + 2, argv + argc);
  if (std::any_of(rest.begin(), rest.end(), [](const std::string& a) { return a == "--help" || a == "-h"; })) {
    std::cout << kUsage;
    return 0;
  }
  const bool remote = std::any_of(rest.begin(), rest.end(), [](const std::string& a) {
    return a == "--server" || a.rfind("--server=", 0) == 0;
  });
  absl::Status status;
  if (command == "eval" && !remote) {
    status = RunEval(rest);
  } else if (command == "bench") {
    status = RunBench(rest);
  } else if (command == "plan") {
    status = RunPlan(rest);
  } else {
#ifdef TPCTL_HAVE_REMOTE
    return RunRemoteCommand(command, rest);
#else
    status = absl::InvalidArgumentError(remote ? "this tpctl was built without the gRPC client"
                                               : "unknown command '" + command + "'; see tpctl help");
#endif
  }
  if (!status.ok()) return Fail(status);
  return 0;
}
