// Limits under abuse (issue 8, docs/security.md): the real coordinator and
// three honest daemons train while this test, as a hostile peer with plain
// ZeroMQ DEALERs, floods 2,000 joins with made-up ids, sends hostile
// updates, asks for the model 1,500 times without reading, and sends a
// frame bomb (six messages of 150 maximum-size frames). Honest rounds keep
// committing, /v1/status counts the refusals, and the coordinator's
// resident memory stays under a stated bound.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "fedsgd/model.h"
#include "fedsgd/socket_options.h"
#include "fedsgd/wire.h"
#include "process.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::FreePort;
using testing::kSanitized;
using testing::Process;

constexpr const char* kData = "/usr/share/datasets/fashion-mnist";
constexpr const char* kModel = "softmax:784-10";

// Resident memory of a process in MiB (VmRSS of /proc/PID/status), 0 if gone.
double RssMiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      double kib = 0;
      in >> kib;
      return kib / 1024;
    }
    in.ignore(4096, '\n');
  }
  return 0;
}

class AbuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kData))
      GTEST_SKIP() << kData << " is missing (scripts/install-deps.sh installs it)";
    dir_ = fs::temp_directory_path() / ("fedsgd_abuse_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    listen_ = FreePort();
    publish_ = FreePort();
    http_ = FreePort();
  }
  void TearDown() override {
    if (HasFailure()) {
      for (const auto& entry : fs::directory_iterator(dir_)) {
        if (entry.path().extension() == ".log") {
          std::ifstream in(entry.path());
          std::string text((std::istreambuf_iterator<char>(in)), {});
          if (text.size() > 20000) text = "..." + text.substr(text.size() - 20000);
          std::cerr << "---- " << entry.path().filename() << "\n" << text << "\n";
        }
      }
    }
    fs::remove_all(dir_);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::string Endpoint() const { return "tcp://127.0.0.1:" + std::to_string(listen_); }

  nlohmann::json Status() {
    httplib::Client client("127.0.0.1", http_);
    client.set_connection_timeout(1, 0);
    client.set_read_timeout(2, 0);
    auto res = client.Get("/v1/status");
    if (!res || res->status != 200) return nlohmann::json::object();
    return nlohmann::json::parse(res->body, nullptr, false);
  }
  std::uint64_t Round() { return Status().value("round", std::uint64_t{0}); }

  static bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (done()) return true;
      std::this_thread::sleep_for(50ms);
    }
    return done();
  }

  std::unique_ptr<zmq::socket_t> Dealer() {
    auto s = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
    s->set(zmq::sockopt::linger, 0);
    s->connect(Endpoint());
    return s;
  }
  // Reads and drops whatever has arrived on s; returns how many messages.
  static int Drain(zmq::socket_t& s) {
    int n = 0;
    while (wire::ReceiveFrames(s, zmq::recv_flags::dontwait)) ++n;
    return n;
  }

  fs::path dir_;
  int listen_ = 0, publish_ = 0, http_ = 0;
  zmq::context_t context_;
};

TEST_F(AbuseTest, HonestRoundsContinueAndMemoryStaysBoundedUnderAttack) {
  Process coordinator({FEDSGD_COORDINATOR_BIN,
                       "--listen",
                       Endpoint(),
                       "--publish",
                       "tcp://127.0.0.1:" + std::to_string(publish_),
                       "--http",
                       "127.0.0.1:" + std::to_string(http_),
                       "--db",
                       Path("run.db"),
                       "--model",
                       kModel,
                       "--local-steps",
                       "20",
                       "--batch",
                       "32",
                       "--lr",
                       "0.1",
                       "--heartbeat-ms",
                       "200",
                       "--rounds",
                       "100000",
                       "--min-devices",
                       "3",
                       "--quorum",
                       "0.5",
                       "--min-updates",
                       "2",
                       "--round-timeout",
                       "3"},
                      Path("coordinator.out"), Path("coordinator.log"));
  std::vector<std::unique_ptr<Process>> daemons;
  for (int i = 0; i < 3; ++i) {
    daemons.push_back(std::make_unique<Process>(
        std::vector<std::string>{FEDSGD_DAEMON_BIN, "--coordinator", Endpoint(), "--id",
                                 "dev" + std::to_string(i), "--data", kData, "--shard",
                                 std::to_string(i) + "/3", "--threads", "1"},
        Path("dev" + std::to_string(i) + ".out"), Path("dev" + std::to_string(i) + ".log")));
  }
  ASSERT_TRUE(WaitFor([&] { return Round() >= 3; }, 90s)) << "no honest rounds before the attack";
  const double rss_before = RssMiB(coordinator.pid());
  double rss_peak = rss_before;
  const auto sample = [&] { rss_peak = std::max(rss_peak, RssMiB(coordinator.pid())); };
  const std::uint64_t round_before = Round();
  const std::size_t n = Architecture::Parse(kModel).ParameterCount();

  // 1. A join flood: 2,000 made-up ids from 20 connections, replies read.
  int welcomes = 0, refused = 0;
  {
    std::vector<std::unique_ptr<zmq::socket_t>> flood;
    for (int c = 0; c < 20; ++c) flood.push_back(Dealer());
    for (int i = 0; i < 2000; ++i) {
      wire::Send(*flood[static_cast<std::size_t>(i % 20)],
                 wire::Join{"fake" + std::to_string(i), 1, 100, "x"});
      if (i % 100 == 99) {
        std::this_thread::sleep_for(20ms);
        sample();
      }
    }
    const auto until = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < until) {
      for (auto& s : flood) {
        while (auto frames = wire::ReceiveFrames(*s, zmq::recv_flags::dontwait)) {
          wire::DecodeResult d = wire::Decode(*frames);
          if (d.ok() && std::holds_alternative<wire::Welcome>(d.message())) ++welcomes;
          if (d.ok() && std::holds_alternative<wire::Reject>(d.message())) ++refused;
        }
      }
      std::this_thread::sleep_for(50ms);
      sample();
    }
  }
  const double rss_after_flood = rss_peak;
  EXPECT_LT(welcomes, 400) << "2,000 joins in about a second against 50 joins/s";
  EXPECT_GT(refused, 1000);

  // 2. Hostile updates from a device that did join.
  auto mallory = Dealer();
  ASSERT_TRUE(WaitFor(
      [&] {
        Drain(*mallory);
        wire::Send(*mallory, wire::Join{"mallory", 1, 100, "x"});
        std::this_thread::sleep_for(100ms);
        while (auto frames = wire::ReceiveFrames(*mallory, zmq::recv_flags::dontwait)) {
          wire::DecodeResult d = wire::Decode(*frames);
          if (d.ok() && std::holds_alternative<wire::Welcome>(d.message())) return true;
        }
        return false;
      },
      10s));
  // A join declaring more samples than --max-samples-per-device allows.
  {
    auto greedy = Dealer();
    wire::Send(*greedy, wire::Join{"greedy", 1, ~std::uint64_t{0}, "x"});
    std::this_thread::sleep_for(200ms);
  }
  const nlohmann::json open = Status();
  const std::uint64_t round = open.value("open_round", std::uint64_t{0});
  const std::uint64_t version = open.value("model_version", std::uint64_t{0});
  wire::Send(*mallory, wire::Update{"mallory", round, version, ~std::uint64_t{0}, 0.5, "delta", 1,
                                    std::vector<float>(n, 3e38f), std::nullopt});
  wire::Send(*mallory, wire::Update{"mallory", round, version, 100, 0.5, "delta", 1,
                                    std::vector<float>(n / 2, 1.0f), std::nullopt});
  // 3. 1,500 model fetches, never read.
  for (int i = 0; i < 1500; ++i) {
    wire::Send(*mallory, wire::FetchModel{"mallory"});
    if (i % 100 == 0) sample();
  }
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(50ms);
    sample();
  }
  const double rss_after_fetches = rss_peak;
  // 4. A frame bomb: six messages of 150 frames, each from its own
  //    connection, each frame as large as a legal update's tensor and
  //    header together (under ZMQ_MAXMSGSIZE: libzmq lets them through).
  const std::string max_frame(n * sizeof(float) + 65536, 'x');
  ASSERT_LE(static_cast<std::int64_t>(max_frame.size()), MaxFrameBytes(n));
  {
    std::vector<std::unique_ptr<zmq::socket_t>> bombers;
    for (int b = 0; b < 6; ++b) {
      bombers.push_back(Dealer());
      std::vector<zmq::message_t> bomb = wire::Encode(wire::Heartbeat{"mallory"});
      for (int f = 0; f < 149; ++f) bomb.emplace_back(max_frame.data(), max_frame.size());
      for (std::size_t f = 0; f < bomb.size(); ++f) {
        bombers.back()->send(
            bomb[f], f + 1 < bomb.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    }
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < until) {
      sample();
      std::this_thread::sleep_for(50ms);
    }
  }

  // Honest rounds go on, the refusals are counted, memory stayed bounded.
  EXPECT_TRUE(WaitFor([&] { return Round() >= round_before + 3; }, 60s))
      << "honest rounds stalled at " << Round();
  sample();
  ASSERT_TRUE(coordinator.running()) << coordinator.Stderr();
  const nlohmann::json status = Status();
  const nlohmann::json& reasons = status["rejected_by_reason"];
  EXPECT_GT(reasons.value("rate_limited", 0), 1000) << status.dump();
  EXPECT_GE(reasons.value("samples_exceeded", 0), 1) << status.dump();
  EXPECT_GE(reasons.value("wrong_size", 0), 1) << status.dump();
  EXPECT_GE(reasons.value("malformed", 0), 6) << status.dump();
  EXPECT_GE(status.value("frames_dropped", 0), 6 * 148) << status.dump();
  EXPECT_LE(status.value("devices_total", 0), 3 + 1 + welcomes);
  // Measured (Release, 2 cores): 15.5 MiB before the attack; peaks of 17-18
  // MiB after the join flood, 19 MiB after the fetches, 65-86 MiB during the
  // frame bomb (libzmq holds each connection's whole message before the
  // first frame can be read: 6 x 150 x 97 KB are in flight at once), and
  // 19-23 MiB at the end. The coordinator before these limits: 26 MiB after
  // the flood, 33 MiB after the fetches. Bounds: twice the measured growth.
  // Under a sanitizer the figures are its allocator's, not ours (ASan keeps
  // up to 256 MiB of freed blocks in quarantine and pads every block: 85 MiB
  // of growth after the fetches, 250 MiB after the bomb in CI), so there they
  // are printed, not checked; the uninstrumented stage checks them.
  std::cerr << "coordinator VmRSS: " << rss_before << " MiB before, peak " << rss_after_flood
            << " MiB after the join flood, " << rss_after_fetches << " MiB after the fetches, "
            << rss_peak << " MiB after the frame bomb, " << RssMiB(coordinator.pid())
            << " MiB at the end\n";
  if (!kSanitized) {
    EXPECT_LT(rss_after_fetches - rss_before, 8) << "the join flood and fetches";
    EXPECT_LT(rss_peak - rss_before, 110) << "the frame bomb";
  }
  // The silent fake devices are forgotten (3 heartbeat timeouts of 3 s).
  EXPECT_TRUE(WaitFor([&] { return Status().value("devices_total", 0) <= 4; }, 20s))
      << Status().dump();
  EXPECT_GT(Status().value("devices_forgotten", 0), 0);
}

// Issue 8, item 5: 1,049 idle TCP connections (no ZMTP handshake) made new
// joins go unanswered with the default 1,024 descriptors. With the limit
// raised, joins are answered, and ZMQ_HANDSHAKE_IVL (10 s) closes the idle
// connections.
TEST_F(AbuseTest, IdleConnectionsNeitherBlockJoinsNorStay) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_max < 4096) GTEST_SKIP() << "the hard RLIMIT_NOFILE is below 4096";
  limit.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);  // inherited by the coordinator
  Process coordinator({FEDSGD_COORDINATOR_BIN, "--listen", Endpoint(), "--publish",
                       "tcp://127.0.0.1:" + std::to_string(publish_), "--http",
                       "127.0.0.1:" + std::to_string(http_), "--db", Path("run.db"), "--model",
                       kModel, "--rounds", "10"},
                      Path("coordinator.out"), Path("coordinator.log"));
  ASSERT_TRUE(WaitFor([&] { return Status().contains("round"); }, 10s));
  std::vector<int> idle;
  for (int i = 0; i < 1049; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(listen_));
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    idle.push_back(fd);
  }
  auto dealer = Dealer();
  ASSERT_TRUE(wire::Send(*dealer, wire::Join{"late", 1, 100, "x"}));
  std::vector<zmq::pollitem_t> items = {{dealer->handle(), 0, ZMQ_POLLIN, 0}};
  wire::Poll(items, 5000ms);
  auto reply = wire::ReceiveFrames(*dealer, zmq::recv_flags::dontwait);
  ASSERT_TRUE(reply) << "a join went unanswered beside 1,049 idle connections";
  wire::DecodeResult d = wire::Decode(*reply);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(std::holds_alternative<wire::Welcome>(d.message()));
  // Closed by the coordinator within the handshake interval (10 s).
  std::size_t closed = 0;
  WaitFor(
      [&] {
        closed = 0;
        for (const int fd : idle) {
          char buf[256];
          ssize_t n = 0;
          while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
          }
          closed += n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        }
        return closed == idle.size();
      },
      20s);
  EXPECT_EQ(closed, idle.size());
  for (const int fd : idle) close(fd);
  EXPECT_TRUE(coordinator.running());
}

}  // namespace
}  // namespace fedsgd
