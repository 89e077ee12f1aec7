// CURVE end to end: the real binaries on loopback with keys made by their
// own keygen subcommands.
//
//   - a fleet over CURVE trains to the end, and a daemon whose key is not
//     listed never joins (the coordinator log says why);
//   - a listed device that sends another device's id is refused with
//     identity_mismatch (a raw DEALER with CURVE keys);
//   - a key removed + SIGHUP: that device's messages, updates included, are
//     refused and it is marked offline;
//   - a plain (non-CURVE) DEALER gets nothing;
//   - 0.0.0.0 without keys is refused, with --insecure it starts (warning);
//   - tcpdump on lo: a keyless round's capture holds the model's float
//     bytes, a CURVE round's does not (skipped when tcpdump cannot capture,
//     i.e. not root).
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "fedsgd/curve_keys.h"
#include "fedsgd/curve_socket.h"
#include "fedsgd/model.h"
#include "fedsgd/wire.h"
#include "process.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::FreePort;
using testing::Process;

constexpr const char* kData = "/usr/share/datasets/fashion-mnist";
constexpr const char* kModel = "softmax:784-10";

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kData))
      GTEST_SKIP() << kData << " is missing (scripts/install-deps.sh installs it)";
    dir_ = fs::temp_directory_path() /
           ("fedsgd_sec_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "authorized");
    listen_ = FreePort();
    publish_ = FreePort();
    http_ = FreePort();
  }
  void TearDown() override {
    if (HasFailure()) {
      for (const auto& entry : fs::directory_iterator(dir_)) {
        if (entry.path().extension() == ".log") {
          std::ifstream in(entry.path());
          std::cerr << "---- " << entry.path().filename() << "\n" << in.rdbuf() << "\n";
        }
      }
    }
    fs::remove_all(dir_);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::string Listen() const { return "tcp://127.0.0.1:" + std::to_string(listen_); }

  // Runs `program keygen --out PREFIX` and returns the pair it wrote.
  curve::KeyPair Keygen(const char* program, const std::string& name) {
    Process p({program, "keygen", "--out", Path(name)}, Path(name + ".keygen.out"),
              Path(name + ".keygen.log"));
    EXPECT_EQ(p.Wait(10s), 0) << p.Stderr();
    return curve::LoadSecretKey(Path(name + ".key_secret"));
  }
  // A device key pair; listed in the authorized directory when `enrol`.
  curve::KeyPair Device(const std::string& id, bool enrol) {
    const curve::KeyPair keys = Keygen(FEDSGD_DAEMON_BIN, id);
    if (enrol) fs::copy_file(Path(id + ".key"), dir_ / "authorized" / (id + ".key"));
    return keys;
  }

  std::unique_ptr<Process> Coordinator(const std::string& tag, std::vector<std::string> extra,
                                       bool curve) {
    std::vector<std::string> args = {FEDSGD_COORDINATOR_BIN,
                                     "--listen",
                                     Listen(),
                                     "--publish",
                                     "tcp://127.0.0.1:" + std::to_string(publish_),
                                     "--http",
                                     "127.0.0.1:" + std::to_string(http_),
                                     "--db",
                                     Path(tag + ".db"),
                                     "--model",
                                     kModel,
                                     "--local-steps",
                                     "20",
                                     "--heartbeat-ms",
                                     "200"};
    if (curve) {
      coordinator_keys_ = Keygen(FEDSGD_COORDINATOR_BIN, "coordinator");
      args.insert(args.end(), {"--curve-key", Path("coordinator.key_secret"), "--authorized-keys",
                               Path("authorized")});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(args, Path(tag + ".out"), Path(tag + ".log"));
  }

  std::unique_ptr<Process> Daemon(const std::string& id, int shard, int shards,
                                  const std::string& key_name) {
    std::vector<std::string> args = {FEDSGD_DAEMON_BIN,
                                     "--coordinator",
                                     Listen(),
                                     "--id",
                                     id,
                                     "--data",
                                     kData,
                                     "--shard",
                                     std::to_string(shard) + "/" + std::to_string(shards),
                                     "--threads",
                                     "1",
                                     "--exit-when-done"};
    if (!key_name.empty()) {
      args.insert(args.end(), {"--key", Path(key_name + ".key_secret"), "--coordinator-key",
                               Path("coordinator.key")});
    }
    return std::make_unique<Process>(args, Path(id + ".out"), Path(id + ".log"));
  }

  // A raw DEALER, CURVE client with `keys` unless null.
  std::unique_ptr<zmq::socket_t> Dealer(const curve::KeyPair* keys) {
    auto s = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
    s->set(zmq::sockopt::linger, 0);
    if (keys) curve::MakeClient(*s, *keys, coordinator_keys_.public_key);
    s->connect(Listen());
    return s;
  }
  // The next message on `s` within `timeout`, or nullopt.
  std::optional<wire::Message> Receive(zmq::socket_t& s, std::chrono::milliseconds timeout) {
    std::vector<zmq::pollitem_t> items = {{s.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items.data(), items.size(), timeout);
    if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
    auto frames = wire::ReceiveFrames(s, zmq::recv_flags::dontwait);
    if (!frames) return std::nullopt;
    wire::DecodeResult r = wire::Decode(*frames);
    if (!r.ok()) return std::nullopt;
    return std::move(r.message());
  }
  static bool IsReject(const std::optional<wire::Message>& m, wire::RejectReason reason) {
    const auto* r = m ? std::get_if<wire::Reject>(&*m) : nullptr;
    return r && r->reason == reason;
  }

  nlohmann::json Status() {
    httplib::Client client("127.0.0.1", http_);
    client.set_connection_timeout(1, 0);
    client.set_read_timeout(2, 0);
    auto res = client.Get("/v1/status");
    if (!res || res->status != 200) return nullptr;
    return nlohmann::json::parse(res->body, nullptr, false);
  }
  static bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (done()) return true;
      std::this_thread::sleep_for(50ms);
    }
    return done();
  }
  std::uint64_t Rejected(const std::string& reason) {
    const nlohmann::json s = Status();
    if (!s.is_object() || !s["rejected_by_reason"].contains(reason)) return 0;
    return s["rejected_by_reason"][reason].get<std::uint64_t>();
  }

  fs::path dir_;
  int listen_ = 0, publish_ = 0, http_ = 0;
  curve::KeyPair coordinator_keys_;
  zmq::context_t context_;
};

TEST_F(SecurityTest, CurveFleetTrainsToTheEndAndAnUnlistedKeyNeverJoins) {
  Device("dev0", true);
  Device("dev1", true);
  Device("stranger", false);
  auto coordinator = Coordinator("coordinator", {"--rounds", "3", "--min-devices", "2"}, true);
  auto d0 = Daemon("dev0", 0, 2, "dev0");
  auto d1 = Daemon("dev1", 1, 2, "dev1");
  auto stranger = Daemon("dev2", 0, 2, "stranger");
  ASSERT_EQ(coordinator->Wait(120s), 0) << coordinator->Stderr();
  const nlohmann::json summary = nlohmann::json::parse(coordinator->Stdout());
  EXPECT_TRUE(summary["done"].get<bool>());
  EXPECT_EQ(summary["round"], 3);
  EXPECT_EQ(d0->Wait(30s), 0);
  EXPECT_EQ(d1->Wait(30s), 0);
  const std::string log = coordinator->Stderr();
  EXPECT_NE(log.find("CURVE on"), std::string::npos);
  EXPECT_EQ(log.find("device dev2 joined"), std::string::npos) << log;
  EXPECT_NE(log.find("unknown key " + curve::LoadPublicKey(Path("stranger.key")).substr(0, 8)),
            std::string::npos)
      << log;
  EXPECT_TRUE(stranger->running());
  EXPECT_EQ(stranger->Stderr().find("joined"), std::string::npos);
  // Refused by ZAP looks like silence: the daemon keeps backing off and says
  // once what to check.
  EXPECT_TRUE(WaitFor(
      [&] { return stranger->Stderr().find("check --key/--coordinator-key") != std::string::npos; },
      30s))
      << stranger->Stderr();
  EXPECT_TRUE(stranger->running());
}

TEST_F(SecurityTest, AnotherDevicesIdIsRefusedAsIdentityMismatch) {
  Device("dev0", true);
  const curve::KeyPair dev1 = Device("dev1", true);
  auto coordinator = Coordinator("coordinator", {"--rounds", "100", "--min-devices", "5"}, true);
  auto dealer = Dealer(&dev1);
  std::optional<wire::Message> reply;
  // Retried: the coordinator may not be bound yet. On a slow machine several
  // of these joins are queued before the first is answered; each is refused.
  std::uint64_t impostor_joins = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        wire::Send(*dealer, wire::Join{"dev0", 1, 100, "test"});
        ++impostor_joins;
        reply = Receive(*dealer, 500ms);
        return reply.has_value();
      },
      30s))
      << coordinator->Stderr();
  EXPECT_TRUE(IsReject(reply, wire::RejectReason::kIdentityMismatch));
  wire::Send(*dealer, wire::Join{"dev1", 1, 100, "test"});
  // The replies to the queued impostor joins come first, all refusals.
  std::uint64_t refusals = 1;
  for (reply = Receive(*dealer, 5000ms); reply && !std::holds_alternative<wire::Welcome>(*reply);
       reply = Receive(*dealer, 5000ms)) {
    EXPECT_TRUE(IsReject(reply, wire::RejectReason::kIdentityMismatch));
    ++refusals;
  }
  ASSERT_TRUE(reply && std::holds_alternative<wire::Welcome>(*reply));
  EXPECT_EQ(refusals, impostor_joins);
  // The model is the initial one: nothing counted from the impostor.
  EXPECT_EQ(std::get<wire::Welcome>(*reply).model_version, 0u);
  EXPECT_TRUE(WaitFor([&] { return Rejected("identity_mismatch") == impostor_joins; }, 10s));
  EXPECT_NE(coordinator->Stderr().find("authenticated as device 'dev1', not 'dev0'"),
            std::string::npos);
}

TEST_F(SecurityTest, RemovedKeyAndSighupStopsTheDevice) {
  const curve::KeyPair dev0 = Device("dev0", true);
  auto coordinator = Coordinator("coordinator", {"--rounds", "100", "--min-devices", "1"}, true);
  auto dealer = Dealer(&dev0);
  std::optional<wire::Message> reply;
  ASSERT_TRUE(WaitFor(
      [&] {
        wire::Send(*dealer, wire::Join{"dev0", 1, 100, "test"});
        reply = Receive(*dealer, 500ms);
        return reply && std::holds_alternative<wire::Welcome>(*reply);
      },
      30s))
      << coordinator->Stderr();
  const wire::Welcome welcome = std::get<wire::Welcome>(*reply);
  ASSERT_EQ(welcome.round, 1u);  // min-devices 1: this join opened round 1
  ASSERT_TRUE(WaitFor([&] { return Status().value("devices_online", 0) == 1; }, 10s));

  fs::remove(dir_ / "authorized" / "dev0.key");
  coordinator->Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return Status().value("devices_online", 1) == 0; }, 10s))
      << coordinator->Stderr();
  EXPECT_NE(coordinator->Stderr().find("reloaded"), std::string::npos);
  EXPECT_NE(coordinator->Stderr().find("dev0: key removed"), std::string::npos);

  // The connection made before the revocation is still open: its update is
  // refused and not counted.
  wire::Update update;
  update.device = "dev0";
  update.round = welcome.round;
  update.model_version = welcome.model_version;
  update.samples = 100;
  update.payload.assign(welcome.params.size(), 0.01f);
  while (Receive(*dealer, 100ms)) {
  }
  wire::Send(*dealer, std::move(update));
  std::optional<wire::Message> answer;
  ASSERT_TRUE(WaitFor(
      [&] {
        answer = Receive(*dealer, 200ms);
        return answer && !std::holds_alternative<wire::Model>(*answer);
      },
      10s));
  EXPECT_TRUE(IsReject(answer, wire::RejectReason::kIdentityMismatch));
  const nlohmann::json s = Status();
  EXPECT_EQ(s.value("updates_accepted", 99), 0);
  EXPECT_EQ(s.value("updates_in_round", 99), 0);
}

TEST_F(SecurityTest, PlainDealerGetsNothingFromACurveCoordinator) {
  Device("dev0", true);
  auto coordinator = Coordinator("coordinator", {"--rounds", "100", "--min-devices", "5"}, true);
  ASSERT_TRUE(WaitFor([&] { return Status().is_object(); }, 30s)) << coordinator->Stderr();
  auto dealer = Dealer(nullptr);
  for (int i = 0; i < 5; ++i) {
    wire::Send(*dealer, wire::Join{"dev0", 1, 100, "test"});
    EXPECT_FALSE(Receive(*dealer, 400ms).has_value());
  }
  EXPECT_EQ(Status().value("devices_total", 99), 0);
}

TEST_F(SecurityTest, NonLoopbackBindNeedsKeysOrInsecure) {
  const std::string any = "tcp://0.0.0.0:" + std::to_string(listen_);
  Process refused({FEDSGD_COORDINATOR_BIN, "--listen", any, "--db", Path("a.db"), "--http",
                   "127.0.0.1:" + std::to_string(http_)},
                  Path("refused.out"), Path("refused.log"));
  EXPECT_EQ(refused.Wait(30s), 1);
  EXPECT_NE(refused.Stderr().find("--curve-key and --authorized-keys"), std::string::npos)
      << refused.Stderr();
  EXPECT_NE(refused.Stderr().find("--insecure"), std::string::npos);
  EXPECT_FALSE(fs::exists(Path("a.db")));

  Process insecure({FEDSGD_COORDINATOR_BIN, "--listen", any, "--db", Path("b.db"), "--http",
                    "127.0.0.1:" + std::to_string(http_), "--insecure"},
                   Path("insecure.out"), Path("insecure.log"));
  ASSERT_TRUE(WaitFor([&] { return Status().is_object(); }, 30s)) << insecure.Stderr();
  EXPECT_NE(insecure.Stderr().find("--insecure: listening on " + any), std::string::npos)
      << insecure.Stderr();
  insecure.Signal(SIGTERM);
  EXPECT_EQ(insecure.Wait(30s), 0);
}

// The bytes of the initial model (the welcome and the first broadcast carry
// it) appear in a capture of loopback traffic without CURVE and not with it.
class CaptureTest : public SecurityTest {
 protected:
  // Captures the fleet's two ports while `run` runs; the capture's bytes, or
  // nullopt when tcpdump cannot capture here.
  std::optional<std::string> Capture(const std::string& tag, const std::function<void()>& run) {
    const std::string file = Path(tag + ".pcap");
    Process tcpdump(
        {"/usr/bin/tcpdump", "-i", "lo", "-U", "-s", "0", "-w", file,
         "tcp port " + std::to_string(listen_) + " or tcp port " + std::to_string(publish_)},
        Path(tag + ".tcpdump.out"), Path(tag + ".tcpdump.log"));
    // tcpdump says "listening on lo" once it captures; it exits at once when
    // it may not.
    if (!WaitFor(
            [&] {
              return tcpdump.Stderr().find("listening on") != std::string::npos ||
                     !tcpdump.running();
            },
            10s) ||
        !tcpdump.running()) {
      skip_reason_ = tcpdump.Stderr();
      return std::nullopt;
    }
    run();
    std::this_thread::sleep_for(500ms);
    tcpdump.Signal(SIGINT);
    tcpdump.Wait(10s);
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // How many of the 64-byte, 4-byte-aligned runs of the initial model's
  // first 4 KiB of weights occur in `capture`.
  static int ModelRunsIn(const std::string& capture) {
    const Model initial = Model::Create(Architecture::Parse(kModel), 1);
    const char* bytes = reinterpret_cast<const char*>(initial.params.data());
    int found = 0;
    for (std::size_t offset = 0; offset + 64 <= 4096; offset += 64) {
      if (capture.find(std::string_view(bytes + offset, 64)) != std::string::npos) ++found;
    }
    return found;
  }
  // One round of a one-device fleet, with or without CURVE.
  void RunOneRound(bool curve) {
    if (curve) Device("dev0", true);
    auto coordinator = Coordinator(curve ? "curve" : "plain",
                                   {"--rounds", "1", "--min-devices", "1", "--insecure"}, curve);
    auto daemon = Daemon("dev0", 0, 4, curve ? "dev0" : "");
    ASSERT_EQ(coordinator->Wait(120s), 0) << coordinator->Stderr();
    daemon->Wait(30s);
  }
  std::string skip_reason_;
};

TEST_F(CaptureTest, CaptureShowsModelBytesOnlyWithoutCurve) {
  const Model initial = Model::Create(Architecture::Parse(kModel), 1);
  ASSERT_NE(std::count(initial.params.begin(), initial.params.begin() + 1024, 0.0f), 1024)
      << "the initial weights must not be zeros, or any capture would match";
  const auto plain = Capture("plain", [&] { RunOneRound(false); });
  if (!plain) GTEST_SKIP() << "tcpdump cannot capture on lo here: " << skip_reason_;
  listen_ = FreePort();
  publish_ = FreePort();
  http_ = FreePort();
  const auto encrypted = Capture("curve", [&] { RunOneRound(true); });
  ASSERT_TRUE(encrypted.has_value()) << skip_reason_;
  // Both captures saw the model go by: a welcome and a broadcast at least.
  EXPECT_GT(plain->size(), initial.params.size() * 4);
  EXPECT_GT(encrypted->size(), initial.params.size() * 4);
  EXPECT_GT(ModelRunsIn(*plain), 0) << "the keyless capture should show the weights";
  EXPECT_EQ(ModelRunsIn(*encrypted), 0) << "the CURVE capture shows model bytes";
}

}  // namespace
}  // namespace fedsgd
