#include "tests/support/random.h"

#include <algorithm>
#include <cmath>

namespace tpserve::testing {

std::vector<double> RandomNormal(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> values(n);
  for (double& v : values) v = normal(rng);
  return values;
}

std::mt19937_64 FreshRng(uint64_t* seed_out) {
  std::random_device device;
  const uint64_t seed = (uint64_t{device()} << 32) ^ device();
  if (seed_out != nullptr) *seed_out = seed;
  return std::mt19937_64(seed);
}

double RelativeError(const std::vector<double>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = (i < got.size() ? got[i] : NAN) - want[i];
    diff += d * d;
    norm += want[i] * want[i];
  }
  if (got.size() != want.size()) return INFINITY;
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-300);
}

double MaxRelativeError(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return INFINITY;
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(got[i] - want[i]);
    if (!(d <= max_diff)) max_diff = d;  // NaN propagates
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  return max_diff / std::max(max_ref, 1e-300);
}

}  // namespace tpserve::testing
