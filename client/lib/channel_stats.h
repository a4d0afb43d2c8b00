// What a channel did per server, from gRPC's channelz: calls started, succeeded and failed on each
// subchannel (one per server address). A subchannel counts attempts, so a retried call counts on
// every server it tried: attempts minus the channel's calls are the retries and transparent
// re-sends, plus the health-check Watch that each new connection opens (so compare two reads
// taken after the channel has connected). Counts are cumulative for the process (subchannels are shared between channels with
// the same arguments); take differences between two reads.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace tpserve::client {

struct CallCounts {
  int64_t started = 0, succeeded = 0, failed = 0;
};

struct ChannelCalls {
  CallCounts calls;                                // calls as the application made them
  std::map<std::string, CallCounts> by_address;    // attempts per server ("ipv4:127.0.0.1:5000")
  int64_t attempts() const;                        // sum of by_address started
};

// The counts of every channel in this process whose target is `channel_target`.
absl::StatusOr<ChannelCalls> ReadChannelCalls(const std::string& channel_target);

// b - a, per field and address.
ChannelCalls Difference(const ChannelCalls& b, const ChannelCalls& a);

}  // namespace tpserve::client
