// The few operations on irreps lists that e3nn's network modules rely on for their layouts:
// sort (stable, by (l, parity) with odd before even as e3nn's tuple order has it), simplify (merge
// neighbours of the same irrep), concatenation and membership.
#pragma once

#include <vector>

#include "kernels/core/irreps.h"

namespace tpserve::nn {

// True when some entry of `irreps` is `ir`.
bool ContainsIrrep(const Irreps& irreps, const Irrep& ir);

// e3nn's Irreps.sort(): entries ordered by (l, parity) with parity -1 < +1, ties kept in order.
// permutation[i] = position of input entry i in the sorted list (e3nn's `p`).
struct SortedIrreps {
  Irreps irreps;
  std::vector<int> permutation;
};
SortedIrreps SortIrreps(const Irreps& irreps);

// e3nn's Irreps.simplify(): adjacent entries of the same irrep merged (the flat layout is unchanged).
Irreps SimplifyIrreps(const Irreps& irreps);

Irreps ConcatIrreps(const std::vector<Irreps>& parts);

// e3nn's spherical-harmonics irreps up to lmax: 1x0e + 1x1o + 1x2e + ...
Irreps SphericalHarmonicsIrreps(int lmax);

// True when ir_out appears in ir1 x ir2 for some entries ir1 of in1 and ir2 of in2
// (gate_points_2101's tp_path_exists).
bool PathExists(const Irreps& in1, const Irreps& in2, const Irrep& ir_out);

}  // namespace tpserve::nn
