#include "server/metrics/http_exposer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tpserve::server {
namespace {

constexpr size_t kMaxRequestBytes = 16 << 10;

void WriteAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the scraper went away; nothing to do
    sent += static_cast<size_t>(n);
  }
}

std::string Response(const std::string& status, const std::string& content_type, const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type, "\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace

HttpExposer::~HttpExposer() {
  if (thread_.joinable()) {
    const char byte = 0;
    (void)!::write(wake_pipe_[1], &byte, 1);
    thread_.join();
  }
  for (int fd : {listen_fd_, wake_pipe_[0], wake_pipe_[1]})
    if (fd >= 0) ::close(fd);
}

absl::Status HttpExposer::Start(const std::string& address, BodyFn body) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address '", address, "': expected HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* resolved = nullptr;
  const std::string port_text = std::to_string(port);
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port_text.c_str(), &hints, &resolved); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address '", address, "': ", gai_strerror(rc)));
  }
  listen_fd_ = ::socket(resolved->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool bound = listen_fd_ >= 0 && ::bind(listen_fd_, resolved->ai_addr, resolved->ai_addrlen) == 0 &&
                     ::listen(listen_fd_, 64) == 0;
  ::freeaddrinfo(resolved);
  if (!bound) {
    return absl::UnavailableError(absl::StrCat("metrics HTTP server on ", address, ": ", std::strerror(errno)));
  }
  sockaddr_storage bound_address{};
  socklen_t length = sizeof(bound_address);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound_address), &length);
  port_ = ntohs(bound_address.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound_address)->sin6_port
                                                     : reinterpret_cast<sockaddr_in*>(&bound_address)->sin_port);
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) return absl::InternalError("metrics HTTP server: pipe failed");
  body_ = std::move(body);
  thread_ = std::thread([this] { Serve(); });
  return absl::OkStatus();
}

void HttpExposer::Serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;  // destructor asked us to stop
    if (fds[0].revents & POLLIN) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      HandleConnection(fd);
      ::close(fd);
    }
  }
}

void HttpExposer::HandleConnection(int fd) {
  // A slow or silent client must not hold the scrape endpoint: 2 s to send its request.
  timeval timeout{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  std::string request;
  char buffer[2048];
  while (request.find("\r\n\r\n") == std::string::npos && request.find("\n\n") == std::string::npos) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) return;
    request.append(buffer, static_cast<size_t>(n));
    if (request.size() > kMaxRequestBytes) {
      WriteAll(fd, Response("431 Request Header Fields Too Large", "text/plain", "request too large\n"));
      return;
    }
  }
  const size_t line_end = request.find_first_of("\r\n");
  const std::string line = request.substr(0, line_end);
  const size_t space1 = line.find(' ');
  const size_t space2 = line.find(' ', space1 + 1);
  if (space1 == std::string::npos) {
    WriteAll(fd, Response("400 Bad Request", "text/plain", "expected an HTTP request line\n"));
    return;
  }
  const std::string method = line.substr(0, space1);
  std::string path = line.substr(space1 + 1, space2 == std::string::npos ? std::string::npos : space2 - space1 - 1);
  if (const size_t query = path.find('?'); query != std::string::npos) path.resize(query);
  if (path != "/metrics") {
    WriteAll(fd, Response("404 Not Found", "text/plain", "only /metrics is served here\n"));
    return;
  }
  if (method != "GET" && method != "HEAD") {
    WriteAll(fd, Response("405 Method Not Allowed", "text/plain", "expected GET /metrics\n"));
    return;
  }
  std::string response = Response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body_());
  if (method == "HEAD") response.resize(response.find("\r\n\r\n") + 4);
  WriteAll(fd, response);
}

}  // namespace tpserve::server
