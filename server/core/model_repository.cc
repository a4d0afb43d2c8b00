#include "server/core/model_repository.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace tpserve::server {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return ErrnoError("open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync", path);
  return absl::OkStatus();
}

// Writes `bytes` to `path` and fsyncs it (no rename).
absl::Status WriteAndSync(const std::string& path, const void* data, size_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("open", path);
  const char* p = static_cast<const char*>(data);
  size_t left = bytes;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = ErrnoError("write", path);
      ::close(fd);
      return status;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status status = ErrnoError("fsync", path);
    ::close(fd);
    return status;
  }
  if (::close(fd) != 0) return ErrnoError("close", path);
  return absl::OkStatus();
}

// temp + fsync + rename + fsync(dir): after return the new contents are durable; before it,
// `path` still holds its previous contents.
absl::Status WriteFileAtomic(const std::string& dir, const std::string& file, const void* data, size_t bytes) {
  std::string path = dir + "/" + file;
  std::string tmp = path + ".tmp";
  RETURN_IF_ERROR(WriteAndSync(tmp, data, bytes));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("rename", tmp);
  return FsyncPath(dir, /*directory=*/true);
}

std::string WeightsFileName(uint64_t version) { return absl::StrCat("weights-v", version, ".bin"); }

std::string ConfigJson(const std::string& name, const ModelSpec& spec, uint64_t version, int64_t weight_numel,
                       uint64_t fnv) {
  nlohmann::json config = {{"format", 1},
                           {"name", name},
                           {"irreps_in1", spec.irreps_in1},
                           {"irreps_in2", spec.irreps_in2},
                           {"irreps_out", spec.irreps_out},
                           {"version", version},
                           {"weight_numel", weight_numel},
                           {"weights_file", WeightsFileName(version)},
                           {"weights_fnv1a64", fnv}};
  return config.dump(2) + "\n";
}

std::string StateFileName(uint64_t version) { return absl::StrCat("state-v", version, ".bin"); }

// Parameters then velocity, as the state file holds them.
std::vector<double> StateBytes(const std::vector<double>& parameters, const std::vector<double>& velocity) {
  std::vector<double> state(parameters);
  state.insert(state.end(), velocity.begin(), velocity.end());
  return state;
}

std::string NetworkConfigJson(const std::string& name, const NetworkSpec& spec, uint64_t version,
                              int64_t num_parameters, uint64_t fnv) {
  nlohmann::json config = {{"format", 1},
                           {"kind", kQm9Kind},
                           {"name", name},
                           {"lmax", spec.lmax},
                           {"mul", spec.mul},
                           {"layers", spec.layers},
                           {"num_elements", spec.num_elements},
                           {"num_targets", spec.num_targets},
                           {"version", version},
                           {"num_parameters", num_parameters},
                           {"state_file", StateFileName(version)},
                           {"state_fnv1a64", fnv}};
  return config.dump(2) + "\n";
}

std::string Nonce() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(::getpid(), "-", counter.fetch_add(1));
}

// The only weights file names the repository writes: a config.json naming anything else (such
// as "../x") is damaged, and nothing outside the model's directory is ever read.
bool IsVersionedFileName(const std::string& file, const std::string& prefix) {
  if (!absl::StartsWith(file, prefix) || !absl::EndsWith(file, ".bin")) return false;
  const std::string digits = file.substr(prefix.size(), file.size() - prefix.size() - 4);
  return !digits.empty() && digits.size() <= 20 &&
         std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool IsWeightsFileName(const std::string& file) { return IsVersionedFileName(file, "weights-v"); }

absl::Status Damaged(const std::string& name, const std::string& what) {
  return absl::DataLossError(absl::StrCat("model '", name, "': ", what));
}

absl::StatusOr<nlohmann::json> ReadConfig(const std::string& config_path, const std::string& name) {
  std::ifstream in(config_path);
  if (!in) return Damaged(name, absl::StrCat(config_path, " is missing or unreadable"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json config = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return Damaged(name, absl::StrCat(config_path, " is not a JSON object",
                                      text.str().empty() ? " (the file is empty)" : ""));
  }
  return config;
}

// Removes what an interrupted commit left: other versions of `prefix` files and temp files.
void RemoveOrphans(const std::string& dir, const std::string& current, const std::string& prefix) {
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    std::string file = it->path().filename().string();
    if (file != current && (absl::StartsWith(file, prefix) || absl::EndsWith(file, ".tmp"))) {
      std::error_code ignored;
      fs::remove(it->path(), ignored);
    }
  }
}

absl::StatusOr<StoredNetwork> LoadNetwork(const std::string& dir, const std::string& name,
                                          const nlohmann::json& config) {
  const std::string config_path = dir + "/config.json";
  StoredNetwork network;
  std::string state_file;
  int64_t num_parameters = 0;
  uint64_t fnv = 0;
  try {
    network.name = config.at("name").get<std::string>();
    network.spec.lmax = config.at("lmax").get<int>();
    network.spec.mul = config.at("mul").get<int>();
    network.spec.layers = config.at("layers").get<int>();
    network.spec.num_elements = config.at("num_elements").get<int>();
    network.spec.num_targets = config.at("num_targets").get<int>();
    network.version = config.at("version").get<uint64_t>();
    num_parameters = config.at("num_parameters").get<int64_t>();
    state_file = config.at("state_file").get<std::string>();
    fnv = config.at("state_fnv1a64").get<uint64_t>();
  } catch (const std::exception& e) {
    return Damaged(name, absl::StrCat(config_path, ": ", e.what()));
  }
  if (network.name != name) return Damaged(name, absl::StrCat(config_path, " names model '", network.name, "'"));
  if (!IsVersionedFileName(state_file, "state-v")) {
    return Damaged(name, absl::StrCat(config_path, ": state_file '", state_file,
                                      "' is not a file name of the form state-v<N>.bin"));
  }
  if (num_parameters < 1 || num_parameters > kMaxServedWeightNumel) {
    return Damaged(name, absl::StrCat(config_path, ": num_parameters ", num_parameters, " is outside [1, ",
                                      kMaxServedWeightNumel, "]"));
  }
  const std::string state_path = dir + "/" + state_file;
  const int64_t expected_bytes = num_parameters * 2 * int64_t{sizeof(double)};
  struct stat state_stat {};
  if (::stat(state_path.c_str(), &state_stat) != 0 || !S_ISREG(state_stat.st_mode)) {
    return Damaged(name, absl::StrCat(state_path, " is missing (config.json names it)"));
  }
  if (state_stat.st_size != expected_bytes) {
    return Damaged(name, absl::StrCat(state_path, " holds ", state_stat.st_size, " bytes, expected ", expected_bytes,
                                      " (", num_parameters, " float64 parameters and as many velocities)"));
  }
  std::vector<double> state(static_cast<size_t>(2 * num_parameters));
  std::ifstream in(state_path, std::ios::binary);
  in.read(reinterpret_cast<char*>(state.data()), expected_bytes);
  if (!in || in.gcount() != expected_bytes) return Damaged(name, absl::StrCat(state_path, " cannot be read"));
  if (Fnv1a64(state.data(), static_cast<size_t>(expected_bytes)) != fnv) {
    return Damaged(name, absl::StrCat(state_path, " fails its checksum (state_fnv1a64 in config.json)"));
  }
  network.parameters.assign(state.begin(), state.begin() + num_parameters);
  network.velocity.assign(state.begin() + num_parameters, state.end());
  RemoveOrphans(dir, state_file, "state-v");
  return network;
}

absl::StatusOr<StoredModel> LoadOne(const std::string& dir, const std::string& name, const nlohmann::json& config) {
  const std::string config_path = dir + "/config.json";
  StoredModel model;
  std::string weights_file;
  int64_t weight_numel = 0;
  try {
    model.name = config.at("name").get<std::string>();
    model.spec = {config.at("irreps_in1").get<std::string>(), config.at("irreps_in2").get<std::string>(),
                  config.at("irreps_out").get<std::string>()};
    model.version = config.at("version").get<uint64_t>();
    weight_numel = config.at("weight_numel").get<int64_t>();
    weights_file = config.at("weights_file").get<std::string>();
    model.weights_fnv1a64 = config.at("weights_fnv1a64").get<uint64_t>();
  } catch (const std::exception& e) {
    return Damaged(name, absl::StrCat(config_path, ": ", e.what()));
  }
  if (model.name != name) {
    return Damaged(name, absl::StrCat(config_path, " names model '", model.name, "'"));
  }
  if (!IsWeightsFileName(weights_file)) {
    return Damaged(name, absl::StrCat(config_path, ": weights_file '", weights_file,
                                      "' is not a file name of the form weights-v<N>.bin"));
  }
  if (weight_numel < 1 || weight_numel > kMaxServedWeightNumel) {
    return Damaged(name, absl::StrCat(config_path, ": weight_numel ", weight_numel, " is outside [1, ",
                                      kMaxServedWeightNumel, "]"));
  }
  // The size is checked before anything is allocated: a damaged config cannot make us read or
  // allocate more than the file holds.
  const std::string weights_path = dir + "/" + weights_file;
  struct stat weights_stat {};
  if (::stat(weights_path.c_str(), &weights_stat) != 0 || !S_ISREG(weights_stat.st_mode)) {
    return Damaged(name, absl::StrCat(weights_path, " is missing (config.json names it)"));
  }
  if (weights_stat.st_size != weight_numel * 4) {
    return Damaged(name, absl::StrCat(weights_path, " holds ", weights_stat.st_size, " bytes, expected ",
                                      weight_numel * 4, " (", weight_numel, " float32)"));
  }
  std::ifstream weights_in(weights_path, std::ios::binary);
  if (!weights_in) return Damaged(name, absl::StrCat(weights_path, " cannot be read"));
  model.weights.resize(static_cast<size_t>(weight_numel));
  weights_in.read(reinterpret_cast<char*>(model.weights.data()), weight_numel * 4);
  if (weights_in.gcount() != weight_numel * 4 || weights_in.peek() != EOF) {
    return Damaged(name, absl::StrCat(weights_path, " does not hold ", weight_numel, " float32"));
  }
  if (Fnv1a64(model.weights.data(), model.weights.size() * 4) != model.weights_fnv1a64) {
    return Damaged(name, absl::StrCat(weights_path, " fails its checksum (weights_fnv1a64 in config.json)"));
  }
  // Orphans of an interrupted weight commit: other versions and temp files, nothing else.
  RemoveOrphans(dir, weights_file, "weights-v");
  return model;
}

// A new model's directory, committed whole: data file and config.json written and synced in a
// temporary directory, which is then renamed to <root>/<name>. A crash leaves no half-made model.
absl::Status CreateModelDir(const std::string& root, const std::string& name, const std::string& data_file,
                            const void* data, size_t bytes, const std::string& config) {
  std::string final_dir = root + "/" + name;
  if (fs::exists(final_dir)) return absl::AlreadyExistsError(absl::StrCat("model '", name, "' exists"));
  std::string tmp_dir = absl::StrCat(root, "/.tmp-", name, "-", Nonce());
  if (::mkdir(tmp_dir.c_str(), 0755) != 0) return ErrnoError("mkdir", tmp_dir);
  absl::Status status = WriteAndSync(tmp_dir + "/" + data_file, data, bytes);
  if (status.ok()) status = WriteAndSync(tmp_dir + "/config.json", config.data(), config.size());
  if (status.ok()) status = FsyncPath(tmp_dir, true);
  if (status.ok() && ::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) {
    status = errno == ENOTEMPTY || errno == EEXIST ? absl::AlreadyExistsError(absl::StrCat("model '", name, "' exists"))
                                                   : ErrnoError("rename", tmp_dir);
  }
  if (!status.ok()) {
    std::error_code ignored;
    fs::remove_all(tmp_dir, ignored);
    return status;
  }
  return FsyncPath(root, true);
}

}  // namespace

ModelRepository::ModelRepository(std::string root) : root_(std::move(root)) {}

absl::Status ModelRepository::Init() {
  if (!persistent()) return absl::OkStatus();
  std::error_code error;
  if (fs::exists(root_, error) && !fs::is_directory(root_, error)) {
    return absl::FailedPreconditionError(
        absl::StrCat("model repository ", root_, ": not a directory (--model_dir must name a directory)"));
  }
  fs::create_directories(root_, error);
  if (error) return absl::InternalError(absl::StrCat("model repository ", root_, ": ", error.message()));
  for (fs::directory_iterator it(root_, error), end; !error && it != end; it.increment(error)) {
    std::string file = it->path().filename().string();
    if (absl::StartsWith(file, ".tmp-") || absl::StartsWith(file, ".deleted-")) {
      std::error_code ignored;
      fs::remove_all(it->path(), ignored);
    }
  }
  if (error) return absl::InternalError(absl::StrCat("model repository ", root_, ": ", error.message()));
  return FsyncPath(root_, true);
}

absl::StatusOr<RepositoryContents> ModelRepository::Scan() {
  RepositoryContents contents;
  if (!persistent()) return contents;
  std::error_code error;
  std::vector<std::string> names;
  for (fs::directory_iterator it(root_, error), end; !error && it != end; it.increment(error)) {
    std::string name = it->path().filename().string();
    std::error_code ignored;
    if (name.empty() || name[0] == '.' || !it->is_directory(ignored)) continue;
    names.push_back(name);
  }
  if (error) return absl::InternalError(absl::StrCat("model repository ", root_, ": ", error.message()));
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string dir = root_ + "/" + name;
    absl::StatusOr<nlohmann::json> config = ReadConfig(dir + "/config.json", name);
    if (!config.ok()) {
      contents.damaged.push_back(DamagedModel{name, dir, config.status()});
      continue;
    }
    const auto kind = config->find("kind");
    if (kind != config->end() && *kind == kQm9Kind) {
      absl::StatusOr<StoredNetwork> network = LoadNetwork(dir, name, *config);
      if (network.ok()) contents.networks.push_back(*std::move(network));
      else contents.damaged.push_back(DamagedModel{name, dir, network.status()});
      continue;
    }
    if (kind != config->end() && *kind != kTensorProductKind) {
      contents.damaged.push_back(DamagedModel{
          name, dir, Damaged(name, absl::StrCat(dir, "/config.json: kind ", kind->dump(), "; expected \"tp\" or \"qm9\""))});
      continue;
    }
    absl::StatusOr<StoredModel> model = LoadOne(dir, name, *config);
    if (model.ok()) contents.models.push_back(*std::move(model));
    else contents.damaged.push_back(DamagedModel{name, dir, model.status()});
  }
  return contents;
}

absl::StatusOr<std::vector<StoredModel>> ModelRepository::LoadAll() {
  ASSIGN_OR_RETURN(RepositoryContents contents, Scan());
  if (!contents.damaged.empty()) return contents.damaged.front().why;
  return std::move(contents.models);
}

absl::StatusOr<std::string> ModelRepository::MoveAside(const std::string& name) {
  if (!persistent()) return absl::FailedPreconditionError("the repository keeps nothing on disk");
  const std::string dir = root_ + "/" + name;
  const std::string aside = absl::StrCat(root_, "/.damaged-", name, "-", ::time(nullptr), "-", Nonce());
  if (::rename(dir.c_str(), aside.c_str()) != 0) return ErrnoError("rename", dir);
  RETURN_IF_ERROR(FsyncPath(root_, true));
  return aside;
}

absl::Status ModelRepository::Create(const StoredModel& model) {
  if (!persistent()) return absl::OkStatus();
  std::string config = ConfigJson(model.name, model.spec, model.version,
                                  static_cast<int64_t>(model.weights.size()), model.weights_fnv1a64);
  return CreateModelDir(root_, model.name, WeightsFileName(model.version), model.weights.data(),
                        model.weights.size() * sizeof(float), config);
}

absl::Status ModelRepository::WriteWeights(const std::string& name, const ModelSpec& spec, uint64_t version,
                                           const std::vector<float>& weights, uint64_t weights_fnv1a64) {
  if (!persistent()) return absl::OkStatus();
  std::string dir = root_ + "/" + name;
  std::string weights_file = WeightsFileName(version);
  RETURN_IF_ERROR(WriteFileAtomic(dir, weights_file, weights.data(), weights.size() * sizeof(float)));
  std::string config =
      ConfigJson(name, spec, version, static_cast<int64_t>(weights.size()), weights_fnv1a64);
  RETURN_IF_ERROR(WriteFileAtomic(dir, "config.json", config.data(), config.size()));
  // The previous version is no longer referenced.
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string file = entry.path().filename().string();
    if (absl::StartsWith(file, "weights-v") && file != weights_file) {
      std::error_code ignored;
      fs::remove(entry.path(), ignored);
    }
  }
  return absl::OkStatus();
}

absl::Status ModelRepository::CreateNetwork(const StoredNetwork& network) {
  if (!persistent()) return absl::OkStatus();
  const std::vector<double> state = StateBytes(network.parameters, network.velocity);
  const size_t bytes = state.size() * sizeof(double);
  std::string config = NetworkConfigJson(network.name, network.spec, network.version,
                                         static_cast<int64_t>(network.parameters.size()), Fnv1a64(state.data(), bytes));
  return CreateModelDir(root_, network.name, StateFileName(network.version), state.data(), bytes, config);
}

absl::Status ModelRepository::WriteNetworkState(const std::string& name, const NetworkSpec& spec, uint64_t version,
                                                const std::vector<double>& parameters,
                                                const std::vector<double>& velocity) {
  if (!persistent()) return absl::OkStatus();
  std::string dir = root_ + "/" + name;
  const std::string state_file = StateFileName(version);
  const std::vector<double> state = StateBytes(parameters, velocity);
  const size_t bytes = state.size() * sizeof(double);
  RETURN_IF_ERROR(WriteFileAtomic(dir, state_file, state.data(), bytes));
  std::string config = NetworkConfigJson(name, spec, version, static_cast<int64_t>(parameters.size()),
                                         Fnv1a64(state.data(), bytes));
  RETURN_IF_ERROR(WriteFileAtomic(dir, "config.json", config.data(), config.size()));
  RemoveOrphans(dir, state_file, "state-v");
  return absl::OkStatus();
}

absl::Status ModelRepository::Remove(const std::string& name) {
  if (!persistent()) return absl::OkStatus();
  std::string dir = root_ + "/" + name;
  std::string graveyard = absl::StrCat(root_, "/.deleted-", name, "-", Nonce());
  if (::rename(dir.c_str(), graveyard.c_str()) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("model '", name, "' not found"));
    return ErrnoError("rename", dir);
  }
  RETURN_IF_ERROR(FsyncPath(root_, true));
  std::error_code ignored;
  fs::remove_all(graveyard, ignored);
  return absl::OkStatus();
}

}  // namespace tpserve::server
