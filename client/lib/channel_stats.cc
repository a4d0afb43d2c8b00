#include "client/lib/channel_stats.h"

#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "grpc/grpc.h"
#include "grpc/support/alloc.h"
#include "nlohmann/json.hpp"

namespace tpserve::client {
namespace {

// channelz's JSON writes int64 as strings and leaves out zeros.
int64_t Count(const nlohmann::json& data, const char* key) {
  auto it = data.find(key);
  if (it == data.end()) return 0;
  if (it->is_string()) return std::strtoll(it->get<std::string>().c_str(), nullptr, 10);
  return it->is_number() ? it->get<int64_t>() : 0;
}

CallCounts Counts(const nlohmann::json& data) {
  return {Count(data, "callsStarted"), Count(data, "callsSucceeded"), Count(data, "callsFailed")};
}

// Takes ownership of channelz's malloc'ed string.
nlohmann::json Parse(char* text) {
  if (text == nullptr) return nlohmann::json();
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, false);
  gpr_free(text);
  return parsed;
}

void AddSubchannels(const nlohmann::json& channel, std::set<int64_t>& seen, ChannelCalls& out) {
  for (const auto& ref : channel.value("subchannelRef", nlohmann::json::array())) {
    const int64_t id = Count(ref, "subchannelId");
    if (!seen.insert(id).second) continue;
    nlohmann::json sub = Parse(grpc_channelz_get_subchannel(id));
    if (sub.is_discarded() || !sub.contains("subchannel")) continue;
    const nlohmann::json& data = sub["subchannel"].value("data", nlohmann::json::object());
    CallCounts counts = Counts(data);
    CallCounts& total = out.by_address[data.value("target", absl::StrCat("subchannel ", id))];
    total.started += counts.started;
    total.succeeded += counts.succeeded;
    total.failed += counts.failed;
  }
}

}  // namespace

int64_t ChannelCalls::attempts() const {
  int64_t sum = 0;
  for (const auto& [address, counts] : by_address) sum += counts.started;
  return sum;
}

absl::StatusOr<ChannelCalls> ReadChannelCalls(const std::string& channel_target) {
  ChannelCalls out;
  std::set<int64_t> seen;
  bool found = false;
  for (intptr_t start = 0;;) {
    nlohmann::json page = Parse(grpc_channelz_get_top_channels(start));
    if (page.is_discarded() || page.is_null()) return absl::InternalError("channelz: unreadable top channels");
    for (const auto& channel : page.value("channel", nlohmann::json::array())) {
      start = std::max<intptr_t>(start, Count(channel.value("ref", nlohmann::json::object()), "channelId") + 1);
      const nlohmann::json& data = channel.value("data", nlohmann::json::object());
      if (data.value("target", "") != channel_target) continue;
      found = true;
      CallCounts counts = Counts(data);
      out.calls.started += counts.started;
      out.calls.succeeded += counts.succeeded;
      out.calls.failed += counts.failed;
      AddSubchannels(channel, seen, out);
    }
    if (page.value("end", false) || !page.contains("channel")) break;
  }
  if (!found) return absl::NotFoundError(absl::StrCat("channelz: no channel to ", channel_target));
  return out;
}

ChannelCalls Difference(const ChannelCalls& b, const ChannelCalls& a) {
  auto minus = [](const CallCounts& x, const CallCounts& y) {
    return CallCounts{x.started - y.started, x.succeeded - y.succeeded, x.failed - y.failed};
  };
  ChannelCalls out;
  out.calls = minus(b.calls, a.calls);
  for (const auto& [address, counts] : b.by_address) {
    auto it = a.by_address.find(address);
    out.by_address[address] = it == a.by_address.end() ? counts : minus(counts, it->second);
  }
  return out;
}

}  // namespace tpserve::client
