// tpctl's remote commands: the same .npy conventions as the local `tpctl eval`, run through a
// tpserve at --server HOST:PORT.
//
//   create       --model N --irreps-in1 S --irreps-in2 S --irreps-out S [--weights W.npy | --seed K]
//   list | get --model N | delete --model N
//   forward      --model N --x1 X1.npy --x2 X2.npy --out DIR                       (DIR/out.npy)
//   backward     --model N --x1 X1.npy --x2 X2.npy (--grad-out G.npy | --loss sum|sum_tanh)
//                [--weight-grad return|accumulate|none] --out DIR
//                (DIR/grad_x1.npy, grad_x2.npy with --grad-out; out.npy with --loss; grad_weight.npy)
//   get-weights  --model N --out W.npy      put-weights --model N --weights W.npy [--expected-version V]
//   get-grad     --model N --out G.npy      zero-grad --model N      sgd-step --model N --lr X [--zero-grad]
//   qm9          create|train|predict NAME ...: network models (qm9_commands.h)
//   health       [--service NAME]   grpc.health.v1 Check ("" = the server); prints the status,
//                exits 0 only for SERVING (1 for NOT_SERVING or no answer, 2 for an unknown service)
//   eval --server ...  the local eval's flags and outputs, computed by the service (on a temporary
//                      model that is deleted afterwards)
// Connection flags for all: --server HOST:PORT [--token T (else $TPSERVE_TOKEN)] [--tls]
// [--tls-ca PEM] [--tls-server-name NAME] [--timeout SECONDS] [--precision fp32|tf32|bf16].
// Exit codes as the rest of tpctl: 0 success, 2 bad input (one-line error on stderr), 1 otherwise.
#pragma once

#include <string>
#include <vector>

namespace tpserve {

int RunRemoteCommand(const std::string& command, const std::vector<std::string>& args);

}  // namespace tpserve
