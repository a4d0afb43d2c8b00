// A small parser for tpctl's "--name value" / "--name=value" command lines. Unknown or
// repeated flags and missing values are errors, so a typo never silently changes what runs.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve {

class CommandArgs {
 public:
  // `flags` lists the accepted flag names (without "--"); `switches` are flags without a value.
  static absl::StatusOr<CommandArgs> Parse(const std::vector<std::string>& argv, const std::set<std::string>& flags,
                                           const std::set<std::string>& switches = {});
  std::optional<std::string> Get(const std::string& name) const;
  absl::StatusOr<std::string> Require(const std::string& name) const;
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// Creates `dir` (and its parents) when missing, for a command's --out DIR; INVALID_ARGUMENT naming
// it when it cannot be made or is not a directory.
absl::Status CreateOutputDirectory(const std::string& dir);

}  // namespace tpserve
