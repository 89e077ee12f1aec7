// The real coordinator's HTTP API under abuse: 500 connections from 50
// loopback addresses trickling header lines must not stop /healthz and
// /metrics from answering, and the server must close them itself; a second
// coordinator on the same --db (or the same HTTP port) refuses to start.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "process.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::FreePort;
using testing::Process;

class HttpAbuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedsgd_http_abuse_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (HasFailure()) {
      for (const auto& entry : fs::directory_iterator(dir_)) {
        if (entry.path().extension() != ".log") continue;
        std::ifstream in(entry.path());
        std::cerr << "---- " << entry.path().filename() << "\n" << in.rdbuf() << "\n";
      }
    }
    fs::remove_all(dir_);
  }

  std::unique_ptr<Process> Coordinator(const std::string& tag, int http_port) {
    return std::make_unique<Process>(
        std::vector<std::string>{FEDSGD_COORDINATOR_BIN, "--listen",
                                 "tcp://127.0.0.1:" + std::to_string(FreePort()), "--publish",
                                 "tcp://127.0.0.1:" + std::to_string(FreePort()), "--http",
                                 "127.0.0.1:" + std::to_string(http_port), "--db",
                                 (dir_ / "run.db").string(), "--model", "softmax:784-10"},
        (dir_ / (tag + ".out")).string(), (dir_ / (tag + ".log")).string());
  }
  // Polls /healthz until it answers (the coordinator is up), the coordinator
  // exits, or 20 s pass.
  static bool WaitHealthy(int port, Process& coordinator) {
    for (const auto until = Clock::now() + 20s; Clock::now() < until && coordinator.running();) {
      httplib::Client c("127.0.0.1", port);
      c.set_connection_timeout(1, 0);
      if (auto r = c.Get("/healthz"); r && r->status == 200) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  static std::string ProcStatus(pid_t pid, const std::string& key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with(key + ":")) return line.substr(key.size() + 1);
    }
    return "?";
  }

  fs::path dir_;
};

// A connection from 127.0.0.N that sends a request a header line at a time.
int SlowConnection(int port, int n) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7f000000u + static_cast<std::uint32_t>(n));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<std::uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    close(fd);
    return -1;
  }
  fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

// True when the server has closed `fd` (EOF or reset).
bool ClosedByServer(int fd) {
  char buf[512];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

TEST_F(HttpAbuseTest, HealthzAnswersUnder500SlowConnectionsWhichTheServerCloses) {
  rlimit fds{};
  getrlimit(RLIMIT_NOFILE, &fds);
  fds.rlim_cur = fds.rlim_max;
  setrlimit(RLIMIT_NOFILE, &fds);
  const int port = FreePort();
  auto coordinator = Coordinator("coordinator", port);
  ASSERT_TRUE(WaitHealthy(port, *coordinator));

  std::vector<int> slow;
  for (int i = 0; i < 500; ++i) {
    const int fd = SlowConnection(port, 2 + i / 10);  // 10 per address, under the cap of 16
    ASSERT_GE(fd, 0) << "connection " << i;
    slow.push_back(fd);
  }
  std::atomic<bool> trickling{true};
  std::thread trickler([&] {
    const std::string request = "GET /v1/status HTTP/1.1\r\nHost: x\r\n";
    for (std::size_t line = 0; trickling; ++line) {
      const std::string next = line == 0 ? request : "X-Slow-" + std::to_string(line) + ": 1\r\n";
      for (const int fd : slow) send(fd, next.data(), next.size(), MSG_NOSIGNAL);
      std::this_thread::sleep_for(500ms);
    }
  });

  std::vector<double> latencies;
  std::string threads, rss;
  int answered = 0;
  std::this_thread::sleep_for(1s);  // all 500 connected and trickling
  for (int i = 0; i < 10; ++i) {
    const auto t0 = Clock::now();
    httplib::Client c("127.0.0.1", port);
    // Under TSan, starting a thread beside 500 others can take seconds.
    c.set_read_timeout(testing::kSanitized ? 20 : 5, 0);
    auto health = c.Get("/healthz");
    latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    auto metrics = c.Get("/metrics");
    answered += health && health->status == 200 && metrics && metrics->status == 200;
    if (i == 2) {
      threads = ProcStatus(coordinator->pid(), "Threads");
      rss = ProcStatus(coordinator->pid(), "VmRSS");
    }
    std::this_thread::sleep_for(300ms);
  }
  EXPECT_EQ(answered, 10);

  // The server ends each slow request within its 5 s budget; give it 10 s.
  std::size_t closed = 0;
  for (const auto until = Clock::now() + 10s; Clock::now() < until;) {
    closed = static_cast<std::size_t>(std::count_if(slow.begin(), slow.end(), ClosedByServer));
    if (closed == slow.size()) break;
    std::this_thread::sleep_for(200ms);
  }
  trickling = false;
  trickler.join();
  EXPECT_EQ(closed, slow.size()) << "slow connections the server left open";
  for (const int fd : slow) close(fd);

  std::sort(latencies.begin(), latencies.end());
  std::cerr << "figures: /healthz under 500 slow connections: median "
            << latencies[latencies.size() / 2] << " ms, max " << latencies.back()
            << " ms; coordinator threads" << threads << ", VmRSS" << rss << "\n";
  coordinator->Signal(SIGTERM);
  EXPECT_TRUE(coordinator->Wait(20s));
}

TEST_F(HttpAbuseTest, SecondCoordinatorOnTheSameDatabaseOrPortRefusesToStart) {
  const int port = FreePort();
  auto first = Coordinator("first", port);
  ASSERT_TRUE(WaitHealthy(port, *first));
  auto same_db = Coordinator("same_db", FreePort());
  const auto code = same_db->Wait(20s);
  ASSERT_TRUE(code);
  EXPECT_NE(*code, 0);
  const std::string log = same_db->Stderr();
  EXPECT_NE(log.find("is in use by another coordinator (pid " + std::to_string(first->pid())),
            std::string::npos)
      << log;

  // Another database, the same HTTP port.
  auto other = std::make_unique<Process>(
      std::vector<std::string>{FEDSGD_COORDINATOR_BIN, "--listen",
                               "tcp://127.0.0.1:" + std::to_string(FreePort()), "--publish",
                               "tcp://127.0.0.1:" + std::to_string(FreePort()), "--http",
                               "127.0.0.1:" + std::to_string(port), "--db",
                               (dir_ / "other.db").string(), "--model", "softmax:784-10"},
      (dir_ / "same_port.out").string(), (dir_ / "same_port.log").string());
  const auto port_code = other->Wait(20s);
  ASSERT_TRUE(port_code);
  EXPECT_NE(*port_code, 0);
  EXPECT_NE(other->Stderr().find("cannot serve HTTP"), std::string::npos);
  first->Signal(SIGTERM);
  EXPECT_TRUE(first->Wait(20s));
}

}  // namespace
}  // namespace fedsgd
