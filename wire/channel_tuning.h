// Channel arguments that both ends (tpserve and tp_client) set for tensor-sized messages: a seed
// request is 590 KB, its reply 295 KB. gRPC's TCP reads start at 8 KB and grow only as reads
// fill up, so a message arrives in dozens of reads; starting at 1 MB, the unary Echo of those
// sizes took p50 0.52-0.72 ms instead of 0.55-1.01 ms on loopback (grpc-echo-probe on two H100
// hosts, glibc malloc defaults; with malloc_tuning.h too: 0.39-0.65 ms; docs/BENCHMARKS.md).
#pragma once

#include <utility>

namespace tpserve::transport {

inline constexpr std::pair<const char*, int> kTensorChannelArgs[] = {
    {"grpc.experimental.tcp_read_chunk_size", 1 << 20},
    {"grpc.experimental.tcp_min_read_chunk_size", 1 << 20},
    {"grpc.experimental.tcp_max_read_chunk_size", 4 << 20},
};

}  // namespace tpserve::transport
