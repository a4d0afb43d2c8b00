#include "client/tp-load/options.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace tpserve::load {
namespace {

absl::Status SweepError(const std::string& text, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("sweep '", text, "': ", why,
                                                 " (expected N, A,B,C, START:END:xFACTOR or START:END:+STEP)"));
}

absl::StatusOr<double> Positive(absl::string_view part, const std::string& text) {
  double value = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(part), &value) || !(value > 0) || !std::isfinite(value)) {
    return SweepError(text, absl::StrCat("'", part, "' is not a number > 0"));
  }
  return value;
}

absl::StatusOr<std::vector<double>> ParseRange(const std::string& text, const std::vector<std::string>& parts) {
  absl::StatusOr<double> start = Positive(parts[0], text), end = Positive(parts[1], text);
  if (!start.ok()) return start.status();
  if (!end.ok()) return end.status();
  if (*end < *start) return SweepError(text, "END is below START");
  const std::string step(absl::StripAsciiWhitespace(parts[2]));
  if (step.size() < 2 || (step[0] != 'x' && step[0] != '+')) return SweepError(text, "step must be xFACTOR or +STEP");
  absl::StatusOr<double> by = Positive(step.substr(1), text);
  if (!by.ok()) return by.status();
  if (step[0] == 'x' && *by <= 1) return SweepError(text, "a factor must be > 1");
  std::vector<double> values;
  for (double v = *start; v <= *end * (1 + 1e-9); v = step[0] == 'x' ? v * *by : v + *by) {
    values.push_back(v);
    if (values.size() > 1000) return SweepError(text, "more than 1000 levels");
  }
  return values;
}

}  // namespace

absl::StatusOr<std::vector<double>> ParseSweep(const std::string& text) {
  std::vector<std::string> range = absl::StrSplit(text, ':');
  if (range.size() == 3) return ParseRange(text, range);
  if (range.size() != 1) return SweepError(text, "a range has three parts");
  std::vector<double> values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    absl::StatusOr<double> value = Positive(part, text);
    if (!value.ok()) return value.status();
    values.push_back(*value);
  }
  return values;
}

absl::StatusOr<Operation> ParseOperation(const std::string& text) {
  if (text == "forward") return Operation::kForward;
  if (text == "backward") return Operation::kBackward;
  if (text == "mixed") return Operation::kMixed;
  if (text == "echo") return Operation::kEcho;
  return absl::InvalidArgumentError(absl::StrCat("--op '", text, "': expected forward, backward, mixed or echo"));
}

absl::StatusOr<Arrivals> ParseArrivals(const std::string& text) {
  if (text == "poisson") return Arrivals::kPoisson;
  if (text == "constant") return Arrivals::kConstant;
  return absl::InvalidArgumentError(absl::StrCat("--arrivals '", text, "': expected poisson or constant"));
}

absl::StatusOr<Transport> ParseTransport(const std::string& text) {
  if (text == "unary") return Transport::kUnary;
  if (text == "stream") return Transport::kStream;
  return absl::InvalidArgumentError(absl::StrCat("--transport '", text, "': expected unary or stream"));
}

std::string Name(LoopMode mode) { return mode == LoopMode::kClosed ? "closed" : "open"; }
std::string Name(Arrivals arrivals) { return arrivals == Arrivals::kPoisson ? "poisson" : "constant"; }
std::string Name(Transport transport) { return transport == Transport::kUnary ? "unary" : "stream"; }
std::string Name(Operation operation) {
  switch (operation) {
    case Operation::kForward: return "forward";
    case Operation::kBackward: return "backward";
    case Operation::kMixed: return "mixed";
    case Operation::kEcho: return "echo";
  }
  return "?";
}

}  // namespace tpserve::load
