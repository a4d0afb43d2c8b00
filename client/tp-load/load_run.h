// A whole tp-load run: connect (one balanced channel over every server), make sure each listed
// server has the model, check one response of each against the CPU backend, then run every load
// level in turn and collect the report.
#pragma once

#include "absl/status/statusor.h"
#include "client/tp-load/options.h"
#include "client/tp-load/report.h"

namespace tpserve::load {

absl::StatusOr<RunReport> RunLoad(const LoadOptions& options, bool verify_only);

// Whether a sweep should stop: the last two levels each added less than 5% to the best throughput
// of the levels before them.
bool Saturated(const std::vector<LevelResult>& levels);

}  // namespace tpserve::load
