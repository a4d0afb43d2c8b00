// The model repository: models on disk, one directory each, written so that a crash or kill -9 at
// any moment leaves every model at its last committed version.
//
// Layout under root:
//   <name>/config.json           {"name", "irreps_in1", "irreps_in2", "irreps_out", "version",
//                                  "weight_numel", "weights_file", "weights_fnv1a64", "format": 1}
//   <name>/weights-v<N>.bin      weight_numel float32, little-endian, e3nn's flat layout
// or, for a network model (kind "qm9", network_spec.h):
//   <name>/config.json           {"format": 1, "kind": "qm9", "name", "lmax", "mul", "layers",
//                                  "num_elements", "num_targets", "version", "num_parameters",
//                                  "state_file", "state_fnv1a64"}
//   <name>/state-v<N>.bin        num_parameters float64 parameters, then num_parameters float64
//                                momentum velocities, little-endian (one file: the two always
//                                change together, so one rename commits both)
// A config.json without "kind" is a tensor-product model (every model written before network
// models existed).
// Commit protocol (every step that publishes is a rename after fsync, then an fsync of the
// directory, so a reader after a crash sees either the old or the new file, complete):
//   create:  write both files into .tmp-<name>-<nonce>/, fsync them and the directory, rename the
//            directory to <name>, fsync root.
//   weights (and network state, the same with state-v<N>.bin): write weights-v<N>.bin (temp + fsync + rename + fsync dir), then config.json pointing
//            at it (same), then unlink the previous weights file. A crash between the two leaves
//            config.json naming the old, intact file; the orphan is removed at the next load.
//   delete:  rename <name> to .deleted-<name>-<nonce>, fsync root, then remove it.
// A model whose files fail their checks (unreadable or invalid config.json, a weights file that is
// missing, of the wrong size, outside the model's directory or failing its FNV-1a checksum) is
// reported as damaged, naming the file and what is wrong; MoveAside renames its directory to
// .damaged-<name>-<nonce> (kept, never deleted, and ignored by later loads).
// The root may be empty: the repository then keeps nothing (an in-memory server).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/model.h"
#include "server/core/network_spec.h"

namespace tpserve::server {

struct StoredModel {
  std::string name;
  ModelSpec spec;
  uint64_t version = 0;
  std::vector<float> weights;
  uint64_t weights_fnv1a64 = 0;
};

// A network model as stored: its spec, and its parameters and optimizer state at one version.
struct StoredNetwork {
  std::string name;
  NetworkSpec spec;
  uint64_t version = 0;
  std::vector<double> parameters;
  std::vector<double> velocity;  // the same length as parameters (zeros before the first step)
};

// A model directory that cannot be loaded: `why` (DATA_LOSS) names the file and what is wrong.
struct DamagedModel {
  std::string name;
  std::string path;  // the model's directory
  absl::Status why;
};

struct RepositoryContents {
  std::vector<StoredModel> models;    // sorted by name
  std::vector<StoredNetwork> networks;  // sorted by name
  std::vector<DamagedModel> damaged;  // sorted by name
};

class ModelRepository {
 public:
  explicit ModelRepository(std::string root);

  bool persistent() const { return !root_.empty(); }
  const std::string& root() const { return root_; }

  // Creates root if needed and removes leftovers of interrupted writes (.tmp-*, .deleted-*).
  // FAILED_PRECONDITION when root exists but is not a directory.
  absl::Status Init();
  // Every committed tensor-product model, sorted by name. A model whose files fail their checks is an error
  // naming it (the server refuses to start rather than serve wrong weights).
  absl::StatusOr<std::vector<StoredModel>> LoadAll();
  // Every model directory, loaded or reported damaged; an error only when root cannot be read.
  absl::StatusOr<RepositoryContents> Scan();
  // Renames a (damaged) model's directory to .damaged-<name>-<nonce> under root and returns the
  // new path. Nothing is deleted; the name becomes free.
  absl::StatusOr<std::string> MoveAside(const std::string& name);

  // ALREADY_EXISTS if a model of that name is on disk.
  absl::Status Create(const StoredModel& model);
  // Commits `weights` as `version` of an existing model.
  absl::Status WriteWeights(const std::string& name, const ModelSpec& spec, uint64_t version,
                            const std::vector<float>& weights, uint64_t weights_fnv1a64);
  // Network models: created, and their state committed, with the same protocol as weights.
  // Remove works for both kinds.
  absl::Status CreateNetwork(const StoredNetwork& network);
  absl::Status WriteNetworkState(const std::string& name, const NetworkSpec& spec, uint64_t version,
                                 const std::vector<double>& parameters, const std::vector<double>& velocity);
  absl::Status Remove(const std::string& name);

 private:
  std::string root_;
};

}  // namespace tpserve::server
