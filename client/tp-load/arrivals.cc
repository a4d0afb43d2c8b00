#include "client/tp-load/arrivals.h"

namespace tpserve::load {

ArrivalSchedule::ArrivalSchedule(Arrivals kind, double rate_per_s, uint64_t seed)
    : kind_(kind), rate_per_s_(rate_per_s), rng_(seed), gap_(rate_per_s) {}

double ArrivalSchedule::NextOffsetSeconds() {
  std::lock_guard<std::mutex> lock(mu_);
  // Constant: k / rate, from the count, so rounding does not drift over a long run.
  if (kind_ == Arrivals::kConstant) return static_cast<double>(sent_++) / rate_per_s_;
  poisson_offset_s_ += gap_(rng_);
  return poisson_offset_s_;
}

}  // namespace tpserve::load
