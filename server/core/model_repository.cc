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

std::string Nonce() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(::getpid(), "-", counter.fetch_add(1));
}

// The only weights file names the repository writes: a config.json naming anything else (such
// as "../x") is damaged, and nothing outside the model's directory is ever read.
bool IsWeightsFileName(const std::string& file) {
  if (!absl::StartsWith(file, "weights-v") || !absl::EndsWith(file, ".bin")) return false;
  const std::string digits = file.substr(9, file.size() - 9 - 4);
  return !digits.empty() && digits.size() <= 20 &&
         std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
}

absl::Status Damaged(const std::string& name, const std::string& what) {
  return absl::DataLossError(absl::StrCat("model '", name, "': ", what));
}

absl::StatusOr<StoredModel> LoadOne(const std::string& dir, const std::string& name) {
  const std::string config_path = dir + "/config.json";
  std::ifstream in(config_path);
  if (!in) return Damaged(name, absl::StrCat(config_path, " is missing or unreadable"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json config = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return Damaged(name, absl::StrCat(config_path, " is not a JSON object",
                                      text.str().empty() ? " (the file is empty)" : ""));
  }
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
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    std::string file = it->path().filename().string();
    if (file != weights_file && (absl::StartsWith(file, "weights-v") || absl::EndsWith(file, ".tmp"))) {
      std::error_code ignored;
      fs::remove(it->path(), ignored);
    }
  }
  return model;
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
    absl::StatusOr<StoredModel> model = LoadOne(dir, name);
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
  std::string final_dir = root_ + "/" + model.name;
  if (fs::exists(final_dir)) return absl::AlreadyExistsError(absl::StrCat("model '", model.name, "' exists"));
  std::string tmp_dir = absl::StrCat(root_, "/.tmp-", model.name, "-", Nonce());
  if (::mkdir(tmp_dir.c_str(), 0755) != 0) return ErrnoError("mkdir", tmp_dir);
  std::string config = ConfigJson(model.name, model.spec, model.version,
                                  static_cast<int64_t>(model.weights.size()), model.weights_fnv1a64);
  absl::Status status = WriteAndSync(tmp_dir + "/" + WeightsFileName(model.version), model.weights.data(),
                                     model.weights.size() * sizeof(float));
  if (status.ok()) status = WriteAndSync(tmp_dir + "/config.json", config.data(), config.size());
  if (status.ok()) status = FsyncPath(tmp_dir, true);
  if (status.ok() && ::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) {
    status = errno == ENOTEMPTY || errno == EEXIST
                 ? absl::AlreadyExistsError(absl::StrCat("model '", model.name, "' exists"))
                 : ErrnoError("rename", tmp_dir);
  }
  if (!status.ok()) {
    std::error_code ignored;
    fs::remove_all(tmp_dir, ignored);
    return status;
  }
  return FsyncPath(root_, true);
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
