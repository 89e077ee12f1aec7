// Child processes for integration tests: start a real binary with its
// output in files, signal it, wait for it with a deadline. The destructor
// kills what is still running, so a failed test leaves nothing behind.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "free_port.h"

namespace fedsgd::testing {

// Whether this build runs under ASan or TSan: the programs are several times
// slower and their memory is the sanitizer allocator's, so tests widen time
// budgets and skip memory bounds there (never the behaviour they check).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

class Process {
 public:
  Process(std::vector<std::string> argv, const std::string& stdout_path,
          const std::string& stderr_path)
      : stdout_path_(stdout_path), stderr_path_(stderr_path) {
    pid_ = fork();
    if (pid_ == 0) {
      const int out = open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(out, 1);
      dup2(err, 2);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Process() {
    if (running()) {
      kill(pid_, SIGKILL);
      Wait(std::chrono::seconds(5));
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool running() {
    if (exit_code_) return false;
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) Reap(status);
    return !exit_code_;
  }
  void Signal(int sig) { kill(pid_, sig); }
  pid_t pid() const { return pid_; }
  // The exit status (128 + signal when killed), or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (running() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return exit_code_;
  }
  std::string Stdout() const { return Read(stdout_path_); }
  std::string Stderr() const { return Read(stderr_path_); }

 private:
  void Reap(int status) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string stdout_path_, stderr_path_;
};

using fedsgd::FreePort;

}  // namespace fedsgd::testing
