#include "kernels/core/irreps.h"

#include <algorithm>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tpserve {
namespace {

// Largest l we accept: far beyond any practical network, small enough that dims never overflow.
constexpr int kMaxL = 64;
constexpr int64_t kMaxMul = 1 << 24;

// Client text quoted in an error: its first `max_bytes`, marked when cut (a megabyte-long irreps
// string must not come back as a megabyte-long message).
std::string Abbreviated(absl::string_view text, size_t max_bytes = 64) {
  if (text.size() <= max_bytes) return std::string(text);
  return absl::StrCat(text.substr(0, max_bytes), "... (", text.size(), " bytes)");
}

bool AllDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(c); });
}

}  // namespace

std::string Irrep::ToString() const { return absl::StrCat(l, parity == 1 ? "e" : "o"); }

absl::StatusOr<Irrep> Irrep::Parse(absl::string_view text) {
  absl::string_view name = absl::StripAsciiWhitespace(text);
  if (name.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("irrep '", Abbreviated(name), "': expected <l><parity> such as '0e', '1o' or '2y'"));
  }
  const char parity_char = name.back();
  absl::string_view l_text = name.substr(0, name.size() - 1);
  int l = 0;
  if (!AllDigits(l_text) || !absl::SimpleAtoi(l_text, &l) || l > kMaxL) {
    return absl::InvalidArgumentError(absl::StrCat("irrep '", Abbreviated(name), "': expected l to be an integer in [0, ",
                                                   kMaxL, "] before the parity letter"));
  }
  Irrep ir;
  ir.l = l;
  switch (parity_char) {
    case 'e': ir.parity = 1; break;
    case 'o': ir.parity = -1; break;
    case 'y': ir.parity = (l % 2 == 0) ? 1 : -1; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("irrep '", Abbreviated(name), "': expected parity 'e', 'o' or 'y', got '",
                                                     std::string(1, parity_char), "'"));
  }
  return ir;
}

bool IsInProduct(const Irrep& ir1, const Irrep& ir2, const Irrep& ir_out) {
  return std::abs(ir1.l - ir2.l) <= ir_out.l && ir_out.l <= ir1.l + ir2.l &&
         ir_out.parity == ir1.parity * ir2.parity;
}

Irreps::Irreps(std::vector<MulIrrep> entries) : entries_(std::move(entries)) {
  offsets_.reserve(entries_.size());
  for (const MulIrrep& e : entries_) {
    offsets_.push_back(dim_);
    dim_ += e.dim();
  }
}

absl::StatusOr<Irreps> Irreps::Parse(absl::string_view text) {
  std::vector<MulIrrep> entries;
  if (absl::StripAsciiWhitespace(text).empty()) return Irreps();
  size_t position = 0;
  int term_index = 0;
  for (absl::string_view term : absl::StrSplit(text, '+')) {
    const size_t term_position = position;
    position += term.size() + 1;
    absl::string_view stripped = absl::StripAsciiWhitespace(term);
    // Copied before the increment: the lambda runs later, and must name this term (0-based).
    const int this_term = term_index++;
    auto where = [&] {
      return absl::StrCat("irreps \"", Abbreviated(text), "\": term ", this_term, " ('", Abbreviated(stripped),
                          "') at character ", term_position);
    };
    if (stripped.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), " is empty; expected terms like '128x0e' joined by '+'"));
    }
    MulIrrep entry;
    entry.mul = 1;
    absl::string_view ir_text = stripped;
    const size_t x = stripped.find('x');
    if (x != absl::string_view::npos) {
      absl::string_view mul_text = absl::StripAsciiWhitespace(stripped.substr(0, x));
      int64_t mul = 0;
      if (!AllDigits(mul_text) || !absl::SimpleAtoi(mul_text, &mul) || mul > kMaxMul) {
        return absl::InvalidArgumentError(absl::StrCat(
            where(), ": expected a multiplicity in [0, ", kMaxMul, "] before 'x', got '", Abbreviated(mul_text), "'"));
      }
      entry.mul = static_cast<int>(mul);
      ir_text = stripped.substr(x + 1);
    }
    absl::StatusOr<Irrep> ir = Irrep::Parse(ir_text);
    if (!ir.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": ", ir.status().message()));
    }
    entry.ir = *ir;
    entries.push_back(entry);
  }
  return Irreps(std::move(entries));
}

int Irreps::max_l() const {
  int max_l = 0;
  for (const MulIrrep& e : entries_) max_l = std::max(max_l, e.ir.l);
  return max_l;
}

std::string Irreps::ToString() const {
  return absl::StrJoin(entries_, "+", [](std::string* out, const MulIrrep& e) {
    absl::StrAppend(out, e.mul, "x", e.ir.ToString());
  });
}

}  // namespace tpserve
