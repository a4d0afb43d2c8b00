// Channel arguments that both ends (tpserve and tp_client) set for tensor-sized messages: a seed
// request is 590 KB, its reply 295 KB. gRPC's TCP reads start at 8 KB and grow only as reads
// fill up, so a message arrives in dozens of reads; starting at 1 MB cuts the unary Echo of those
// sizes from ~0.70 to ~0.55 ms p50 on loopback (2-core dev VM, 1000 calls, docs/BENCHMARKS.md).
#pragma once

#include <utility>

namespace tpserve::transport {

inline constexpr std::pair<const char*, int> kTensorChannelArgs[] = {
    {"grpc.experimental.tcp_read_chunk_size", 1 << 20},
    {"grpc.experimental.tcp_min_read_chunk_size", 1 << 20},
    {"grpc.experimental.tcp_max_read_chunk_size", 4 << 20},
};

}  // namespace tpserve::transport
