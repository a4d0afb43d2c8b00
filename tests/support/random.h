// Fresh random inputs for tests: each call draws new values (seeded from the test's name and a
// counter, printed on failure via the returned seed) so no test runs on zeros or fixed data.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace tpserve::testing {

// Normal(0, 1) values.
std::vector<double> RandomNormal(int64_t n, std::mt19937_64& rng);
// A generator seeded from std::random_device; the seed is recorded with SCOPED_TRACE by callers.
std::mt19937_64 FreshRng(uint64_t* seed_out = nullptr);

// ||a - b|| / ||b|| (Euclidean norms over all elements).
double RelativeError(const std::vector<double>& got, const std::vector<double>& want);
// max_i |a_i - b_i| / max(max_i |b_i|, tiny).
double MaxRelativeError(const std::vector<double>& got, const std::vector<double>& want);

}  // namespace tpserve::testing
