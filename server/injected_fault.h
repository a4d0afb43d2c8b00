// A test aid, off unless the environment asks for it: TPSERVE_INJECT_DEVICE_FAULT=<device>@<N>
// (e.g. cuda:1@500) makes the backends of <device> fail their launches after the first N launches
// on that device, and report the device lost (Backend::CheckDevice) from then on, as a GPU whose
// context took an illegal address does. It shows on a running server, with real devices, that a
// faulting device leaves the rotation while the others keep serving (tools/gpu/multigpu.sh).
// The server prints a warning at start when it is on. Other devices' backends are not wrapped.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/core/backend.h"

namespace tpserve::server {

inline constexpr char kInjectDeviceFaultEnv[] = "TPSERVE_INJECT_DEVICE_FAULT";

// With `spec` null or empty: nothing. Else wraps the backends named by `spec` (INVALID_ARGUMENT
// for a malformed spec or a device no backend has) and returns a line for the log.
absl::StatusOr<std::string> InjectDeviceFault(const char* spec, std::vector<std::unique_ptr<Backend>>& backends);

}  // namespace tpserve::server
