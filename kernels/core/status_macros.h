// Helpers that turn early-return error handling into one line, in the style of Abseil's
// internal macros: RETURN_IF_ERROR(expr) and ASSIGN_OR_RETURN(lhs, expr).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TPS_CONCAT_INNER_(a, b) a##b
#define TPS_CONCAT_(a, b) TPS_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status tps_status_ = (expr);           \
    if (!tps_status_.ok()) return tps_status_;     \
  } while (0)

#define TPS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  TPS_ASSIGN_OR_RETURN_IMPL_(TPS_CONCAT_(tps_statusor_, __LINE__), lhs, expr)
