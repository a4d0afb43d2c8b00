#include "tests/support/tpserve_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

namespace tpserve::testing {

TpserveProcess::TpserveProcess(Options options) : options_(std::move(options)) {
  std::vector<std::string> argv_strings = {options_.binary};
  argv_strings.insert(argv_strings.end(), options_.args.begin(), options_.args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    // Dies with the test, even when the test itself crashes before its destructors run.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(options_.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    for (std::string& assignment : options_.env) putenv(assignment.data());
    execv(argv[0], argv.data());
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  const std::regex serving("serving on port ([0-9]+)( \\(metrics port ([0-9]+))?");
  while (std::chrono::steady_clock::now() < deadline && port_ == 0) {
    if (Exited(/*wait=*/false)) return;  // died before serving
    std::ifstream in(options_.log_path);
    std::stringstream text;
    text << in.rdbuf();
    const std::string log = text.str();
    std::smatch match;
    if (std::regex_search(log, match, serving)) {
      port_ = std::stoi(match[1]);
      if (match[3].matched) metrics_port_ = std::stoi(match[3]);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

TpserveProcess::~TpserveProcess() { Kill9(); }

void TpserveProcess::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void TpserveProcess::Signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

bool TpserveProcess::Exited(bool wait) {
  if (pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, wait ? 0 : WNOHANG) != pid_) return false;
  died_of_sigkill_ = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  pid_ = -1;
  return true;
}

bool TpserveProcess::ExitsWithin(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (Exited(false)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

bool TpserveProcess::alive() const { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

}  // namespace tpserve::testing
