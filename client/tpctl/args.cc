#include "client/tpctl/args.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tpserve {

absl::StatusOr<CommandArgs> CommandArgs::Parse(const std::vector<std::string>& argv,
                                               const std::set<std::string>& flags,
                                               const std::set<std::string>& switches) {
  CommandArgs args;
  for (size_t n = 0; n < argv.size(); ++n) {
    const std::string& arg = argv[n];
    if (!absl::StartsWith(arg, "--")) {
      args.positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const bool is_switch = switches.count(name) > 0;
    if (!is_switch && flags.count(name) == 0) {
      std::set<std::string> all = flags;
      all.insert(switches.begin(), switches.end());
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, "; expected one of --", absl::StrJoin(all, ", --")));
    }
    if (args.values_.count(name)) return absl::InvalidArgumentError(absl::StrCat("flag --", name, " given twice"));
    if (is_switch) {
      args.values_[name] = inline_value ? value : "true";
      continue;
    }
    if (!inline_value) {
      if (n + 1 >= argv.size()) return absl::InvalidArgumentError(absl::StrCat("flag --", name, " expects a value"));
      value = argv[++n];
    }
    args.values_[name] = value;
  }
  return args;
}

std::optional<std::string> CommandArgs::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::string> CommandArgs::Require(const std::string& name) const {
  auto value = Get(name);
  if (!value) return absl::InvalidArgumentError(absl::StrCat("missing required flag --", name));
  return *value;
}

absl::Status CreateOutputDirectory(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error || !std::filesystem::is_directory(dir, error)) {
    return absl::InvalidArgumentError(absl::StrCat("--out ", dir, ": expected a directory (",
                                                   error ? error.message() : "a file of that name exists", ")"));
  }
  return absl::OkStatus();
}

}  // namespace tpserve
