// A small HTTP/1.x server for the Prometheus scrape endpoint: GET /metrics answers with the text a
// callback returns; anything else gets 404/405. One request per connection.
//
// Hostile clients cannot hold it: each connection runs on its own thread, at most
// max_connections at once (one more is closed at once, with a 503 when plain HTTP), and each has
// one deadline for the whole exchange (TLS handshake, request, response): at the deadline its
// socket is shut down, so a client trickling a byte at a time is cut off however it paces itself.
// accept() errors (out of descriptors) back off instead of spinning. Optionally the endpoint
// requires the bearer token (401 otherwise) and speaks TLS (HTTPS); the certificate can be
// reloaded while serving.
//
// Why not prometheus-cpp's Exposer: it runs civetweb, whose worker threads get a fixed ~100 KB
// stack; in a process that also loads libcudart (page-aligned static TLS carved from every
// thread's stack), civetweb's 8 KB printf buffer overflows that stack and the server dies on the
// first scrape. These threads get the default stack.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/tls/server_tls.h"

namespace tpserve::server {

struct HttpExposerOptions {
  std::string address;       // "host:port" (port 0: any free port); "127.0.0.1:9090" keeps it local
  std::string bearer_token;  // non-empty: requests need "Authorization: Bearer <token>" (else 401)
  std::string tls_cert_file;  // with tls_key_file: HTTPS
  std::string tls_key_file;
  int max_connections = 16;
  absl::Duration deadline = absl::Seconds(5);  // per connection, from accept to the last byte sent
};

class HttpExposer {
 public:
  using BodyFn = std::function<std::string()>;

  HttpExposer() = default;
  ~HttpExposer();  // stops accepting, cuts open connections, joins every thread
  HttpExposer(const HttpExposer&) = delete;
  HttpExposer& operator=(const HttpExposer&) = delete;

  absl::Status Start(const HttpExposerOptions& options, BodyFn body);
  absl::Status Start(const std::string& address, BodyFn body) {
    HttpExposerOptions options;
    options.address = address;
    return Start(options, std::move(body));
  }
  int port() const { return port_; }
  // Re-reads the TLS certificate and key (HTTPS only); on error the previous pair stays in use.
  absl::Status ReloadTls();

 private:
  void Serve();
  void HandleConnection(int fd, SslContext tls);
  void CutExpiredConnections();

  HttpExposerOptions options_;
  BodyFn body_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;

  std::mutex mu_;  // everything below
  std::condition_variable all_closed_;
  SslContext tls_;  // null: plain HTTP
  std::map<int, absl::Time> open_;  // fd -> deadline, for every connection being handled
  int threads_ = 0;                 // connection threads not yet finished
};

}  // namespace tpserve::server
