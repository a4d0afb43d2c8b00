// How a TpClient names its servers to gRPC. One address ("host:port"), a list ("a:1,b:2") or any
// gRPC target URI ("dns:///name:port", "ipv4:127.0.0.1:1,127.0.0.1:2", "unix:/path") becomes one
// channel target whose resolver yields every server, so that round_robin can spread calls over them.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve::client {

// "host:port" and URIs pass through unchanged. A comma list of IPv4 (or [IPv6]) literals becomes
// "ipv4:a,b" ("ipv6:..."); host names in a list are resolved once, here (gRPC's built-in resolvers
// take one name per target), so a list of names is a static set of addresses.
absl::StatusOr<std::string> ChannelTarget(const std::string& servers);

// The individual "host:port" addresses of a list or an ipv4:/ipv6: target (one entry for a single
// address); empty for targets whose addresses only a resolver knows (dns:///, unix:, ...).
std::vector<std::string> ListedAddresses(const std::string& servers);

}  // namespace tpserve::client
