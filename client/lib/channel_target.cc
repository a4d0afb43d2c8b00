#include "client/lib/channel_target.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace tpserve::client {
namespace {

bool IsUri(const std::string& target) {
  return absl::StrContains(target, "://") || absl::StartsWith(target, "ipv4:") ||
         absl::StartsWith(target, "ipv6:") || absl::StartsWith(target, "unix:") ||
         absl::StartsWith(target, "unix-abstract:") || absl::StartsWith(target, "dns:");
}

struct HostPort {
  std::string host, port;
};

absl::StatusOr<HostPort> SplitHostPort(absl::string_view address) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon + 1 == address.size() || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("server address '", address, "': expected HOST:PORT"));
  }
  HostPort hp{std::string(address.substr(0, colon)), std::string(address.substr(colon + 1))};
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']') {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  return hp;
}

bool IsLiteral(const std::string& host, int family) {
  unsigned char buffer[sizeof(struct in6_addr)];
  return inet_pton(family, host.c_str(), buffer) == 1;
}

// The literal address of `host` (itself when it is one), IPv4 preferred.
absl::StatusOr<std::string> Resolve(const HostPort& hp, int* family) {
  for (int literal_family : {AF_INET, AF_INET6}) {
    if (IsLiteral(hp.host, literal_family)) {
      *family = literal_family;
      return hp.host;
    }
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &found) != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("server address '", hp.host, "': cannot resolve"));
  }
  char text[INET6_ADDRSTRLEN] = {};
  *family = found->ai_family;
  const void* address = found->ai_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_addr);
  inet_ntop(found->ai_family, address, text, sizeof(text));
  freeaddrinfo(found);
  return std::string(text);
}

}  // namespace

absl::StatusOr<std::string> ChannelTarget(const std::string& servers) {
  std::string trimmed(absl::StripAsciiWhitespace(servers));
  if (trimmed.empty()) return absl::InvalidArgumentError("servers: expected HOST:PORT[,HOST:PORT...] or a gRPC URI");
  if (IsUri(trimmed) || !absl::StrContains(trimmed, ',')) return trimmed;
  std::vector<std::string> v4, v6;
  for (absl::string_view part : absl::StrSplit(trimmed, ',', absl::SkipWhitespace())) {
    absl::StatusOr<HostPort> hp = SplitHostPort(absl::StripAsciiWhitespace(part));
    if (!hp.ok()) return hp.status();
    int family = AF_INET;
    absl::StatusOr<std::string> literal = Resolve(*hp, &family);
    if (!literal.ok()) return literal.status();
    if (family == AF_INET) v4.push_back(absl::StrCat(*literal, ":", hp->port));
    else v6.push_back(absl::StrCat("[", *literal, "]:", hp->port));
  }
  if (!v4.empty() && !v6.empty()) {
    return absl::InvalidArgumentError("servers: a list must be all IPv4 or all IPv6 (one gRPC resolver per channel)");
  }
  return v4.empty() ? absl::StrCat("ipv6:", absl::StrJoin(v6, ",")) : absl::StrCat("ipv4:", absl::StrJoin(v4, ","));
}

std::vector<std::string> ListedAddresses(const std::string& servers) {
  std::string list(absl::StripAsciiWhitespace(servers));
  if (absl::StartsWith(list, "ipv4:") || absl::StartsWith(list, "ipv6:")) {
    list = list.substr(5);
  } else if (IsUri(list)) {
    return {};
  }
  std::vector<std::string> addresses;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    addresses.emplace_back(absl::StripAsciiWhitespace(part));
  }
  return addresses;
}

}  // namespace tpserve::client
