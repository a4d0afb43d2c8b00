// A minimal HTTP/1.x server for the Prometheus scrape endpoint: GET /metrics answers with the
// text a callback returns; anything else gets 404/405. One thread, one request per connection.
//
// Why not prometheus-cpp's Exposer: it runs civetweb, whose worker threads get a fixed ~100 KB
// stack; in a process that also loads libcudart (page-aligned static TLS carved from every
// thread's stack), civetweb's 8 KB printf buffer overflows that stack and the server dies on the
// first scrape. This exposer's thread gets the default stack.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/status.h"

namespace tpserve::server {

class HttpExposer {
 public:
  using BodyFn = std::function<std::string()>;

  HttpExposer() = default;
  ~HttpExposer();  // stops the thread and closes the socket
  HttpExposer(const HttpExposer&) = delete;
  HttpExposer& operator=(const HttpExposer&) = delete;

  // Listens on "host:port" (port 0: any free port) and serves `body` at /metrics.
  absl::Status Start(const std::string& address, BodyFn body);
  int port() const { return port_; }

 private:
  void Serve();
  void HandleConnection(int fd);

  BodyFn body_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace tpserve::server
