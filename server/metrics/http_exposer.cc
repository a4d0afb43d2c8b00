#include "server/metrics/http_exposer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tpserve::server {
namespace {

constexpr size_t kMaxRequestBytes = 16 << 10;

std::string Response(const std::string& status, const std::string& content_type, const std::string& body,
                     const std::string& extra_headers = "") {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type, "\r\nContent-Length: ", body.size(),
                      "\r\n", extra_headers, "Connection: close\r\n\r\n", body);
}

// Same length, every byte compared: no early exit that a timing attack could measure.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

bool HasBearerToken(const std::string& request, const std::string& token) {
  bool found = false;
  for (absl::string_view line : absl::StrSplit(request, '\n')) {
    absl::string_view value = line;
    if (!absl::StartsWithIgnoreCase(value, "authorization:")) continue;
    value.remove_prefix(14);
    value = absl::StripAsciiWhitespace(value);
    found = ConstantTimeEquals(value, absl::StrCat("Bearer ", token)) || found;
  }
  return found;
}

// One connection's byte stream, plain or TLS. Blocking calls; the deadline is enforced from
// outside by shutting the socket down.
class Connection {
 public:
  Connection(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  ~Connection() {
    if (ssl_ != nullptr) SSL_free(ssl_);
  }
  bool Handshake() { return ssl_ == nullptr || SSL_accept(ssl_) == 1; }
  ssize_t Read(char* buffer, size_t size) {
    if (ssl_ == nullptr) {
      while (true) {
        const ssize_t n = ::recv(fd_, buffer, size, 0);
        if (n >= 0 || errno != EINTR) return n;
      }
    }
    return SSL_read(ssl_, buffer, static_cast<int>(size));
  }
  void WriteAll(const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      ssize_t n;
      if (ssl_ == nullptr) {
        n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
      } else {
        n = SSL_write(ssl_, data.data() + sent, static_cast<int>(data.size() - sent));
      }
      if (n <= 0) return;  // the scraper went away or the deadline cut it; nothing to do
      sent += static_cast<size_t>(n);
    }
    if (ssl_ != nullptr) SSL_shutdown(ssl_);
  }

 private:
  int fd_;
  SSL* ssl_;
};

}  // namespace

HttpExposer::~HttpExposer() {
  if (thread_.joinable()) {
    const char byte = 0;
    (void)!::write(wake_pipe_[1], &byte, 1);
    thread_.join();
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (const auto& [fd, deadline] : open_) ::shutdown(fd, SHUT_RDWR);
    all_closed_.wait(lock, [this] { return threads_ == 0; });
  }
  for (int fd : {listen_fd_, wake_pipe_[0], wake_pipe_[1]})
    if (fd >= 0) ::close(fd);
}

absl::Status HttpExposer::Start(const HttpExposerOptions& options, BodyFn body) {
  options_ = options;
  const std::string& address = options.address;
  if (options.max_connections < 1) return absl::InvalidArgumentError("metrics HTTP server: max_connections >= 1");
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    absl::StatusOr<SslContext> tls = MakeServerSslContext(options.tls_cert_file, options.tls_key_file);
    if (!tls.ok()) return tls.status();
    tls_ = *std::move(tls);
  }
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

absl::Status HttpExposer::ReloadTls() {
  if (options_.tls_cert_file.empty()) return absl::OkStatus();
  absl::StatusOr<SslContext> tls = MakeServerSslContext(options_.tls_cert_file, options_.tls_key_file);
  if (!tls.ok()) return tls.status();
  std::lock_guard<std::mutex> lock(mu_);
  tls_ = *std::move(tls);  // connections in progress keep the context they started with
  return absl::OkStatus();
}

void HttpExposer::CutExpiredConnections() {
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mu_);
  // The connection's thread unblocks, fails its read or write, and closes the socket.
  for (const auto& [fd, deadline] : open_) {
    if (deadline <= now) ::shutdown(fd, SHUT_RDWR);
  }
}

void HttpExposer::Serve() {
  bool backing_off = false;
  while (true) {
    int timeout_ms = -1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!open_.empty()) timeout_ms = 50;  // deadlines are checked at this granularity
    }
    if (backing_off) timeout_ms = 100;
    pollfd fds[2] = {{listen_fd_, static_cast<short>(backing_off ? 0 : POLLIN), 0}, {wake_pipe_[0], POLLIN, 0}};
    const int ready = ::poll(fds, 2, timeout_ms);
    if (ready < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;  // the destructor asked us to stop
    CutExpiredConnections();
    backing_off = false;
    if (ready <= 0 || !(fds[0].revents & POLLIN)) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors or memory: the pending connection stays queued and poll would report it
      // again at once, so wait a little instead of spinning on a core.
      backing_off = errno != EINTR && errno != EAGAIN && errno != ECONNABORTED;
      continue;
    }
    SslContext tls;
    bool admitted = false, plain = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      plain = tls_ == nullptr;
      if (threads_ < options_.max_connections) {
        admitted = true;
        tls = tls_;
        open_[fd] = absl::Now() + options_.deadline;
        ++threads_;
      }
    }
    if (!admitted) {
      // Over the limit: refused at once (with a 503 where the endpoint speaks plain HTTP).
      if (plain) {
        const std::string busy = Response("503 Service Unavailable", "text/plain", "too many connections\n");
        (void)!::send(fd, busy.data(), busy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      }
      ::close(fd);
      continue;
    }
    std::thread([this, fd, tls] {
      HandleConnection(fd, tls);
      std::lock_guard<std::mutex> lock(mu_);
      open_.erase(fd);
      ::close(fd);  // after the erase: the deadline check never touches a reused descriptor
      if (--threads_ == 0) all_closed_.notify_all();
    }).detach();
  }
}

void HttpExposer::HandleConnection(int fd, SslContext tls) {
  // A scraper that hangs up mid-response must not kill the process with SIGPIPE (OpenSSL writes
  // with write(2)); blocked here, the signal stays pending on this thread and dies with it.
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
  SSL* ssl = nullptr;
  if (tls != nullptr) {
    ssl = SSL_new(tls.get());
    if (ssl == nullptr) return;
    SSL_set_fd(ssl, fd);
  }
  Connection connection(fd, ssl);
  if (!connection.Handshake()) return;
  std::string request;
  char buffer[2048];
  while (request.find("\r\n\r\n") == std::string::npos && request.find("\n\n") == std::string::npos) {
    const ssize_t n = connection.Read(buffer, sizeof(buffer));
    if (n <= 0) return;  // closed, failed, or cut at the deadline
    request.append(buffer, static_cast<size_t>(n));
    if (request.size() > kMaxRequestBytes) {
      connection.WriteAll(Response("431 Request Header Fields Too Large", "text/plain", "request too large\n"));
      return;
    }
  }
  const size_t line_end = request.find_first_of("\r\n");
  const std::string line = request.substr(0, line_end);
  const size_t space1 = line.find(' ');
  const size_t space2 = line.find(' ', space1 + 1);
  if (space1 == std::string::npos) {
    connection.WriteAll(Response("400 Bad Request", "text/plain", "expected an HTTP request line\n"));
    return;
  }
  const std::string method = line.substr(0, space1);
  std::string path = line.substr(space1 + 1, space2 == std::string::npos ? std::string::npos : space2 - space1 - 1);
  if (const size_t query = path.find('?'); query != std::string::npos) path.resize(query);
  if (!options_.bearer_token.empty() && !HasBearerToken(request, options_.bearer_token)) {
    connection.WriteAll(Response("401 Unauthorized", "text/plain",
                                 "expected header 'Authorization: Bearer <token>' with the server's token\n",
                                 "WWW-Authenticate: Bearer\r\n"));
    return;
  }
  if (path != "/metrics") {
    connection.WriteAll(Response("404 Not Found", "text/plain", "only /metrics is served here\n"));
    return;
  }
  if (method != "GET" && method != "HEAD") {
    connection.WriteAll(Response("405 Method Not Allowed", "text/plain", "expected GET /metrics\n"));
    return;
  }
  std::string response = Response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body_());
  if (method == "HEAD") response.resize(response.find("\r\n\r\n") + 4);
  connection.WriteAll(response);
}

}  // namespace tpserve::server
