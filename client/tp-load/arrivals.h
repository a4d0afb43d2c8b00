// Open-loop arrivals: the time of each scheduled send, fixed before the load runs, so that a slow
// answer delays no later request (latency is measured from the scheduled time: no coordinated
// omission). Poisson arrivals have exponential gaps of mean 1/rate; constant ones exactly 1/rate.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>

#include "client/tp-load/options.h"

namespace tpserve::load {

class ArrivalSchedule {
 public:
  ArrivalSchedule(Arrivals kind, double rate_per_s, uint64_t seed);

  // Seconds from the start to the next send; each call returns the next one (thread-safe).
  double NextOffsetSeconds();

 private:
  std::mutex mu_;
  Arrivals kind_;
  double rate_per_s_;
  std::mt19937_64 rng_;
  std::exponential_distribution<double> gap_;
  int64_t sent_ = 0;
  double poisson_offset_s_ = 0;
};

}  // namespace tpserve::load
