// A tpserve process of a test's own: the real binary on free loopback ports, its output in a log
// file, killed with the test. For tests that need what only a separate process shows (kill -9,
// restarts, RSS, several servers); the rest start the server in-process (server_test_util.h).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace tpserve::testing {

class TpserveProcess {
 public:
  struct Options {
    std::string binary;             // the tpserve to run (tests get it as TPSERVE_PATH)
    std::vector<std::string> args;  // its flags; --listen=127.0.0.1:0 lets the kernel pick the port
    std::string log_path;           // stdout and stderr; one per start, so no earlier port line is read
    std::vector<std::string> env;   // NAME=VALUE set in the child only
    std::chrono::seconds start_timeout{30};
  };
  // Starts the process and waits until it logs "serving on port N" (port() stays 0 when it never
  // does: it died first, or the timeout passed).
  explicit TpserveProcess(Options options);
  ~TpserveProcess();  // Kill9()
  TpserveProcess(const TpserveProcess&) = delete;
  TpserveProcess& operator=(const TpserveProcess&) = delete;

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }  // 0 with /metrics off
  pid_t pid() const { return pid_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string metrics_target() const { return "127.0.0.1:" + std::to_string(metrics_port_); }
  const std::string& log_path() const { return options_.log_path; }

  void Kill9();
  // Sends `signal` (SIGTERM: a graceful shutdown); ExitsWithin then waits for the end.
  void Signal(int signal);
  // True once the process has ended by itself (reaped; died_of_sigkill() and exit_code() tell how).
  bool Exited(bool wait);
  // Waits up to `timeout` for the process to end by itself.
  bool ExitsWithin(std::chrono::milliseconds timeout);
  bool died_of_sigkill() const { return died_of_sigkill_; }
  // Its exit status once it ended by itself (128 + signal when a signal ended it); -1 before.
  int exit_code() const { return exit_code_; }
  bool alive() const;

 private:
  Options options_;
  pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
  bool died_of_sigkill_ = false;
  int exit_code_ = -1;
};

}  // namespace tpserve::testing
