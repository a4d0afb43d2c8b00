// The real tpserve binary at start-up: a damaged model repository is one line and exit code 2 (or,
// with --skip_damaged_models, moved aside while the rest is served), a taken port fails to bind,
// --help lists every flag with its default, command-line flags win over the config file even at
// their default value, invalid values are refused, and the token can come from a file or the
// environment (with a warning when it travels without TLS).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "server/core/model_repository.h"
#include "tests/server/server_test_util.h"

#ifndef TPSERVE_PATH
#error "TPSERVE_PATH must name the tpserve binary"
#endif
#ifndef TPSERVE_SOURCE_DIR
#error "TPSERVE_SOURCE_DIR must name the source tree"
#endif

namespace tpserve::testing {
namespace {

namespace fs = std::filesystem;

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// tpserve with `args` (and NAME=VALUE `env`), its stdout and stderr in files of `dir`.
class Tpserve {
 public:
  Tpserve(const std::string& dir, std::vector<std::string> args, std::vector<std::string> env = {}) {
    static int runs = 0;
    const std::string prefix = absl::StrCat(dir, "/tpserve.", runs++);
    out_path_ = prefix + ".out";
    err_path_ = prefix + ".err";
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(out, 1);
      dup2(err, 2);
      for (const std::string& assignment : env) putenv(const_cast<char*>(assignment.c_str()));
      std::vector<char*> argv{const_cast<char*>(TPSERVE_PATH)};
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(TPSERVE_PATH, argv.data());
      _exit(127);
    }
  }
  ~Tpserve() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // The exit code once it ends (128 + signal when killed by one), or -1 after `timeout`.
  int Wait(std::chrono::seconds timeout = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return exit_code_;
  }
  // The gRPC port once it prints "serving on port N"; 0 if it ends or 30 s pass first.
  int ServingPort() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    std::regex serving("serving on port ([0-9]+)");
    while (std::chrono::steady_clock::now() < deadline) {
      std::smatch match;
      const std::string text = out();
      if (std::regex_search(text, match, serving)) return std::stoi(match[1]);
      if (Wait(std::chrono::seconds(0)) != -1) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return 0;
  }
  void Signal(int signal) {
    if (pid_ > 0) kill(pid_, signal);
  }
  std::string out() const { return ReadText(out_path_); }
  std::string err() const { return ReadText(err_path_); }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string out_path_, err_path_;
};

std::vector<std::string> Args(const std::string& model_dir, std::vector<std::string> more = {}) {
  std::vector<std::string> args{"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu",
                                "--model_dir=" + model_dir};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// A repository with models "good" and "bad" (4x0e -> 64 weights each), written by the repository.
void MakeRepository(const std::string& root) {
  server::ModelRepository repo(root);
  ASSERT_TRUE(repo.Init().ok());
  for (const char* name : {"bad", "good"}) {
    std::vector<float> weights(64, 0.5f);
    server::StoredModel model{name, {"4x0e", "4x0e", "4x0e"}, 1, weights, server::Fnv1a64(weights.data(), 256)};
    ASSERT_TRUE(repo.Create(model).ok());
  }
}

void Rewrite(const std::string& path, const std::string& from, const std::string& to) {
  std::string text = ReadText(path);
  ASSERT_NE(text.find(from), std::string::npos) << path << " has no " << from;
  text.replace(text.find(from), from.size(), to);
  std::ofstream(path, std::ios::trunc) << text;
}

struct Damage {
  std::string name;
  std::function<void(const std::string& model_dir)> apply;  // on <root>/bad
  std::string file;                                      // the file the message must name
};

std::vector<Damage> Damages() {
  return {
      {"FlippedByteInWeights",
       [](const std::string& d) {
         std::fstream f(d + "/weights-v1.bin", std::ios::in | std::ios::out | std::ios::binary);
         f.seekp(7);
         f.put('\x55');
       },
       "weights-v1.bin"},
      {"TruncatedWeights", [](const std::string& d) { fs::resize_file(d + "/weights-v1.bin", 100); },
       "weights-v1.bin"},
      {"MissingWeights", [](const std::string& d) { fs::remove(d + "/weights-v1.bin"); }, "weights-v1.bin"},
      {"EmptyConfig", [](const std::string& d) { std::ofstream(d + "/config.json", std::ios::trunc); }, "config.json"},
      {"InvalidConfig",
       [](const std::string& d) { std::ofstream(d + "/config.json", std::ios::trunc) << "{\"name\": \"bad\", "; },
       "config.json"},
      {"WeightNumelOutOfRange",
       [](const std::string& d) { Rewrite(d + "/config.json", "\"weight_numel\": 64", "\"weight_numel\": 4611686018427387904"); },
       "config.json"},
      {"NegativeWeightNumel",
       [](const std::string& d) { Rewrite(d + "/config.json", "\"weight_numel\": 64", "\"weight_numel\": -5"); },
       "config.json"},
      {"WeightsFileOutsideTheModel",
       [](const std::string& d) {
         // A whole, checksummed copy one level up: only the name is wrong.
         fs::copy_file(d + "/weights-v1.bin", d + "/../x");
         Rewrite(d + "/config.json", "\"weights-v1.bin\"", "\"../x\"");
       },
       "config.json"},
      {"IrrepsNotAnIrreps",
       [](const std::string& d) { Rewrite(d + "/config.json", "\"irreps_in1\": \"4x0e\"", "\"irreps_in1\": \"4x0q\""); },
       "config.json"},
      {"StrayEmptyDirectory",
       [](const std::string& d) {
         fs::remove_all(d);
         fs::create_directory(d);
       },
       "config.json"},
  };
}

TEST(StartupTest, DamagedRepository_OneLineNamingTheFileAndExitCode2) {
  for (const Damage& damage : Damages()) {
    SCOPED_TRACE(damage.name);
    TempDir dir;
    const std::string root = dir.path() + "/models";
    MakeRepository(root);
    damage.apply(root + "/bad");
    Tpserve server(dir.path(), Args(root));
    EXPECT_EQ(server.Wait(), 2) << "stderr: " << server.err();
    const std::string err = server.err();
    std::vector<std::string> lines = absl::StrSplit(err, '\n', absl::SkipEmpty());
    ASSERT_EQ(lines.size(), 1u) << err;
    EXPECT_TRUE(absl::StrContains(lines[0], "model 'bad'")) << lines[0];
    EXPECT_TRUE(absl::StrContains(lines[0], damage.file)) << lines[0];
    EXPECT_TRUE(fs::exists(root + "/bad")) << "a damaged model is never removed";
  }
}

TEST(StartupTest, SkipDamagedModels_MovesThemAsideAndServesTheRest) {
  for (const Damage& damage : Damages()) {
    SCOPED_TRACE(damage.name);
    TempDir dir;
    const std::string root = dir.path() + "/models";
    MakeRepository(root);
    damage.apply(root + "/bad");
    Tpserve server(dir.path(), Args(root, {"--skip_damaged_models"}));
    const int port = server.ServingPort();
    ASSERT_NE(port, 0) << server.err();
    EXPECT_TRUE(absl::StrContains(server.out(), "1 models")) << server.out();
    EXPECT_TRUE(absl::StrContains(server.err(), "damaged model 'bad'")) << server.err();
    client::ClientOptions options;
    options.target = absl::StrCat("127.0.0.1:", port);
    auto client = *client::TpClient::Connect(options);
    auto list = client->ListModels();
    ASSERT_TRUE(list.ok()) << list.status();
    ASSERT_EQ(list->size(), 1u);
    EXPECT_EQ((*list)[0].name(), "good");
    EXPECT_FALSE(fs::exists(root + "/bad"));
    int aside = 0;
    for (const auto& entry : fs::directory_iterator(root)) {
      if (absl::StartsWith(entry.path().filename().string(), ".damaged-bad-")) {
        ++aside;
        EXPECT_TRUE(fs::exists(entry.path() / "config.json") || damage.name == "StrayEmptyDirectory")
            << "moved aside whole, not deleted";
      }
    }
    EXPECT_EQ(aside, 1);
  }
}

TEST(StartupTest, ModelDirThatIsARegularFile_ExitCode2NamingIt) {
  TempDir dir;
  const std::string file = dir.path() + "/not-a-directory";
  std::ofstream(file) << "x";
  Tpserve server(dir.path(), Args(file));
  EXPECT_EQ(server.Wait(), 2) << server.err();
  EXPECT_TRUE(absl::StrContains(server.err(), file)) << server.err();
  EXPECT_TRUE(absl::StrContains(server.err(), "not a directory")) << server.err();
}

TEST(StartupTest, SecondServerOnTheSamePort_FailsToBindWithAMessage) {
  TempDir dir;
  Tpserve first(dir.path(), {"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu"});
  const int port = first.ServingPort();
  ASSERT_NE(port, 0) << first.err();
  Tpserve second(dir.path(), {absl::StrCat("--listen=127.0.0.1:", port), "--metrics_address=", "--backend=cpu"});
  EXPECT_EQ(second.Wait(), 1) << "the second server started: " << second.out();
  EXPECT_FALSE(absl::StrContains(second.out(), "serving on port"));
  EXPECT_TRUE(absl::StrContains(second.err(), absl::StrCat("cannot listen on 127.0.0.1:", port))) << second.err();
}

TEST(StartupTest, Help_ListsEveryFlagWithItsDefault) {
  TempDir dir;
  Tpserve help(dir.path(), {"--help"});
  help.Wait();
  const std::string text = help.out() + help.err();
  EXPECT_FALSE(absl::StrContains(text, "No flags matched")) << text;
  EXPECT_TRUE(absl::StrContains(text, "usage: tpserve")) << text;
  // Every flag main.cc declares, read from the source so that a new flag is checked too.
  const std::string source = ReadText(std::string(TPSERVE_SOURCE_DIR) + "/server/main.cc");
  std::regex declared(R"(ABSL_FLAG\(\s*[\w:]+\s*,\s*(\w+)\s*,)");
  int flags = 0;
  for (std::sregex_iterator it(source.begin(), source.end(), declared), end; it != end; ++it, ++flags) {
    const std::string name = (*it)[1];
    const size_t at = text.find("--" + name + " (");
    ASSERT_NE(at, std::string::npos) << "--help does not list --" << name << ":\n" << text;
    const size_t next = text.find("\n    --", at + 1);
    EXPECT_TRUE(absl::StrContains(text.substr(at, next - at), "default:")) << name;
  }
  EXPECT_GE(flags, 30);
}

TEST(StartupTest, CommandLineFlagAtItsDefault_WinsOverTheConfigFile) {
  TempDir dir;
  const std::string config = dir.path() + "/tpserve.json";
  std::ofstream(config) << R"({"non_finite": "pass", "max_batch_size": 17, "reflection": false})";
  Tpserve server(dir.path(), {"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu", "--config", config,
                              "--non_finite", "reject", "--max_batch_size=4096", "--reflection"});
  ASSERT_NE(server.ServingPort(), 0) << server.err();
  const std::string printed = server.out();
  EXPECT_TRUE(absl::StrContains(printed, "non_finite=reject")) << printed;
  EXPECT_TRUE(absl::StrContains(printed, "max_batch_size=4096")) << printed;
  EXPECT_TRUE(absl::StrContains(printed, "reflection=on")) << printed;
  // A key the command line does not name keeps the file's value.
  Tpserve file_only(dir.path(), {"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu", "--config=" + config});
  ASSERT_NE(file_only.ServingPort(), 0) << file_only.err();
  EXPECT_TRUE(absl::StrContains(file_only.out(), "non_finite=pass")) << file_only.out();
  EXPECT_TRUE(absl::StrContains(file_only.out(), "max_batch_size=17")) << file_only.out();
}

TEST(StartupTest, InvalidValues_AreRefusedWithAMessageAndExitCode2) {
  TempDir dir;
  const std::pair<std::string, std::string> cases[] = {
      {"--stream_max_in_flight=0", "stream_max_in_flight"}, {"--max_message_bytes=-1", "max_message_bytes"},
      {"--chunk_elements=-1", "chunk_elements"},           {"--max_streams=0", "max_streams"},
      {"--workers_per_gpu=0", "workers_per_gpu"},           {"--shutdown_grace_seconds=-1", "shutdown_grace_seconds"},
      {"--non_finite=maybe", "non_finite"},                 {"--tls_cert=/x.pem", "tls_key"},
  };
  for (const auto& [flag, key] : cases) {
    SCOPED_TRACE(flag);
    Tpserve server(dir.path(), {"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu", flag});
    EXPECT_EQ(server.Wait(), 2) << server.out();
    EXPECT_TRUE(absl::StrContains(server.err(), key)) << server.err();
    EXPECT_FALSE(absl::StrContains(server.out(), "serving on port"));
  }
}

TEST(StartupTest, TokenFromAFileOrTheEnvironment_WarnsWithoutTls) {
  TempDir dir;
  const std::string token_file = dir.path() + "/token";
  std::ofstream(token_file) << "from-file\n";
  const std::pair<std::vector<std::string>, std::string> setups[] = {
      {{"--auth_token_file=" + token_file}, "from-file"},
      {{}, "from-env"},
  };
  for (const auto& [flags, token] : setups) {
    SCOPED_TRACE(token);
    std::vector<std::string> args{"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu"};
    args.insert(args.end(), flags.begin(), flags.end());
    Tpserve server(dir.path(), args, {"TPSERVE_AUTH_TOKEN=from-env"});
    const int port = server.ServingPort();
    ASSERT_NE(port, 0) << server.err();
    EXPECT_TRUE(absl::StrContains(server.err(), "warning: a bearer token without TLS")) << server.err();
    EXPECT_FALSE(absl::StrContains(server.out(), token)) << "the token is never printed";
    client::ClientOptions options;
    options.target = absl::StrCat("127.0.0.1:", port);
    options.auth_token = token;
    EXPECT_TRUE((*client::TpClient::Connect(options))->ListModels().ok());
    options.auth_token = token == "from-file" ? "from-env" : "from-file";
    EXPECT_EQ((*client::TpClient::Connect(options))->ListModels().status().code(), absl::StatusCode::kUnauthenticated);
  }
}


TEST(StartupTest, Sighup_ReloadsTheCertificate_AndKeepsTheOldOneWhenTheNewIsBroken) {
  TempDir dir;
  const std::string cert = dir.path() + "/tls.pem", key = dir.path() + "/tls.key";
  const std::string cert2 = dir.path() + "/two.pem", key2 = dir.path() + "/two.key";
  ASSERT_TRUE(MakeSelfSignedCertificate(cert, key) && MakeSelfSignedCertificate(cert2, key2));
  const std::string cert1 = dir.path() + "/one.pem";
  fs::copy_file(cert, cert1);
  Tpserve server(dir.path(), {"--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu", "--tls_cert=" + cert,
                              "--tls_key=" + key});
  const int port = server.ServingPort();
  ASSERT_NE(port, 0) << server.err();
  auto trusts = [&](const std::string& ca) {
    client::ClientOptions options;
    options.target = absl::StrCat("localhost:", port);
    options.tls = true;
    options.tls_ca_file = ca;
    options.timeout_seconds = 5;
    return (*client::TpClient::Connect(options))->ListModels().ok();
  };
  EXPECT_TRUE(trusts(cert1));
  fs::copy_file(cert2, cert, fs::copy_options::overwrite_existing);  // the key is still the old one
  server.Signal(SIGHUP);
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    refused = absl::StrContains(server.err(), "certificates not reloaded");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(refused) << server.err();
  EXPECT_TRUE(absl::StrContains(server.err(), "does not belong")) << server.err();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_TRUE(trusts(cert1)) << "the served certificate changed after a refused reload";
  fs::copy_file(key2, key, fs::copy_options::overwrite_existing);
  server.Signal(SIGHUP);
  bool switched = false;
  for (int i = 0; i < 50 && !switched; ++i) {
    switched = trusts(cert2);
    if (!switched) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(switched) << server.err();
  EXPECT_TRUE(absl::StrContains(server.out(), "certificates reloaded")) << server.out();
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.err();
}

}  // namespace
}  // namespace tpserve::testing
