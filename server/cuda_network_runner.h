// Network models on a CUDA device: per model a Qm9CudaNetwork (nn/cuda/, fp32), made on the
// model's first call. The device holds the float32 copy of one version's parameters and velocity
// (uploaded when the state handed in is another version); a TrainStep runs loss, gradient and the
// SGD update on the device and downloads the new parameters and velocity (float32 -> float64
// exactly), which the core saves and commits as it does the CPU's. Calls of one model serialize on
// its runner. Built only where CUDA compiles (TPSERVE_HAVE_CUDA).
#pragma once

#include <memory>

#include "server/core/network_runner.h"

namespace tpserve::server {

std::unique_ptr<NetworkRunnerFactory> MakeCudaNetworkRunners(int device);

}  // namespace tpserve::server
