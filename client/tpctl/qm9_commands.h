// tpctl qm9: network models (kind "qm9") on a tpserve.
//
//   tpctl qm9 create NAME --lmax L --mul M [--layers N (6)] [--seed K (0)]
//   tpctl qm9 train NAME (--data PATH | --generate N) --steps S [--batch B (27)] [--lr X (1e-2)]
//                   [--momentum X (0.9)] [--seed K (0): generated molecules]
//                   [--targets mu,alpha,homo,lumo: --data's target columns]
//       one line per step: "step k  loss X  version V", then the first and last loss
//   tpctl qm9 predict NAME (--data PATH | --generate N) [--batch B (27)] [--out F.npy]
//       one line per molecule: its name and num_targets outputs; --out writes them [N, num_targets]
// --data reads nn/data/qm9_files.h's formats: an .npz file, an .sdf (with PATH.csv), or a
// directory holding one of them. Batches are consecutive molecules, cycling through the data.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/lib/tp_client.h"
#include "client/tpctl/args.h"

namespace tpserve {

using ConnectFn = std::function<absl::StatusOr<std::unique_ptr<client::TpClient>>(const CommandArgs&)>;

// argv: what follows "qm9" (the subcommand first). `connection_flags` are accepted beside the
// subcommand's own; `connect` makes the client from them.
// "  saved version S" for a network model whose served version is not yet all on the server's disk
// (tpserve --network_save_every N > 1); "" otherwise, so the usual line stays as it was.
std::string SavedVersionNote(const tp::v1::ModelInfo& model);

absl::Status RunQm9Command(const std::vector<std::string>& argv, const std::set<std::string>& connection_flags,
                           const ConnectFn& connect);

}  // namespace tpserve
