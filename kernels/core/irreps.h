// Irreducible representations of O(3) and their direct sums, in e3nn's notation.
//
// An Irrep is (l, parity): dimension 2l+1, parity +1 ("e") or -1 ("o").
// Irreps is an ordered list of (mul, irrep) entries; order and repeats are kept exactly as
// written, because e3nn's flat layouts (x[z, offset + u*(2l+1) + m]) and instruction order depend
// on them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tpserve {

struct Irrep {
  int l = 0;
  int parity = 1;  // +1 even ("e"), -1 odd ("o")

  int dim() const { return 2 * l + 1; }
  std::string ToString() const;  // "1o"
  // Parses "1o", "2e", "3y" (y: parity (-1)^l, as e3nn accepts).
  static absl::StatusOr<Irrep> Parse(absl::string_view text);

  friend bool operator==(const Irrep& a, const Irrep& b) { return a.l == b.l && a.parity == b.parity; }
  friend bool operator!=(const Irrep& a, const Irrep& b) { return !(a == b); }
};

struct MulIrrep {
  int mul = 0;
  Irrep ir;
  int64_t dim() const { return int64_t{mul} * ir.dim(); }
};

// True when ir_out appears in the decomposition of ir1 (x) ir2:
// |l1 - l2| <= l_out <= l1 + l2 and parity_out == parity1 * parity2.
bool IsInProduct(const Irrep& ir1, const Irrep& ir2, const Irrep& ir_out);

class Irreps {
 public:
  Irreps() = default;
  explicit Irreps(std::vector<MulIrrep> entries);

  // Parses e3nn's syntax: "128x0e + 128x1e + 128x2e", "1o", "3x2e+1x0o", "" (empty).
  // Errors name the offending term, its position and what was expected.
  static absl::StatusOr<Irreps> Parse(absl::string_view text);

  const std::vector<MulIrrep>& entries() const { return entries_; }
  int size() const { return static_cast<int>(entries_.size()); }
  const MulIrrep& operator[](int i) const { return entries_[i]; }
  int64_t dim() const { return dim_; }
  // Offset of entry i in a flat vector of dim() numbers.
  int64_t offset(int i) const { return offsets_[i]; }
  int max_l() const;

  // e3nn's printing: "128x0e+128x1e+128x2e" (no spaces, multiplicity always shown).
  std::string ToString() const;

 private:
  std::vector<MulIrrep> entries_;
  std::vector<int64_t> offsets_;
  int64_t dim_ = 0;
};

}  // namespace tpserve
