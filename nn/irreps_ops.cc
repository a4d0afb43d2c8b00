#include "nn/irreps_ops.h"

#include <algorithm>
#include <numeric>

namespace tpserve::nn {

bool ContainsIrrep(const Irreps& irreps, const Irrep& ir) {
  for (const MulIrrep& entry : irreps.entries()) {
    if (entry.ir == ir) return true;
  }
  return false;
}

SortedIrreps SortIrreps(const Irreps& irreps) {
  const int n = irreps.size();
  std::vector<int> order(n);  // order[k] = input entry at sorted position k (e3nn's `inv`)
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const Irrep& x = irreps[a].ir;
    const Irrep& y = irreps[b].ir;
    return x.l != y.l ? x.l < y.l : x.parity < y.parity;
  });
  SortedIrreps sorted;
  std::vector<MulIrrep> entries;
  sorted.permutation.assign(n, 0);
  for (int k = 0; k < n; ++k) {
    entries.push_back(irreps[order[k]]);
    sorted.permutation[order[k]] = k;
  }
  sorted.irreps = Irreps(std::move(entries));
  return sorted;
}

Irreps SimplifyIrreps(const Irreps& irreps) {
  std::vector<MulIrrep> entries;
  for (const MulIrrep& entry : irreps.entries()) {
    if (!entries.empty() && entries.back().ir == entry.ir) {
      entries.back().mul += entry.mul;
    } else {
      entries.push_back(entry);
    }
  }
  return Irreps(std::move(entries));
}

Irreps ConcatIrreps(const std::vector<Irreps>& parts) {
  std::vector<MulIrrep> entries;
  for (const Irreps& part : parts) entries.insert(entries.end(), part.entries().begin(), part.entries().end());
  return Irreps(std::move(entries));
}

Irreps SphericalHarmonicsIrreps(int lmax) {
  std::vector<MulIrrep> entries;
  for (int l = 0; l <= lmax; ++l) entries.push_back({1, Irrep{l, l % 2 == 0 ? 1 : -1}});
  return Irreps(std::move(entries));
}

bool PathExists(const Irreps& in1, const Irreps& in2, const Irrep& ir_out) {
  for (const MulIrrep& a : in1.entries()) {
    for (const MulIrrep& b : in2.entries()) {
      if (IsInProduct(a.ir, b.ir, ir_out)) return true;
    }
  }
  return false;
}

}  // namespace tpserve::nn
