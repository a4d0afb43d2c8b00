// LD_PRELOAD library for crash_test: kills the process (SIGKILL, as kill -9 would) at an exact
// point of the model repository's commit protocol, chosen by the environment:
//   TPSERVE_CRASH_AT=<call>:<n>:<when>   call: fsync | rename | unlink (and remove); n: the n-th such call of the
//                                         process (from 1); when: before | after (the call runs first)
// "rename:3:before" dies with a commit's temp file written and fsynced but not yet renamed;
// "rename:3:after" with it renamed but the directory not yet fsynced; "fsync:k:after" once a temp
// file is durable; "unlink:k:before" with the new config in place and the old weights still there.
// Without the variable every call goes straight to libc. Test-only: nothing in tpserve links it.
#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

struct CrashPoint {
  char call[16] = {0};
  long n = 0;
  bool after = false;
};

const CrashPoint& Point() {
  static const CrashPoint point = [] {
    CrashPoint p;
    const char* spec = std::getenv("TPSERVE_CRASH_AT");
    char when[16] = {0};
    if (spec == nullptr || std::sscanf(spec, "%15[a-z]:%ld:%15[a-z]", p.call, &p.n, when) != 3) p.n = 0;
    p.after = std::strcmp(when, "after") == 0;
    return p;
  }();
  return point;
}

std::atomic<long> counts[3];

// Counts the call; true when this one is the chosen point.
bool IsCrashPoint(const char* call, int index) {
  const CrashPoint& point = Point();
  if (point.n <= 0 || std::strcmp(point.call, call) != 0) return false;
  return counts[index].fetch_add(1) + 1 == point.n;
}

[[noreturn]] void Die() {
  ::kill(::getpid(), SIGKILL);
  _exit(137);
}

template <typename Fn>
Fn Next(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int fsync(int fd) {
  static auto real = Next<int (*)(int)>("fsync");
  const bool crash = IsCrashPoint("fsync", 0);
  if (crash && !Point().after) Die();
  const int rc = real(fd);
  if (crash) Die();
  return rc;
}

int rename(const char* from, const char* to) {
  static auto real = Next<int (*)(const char*, const char*)>("rename");
  const bool crash = IsCrashPoint("rename", 1);
  if (crash && !Point().after) Die();
  const int rc = real(from, to);
  if (crash) Die();
  return rc;
}

int unlink(const char* path) {
  static auto real = Next<int (*)(const char*)>("unlink");
  const bool crash = IsCrashPoint("unlink", 2);
  if (crash && !Point().after) Die();
  const int rc = real(path);
  if (crash) Die();
  return rc;
}

// std::filesystem::remove calls remove(3), which reaches unlink inside libc: counted as unlink.
int remove(const char* path) {
  static auto real = Next<int (*)(const char*)>("remove");
  const bool crash = IsCrashPoint("unlink", 2);
  if (crash && !Point().after) Die();
  const int rc = real(path);
  if (crash) Die();
  return rc;
}

}  // extern "C"
