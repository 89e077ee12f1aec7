// CoordinatorServer over real sockets, in-process: a test DEALER and SUB
// speak the wire protocol to a server running on ephemeral ports with a
// temporary database. Two devices finish a two-round run; on the way every
// kind of bad message is sent and must be refused with its reason while the
// model in SQLite stays as it was. Also: HTTP answers, the stop flag, resume.
#include "coordinator_server.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <future>
#include <limits>
#include <random>
#include <sstream>
#include <thread>
#include <zmq_addon.hpp>

#include "fedsgd/error.h"
#include "fedsgd/socket_options.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using wire::RejectReason;

constexpr std::size_t kParams = 15;  // softmax:4-3

class CoordinatorServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fedsgd_server_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    options_.listen = "tcp://127.0.0.1:*";
    options_.publish = "tcp://127.0.0.1:*";
    options_.http = "127.0.0.1:0";
    options_.db = (dir_ / "coordinator.db").string();
    options_.model = "softmax:4-3";
    options_.rounds = 2;
    options_.min_devices = 2;
    options_.min_updates = 1;
    options_.round_timeout = 30;
  }
  void TearDown() override {
    StopServer();
    fs::remove_all(dir_);
  }

  // Starts the server and runs its loop on a thread of its own.
  void StartServer() {
    server_ = std::make_unique<CoordinatorServer>(options_, log_);
    server_->Start();
    stop_ = false;
    result_ = std::async(std::launch::async, [this] { return server_->Run(stop_); });
  }
  // Stops the loop (if it is still running) and returns its summary.
  nlohmann::json StopServer() {
    nlohmann::json summary;
    stop_ = true;
    if (result_.valid()) summary = result_.get();
    server_.reset();
    return summary;
  }
  std::unique_ptr<zmq::socket_t> Dealer() {
    auto s = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
    s->set(zmq::sockopt::linger, 0);
    s->connect(server_->listen_endpoint());
    return s;
  }
  // A SUB socket that has surely subscribed: ZeroMQ gives no signal for it,
  // so wait a little (the slow-joiner problem the daemon meets too).
  std::unique_ptr<zmq::socket_t> Subscriber() {
    auto s = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::sub);
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::subscribe, "");
    s->connect(server_->publish_endpoint());
    std::this_thread::sleep_for(300ms);
    return s;
  }

  // The next message on socket, or nullopt after `timeout`.
  static std::optional<wire::Message> Receive(zmq::socket_t& socket,
                                              std::chrono::milliseconds timeout = 3000ms) {
    std::vector<zmq::pollitem_t> items = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      wire::Poll(items, 50ms);
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      auto frames = wire::ReceiveFrames(socket, zmq::recv_flags::dontwait);
      if (!frames) continue;
      wire::DecodeResult r = wire::Decode(*frames);
      EXPECT_TRUE(r.ok()) << "the coordinator sent a message that does not decode";
      if (r.ok()) return std::move(r.message());
    }
    return std::nullopt;
  }
  static std::optional<wire::Message> Ask(zmq::socket_t& dealer, wire::Message message) {
    EXPECT_TRUE(wire::Send(dealer, std::move(message)));
    return Receive(dealer);
  }
  template <typename T>
  static T Expect(std::optional<wire::Message> m) {
    if (!m) {
      ADD_FAILURE() << "no reply";
      return T{};
    }
    if (!std::holds_alternative<T>(*m)) {
      const auto* reject = std::get_if<wire::Reject>(&*m);
      ADD_FAILURE() << "got " << wire::KindName(*m) << " "
                    << (reject ? std::string(wire::ToString(reject->reason)) + ": " + reject->detail
                               : "");
      return T{};
    }
    return std::get<T>(std::move(*m));
  }
  // The reason of the Reject that answers `frames`, sent raw.
  static RejectReason RejectOf(zmq::socket_t& dealer, std::vector<zmq::message_t> frames) {
    EXPECT_TRUE(zmq::send_multipart(dealer, frames));
    return Expect<wire::Reject>(Receive(dealer)).reason;
  }
  static RejectReason RejectOf(zmq::socket_t& dealer, wire::Message message) {
    return RejectOf(dealer, wire::Encode(std::move(message)));
  }
  // A model that the next SUB message must be.
  static wire::Model NextModel(zmq::socket_t& sub) { return Expect<wire::Model>(Receive(sub)); }

  static wire::Update Update(const std::string& device, std::uint64_t round, std::uint64_t version,
                             float value, std::uint64_t samples) {
    return wire::Update{device,      round,   version, samples,
                        0.5,         "delta", 0.1,     std::vector<float>(kParams, value),
                        std::nullopt};
  }
  // The newest committed round and its weights, read as the HTTP side does.
  std::pair<std::uint64_t, std::vector<float>> Committed() const {
    auto store = CheckpointStore::Open(options_.db, /*read_only=*/true);
    const std::int64_t run = store->LatestRunId();
    const std::uint64_t round = store->LatestRound(run);
    return {round, *store->LoadParams(run, round)};
  }
  // Polls `get` until `ok` holds for the JSON it returns (the status board
  // is republished every 0.25 s).
  template <typename Get, typename Ok>
  static nlohmann::json WaitForJson(Get get, Ok ok) {
    nlohmann::json j;
    for (int i = 0; i < 40; ++i) {
      j = get();
      if (ok(j)) break;
      std::this_thread::sleep_for(50ms);
    }
    return j;
  }

  fs::path dir_;
  CoordinatorOptions options_;
  std::ostringstream log_;  // written by the loop; read only after it stops
  zmq::context_t context_;
  std::unique_ptr<CoordinatorServer> server_;
  std::atomic<bool> stop_{false};
  std::future<nlohmann::json> result_;
};

TEST_F(CoordinatorServerTest, RunsRoundsAndRefusesEveryBadMessage) {
  StartServer();
  EXPECT_EQ(server_->listen_endpoint().rfind("tcp://127.0.0.1:", 0), 0u);
  EXPECT_EQ(server_->listen_endpoint().find('*'), std::string::npos) << "port resolved";
  auto dealer = Dealer();  // dev1's connection: the hostile messages come from here
  auto dealer2 = Dealer();
  auto sub = Subscriber();
  const auto [round0, initial] = Committed();
  ASSERT_EQ(round0, 0u);
  ASSERT_EQ(initial.size(), kParams);

  EXPECT_EQ(RejectOf(*dealer, wire::Heartbeat{"ghost"}), RejectReason::kUnknownDevice);

  auto w1 = Expect<wire::Welcome>(Ask(*dealer, wire::Join{"dev1", 1, 100, "test"}));
  EXPECT_EQ(w1.round, 0u) << "one of two devices: no round yet";
  EXPECT_EQ(w1.model_version, 0u);
  EXPECT_EQ(w1.publish_endpoint, server_->publish_endpoint()) << "the real port, not '*'";
  EXPECT_EQ(w1.params, initial);
  EXPECT_EQ(Plan::FromJson(w1.plan).model, "softmax:4-3");
  auto w2 = Expect<wire::Welcome>(Ask(*dealer2, wire::Join{"dev2", 1, 300, "test"}));
  EXPECT_EQ(w2.round, 1u) << "the second device opens round 1";

  wire::Model announced = NextModel(*sub);
  EXPECT_EQ(announced.round, 1u);
  EXPECT_EQ(announced.model_version, 0u);
  EXPECT_FALSE(announced.final);
  EXPECT_EQ(announced.params, initial);

  auto ack = Expect<wire::Ack>(Ask(*dealer, wire::Heartbeat{"dev1", "training", 1, 10, 0.9, 0.5}));
  EXPECT_EQ(ack.round, 1u);
  EXPECT_EQ(ack.model_version, 0u);
  auto fetched = Expect<wire::Model>(Ask(*dealer, wire::FetchModel{"dev1"}));
  EXPECT_EQ(fetched.round, 1u);
  EXPECT_EQ(fetched.params, initial);

  // Hostile and broken messages while round 1 is open.
  std::vector<zmq::message_t> garbage;
  garbage.emplace_back(std::string("not cbor at all"));
  EXPECT_EQ(RejectOf(*dealer, std::move(garbage)), RejectReason::kMalformed);
  std::vector<zmq::message_t> two_tensors = wire::Encode(Update("dev1", 1, 0, 1, 100));
  two_tensors.emplace_back(std::string(8, '\0'));
  EXPECT_EQ(RejectOf(*dealer, std::move(two_tensors)), RejectReason::kMalformed);
  wire::Update nan = Update("dev1", 1, 0, 1, 100);
  nan.payload[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(RejectOf(*dealer, nan), RejectReason::kNonFinite);
  wire::Update inf = Update("dev1", 1, 0, 1, 100);
  inf.payload[0] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(RejectOf(*dealer, inf), RejectReason::kNonFinite);
  wire::Update short_update = Update("dev1", 1, 0, 1, 100);
  short_update.payload.pop_back();
  EXPECT_EQ(RejectOf(*dealer, short_update), RejectReason::kWrongSize);
  EXPECT_EQ(RejectOf(*dealer, Update("eve", 1, 0, 1, 100)), RejectReason::kUnknownDevice);
  EXPECT_EQ(RejectOf(*dealer, Update("dev1", 1, 7, 1, 100)), RejectReason::kStaleRound);
  EXPECT_EQ(RejectOf(*dealer, Update("dev1", 3, 0, 1, 100)), RejectReason::kRoundClosed);
  EXPECT_EQ(RejectOf(*dealer, wire::Model{"1", 0, 1, false, std::vector<float>(kParams)}),
            RejectReason::kUnknownKind);
  {
    // Larger than ZMQ_MAXMSGSIZE: libzmq drops it and the connection; no
    // reply, and the server keeps serving everyone else.
    auto rogue = Dealer();
    wire::Update huge = Update("dev1", 1, 0, 1, 100);
    huge.payload.assign(kParams + 1'000'000, 1.0f);
    EXPECT_TRUE(wire::Send(*rogue, std::move(huge)));
    EXPECT_FALSE(Receive(*rogue, 300ms).has_value());
  }
  EXPECT_EQ(Committed().first, 0u);

  // dev1: 100 samples of +1; dev2: 300 samples of -1 => mean -0.5.
  EXPECT_EQ(Expect<wire::Ack>(Ask(*dealer, Update("dev1", 1, 0, 1, 100))).detail, "accepted");
  EXPECT_EQ(RejectOf(*dealer, Update("dev1", 1, 0, 50, 100)), RejectReason::kDuplicate);
  EXPECT_EQ(Committed().first, 0u) << "quorum is both devices";
  Expect<wire::Ack>(Ask(*dealer2, Update("dev2", 1, 0, -1, 300)));

  wire::Model v1 = NextModel(*sub);
  EXPECT_EQ(v1.model_version, 1u);
  EXPECT_EQ(v1.round, 2u);
  EXPECT_FALSE(v1.final);
  ASSERT_EQ(v1.params.size(), kParams);
  for (std::size_t i = 0; i < kParams; ++i) EXPECT_FLOAT_EQ(v1.params[i], initial[i] - 0.5f);
  const auto [round1, committed1] = Committed();
  EXPECT_EQ(round1, 1u) << "committed before it was broadcast";
  EXPECT_EQ(committed1, v1.params);

  // Round 2: round-1 leftovers are stale; nothing moves the model.
  EXPECT_EQ(RejectOf(*dealer2, Update("dev2", 1, 0, 9, 300)), RejectReason::kStaleRound);
  EXPECT_EQ(RejectOf(*dealer2, Update("dev2", 2, 0, 9, 300)), RejectReason::kStaleRound);
  EXPECT_EQ(Committed().second, v1.params);

  // HTTP, served from the status board and the database.
  httplib::Client http("127.0.0.1", server_->http_port());
  http.set_read_timeout(5, 0);
  auto healthz = http.Get("/healthz");
  ASSERT_TRUE(healthz);
  EXPECT_EQ(nlohmann::json::parse(healthz->body), nlohmann::json({{"ok", true}}));
  const nlohmann::json status =
      WaitForJson([&] { return nlohmann::json::parse(http.Get("/v1/status")->body); },
                  [](const nlohmann::json& j) { return j.value("updates_rejected", 0) >= 13; });
  EXPECT_EQ(status["round"], 1);
  EXPECT_EQ(status["rounds"], 2);
  EXPECT_EQ(status["model_version"], 1);
  EXPECT_EQ(status["open_round"], 2);
  EXPECT_EQ(status["state"], "training");
  EXPECT_EQ(status["devices_online"], 2);
  EXPECT_EQ(status["devices_total"], 2);
  EXPECT_EQ(status["publish"], server_->publish_endpoint());
  EXPECT_EQ(status["updates_accepted"], 2);
  // ghost, garbage, two tensors, NaN, Inf, short, eve, version, round 3,
  // Model, duplicate, and two stale ones in round 2. (The oversize one never
  // reached the coordinator's code.)
  EXPECT_EQ(status["updates_rejected"], 13);
  EXPECT_TRUE(status["test_accuracy"].is_null()) << "no --eval-data";
  EXPECT_DOUBLE_EQ(status["train_loss"].get<double>(), 0.5);
  const nlohmann::json& last = status["last_round"];
  EXPECT_EQ(last["round"], 1);
  EXPECT_GT(last["bytes_per_update"].get<double>(), kParams * 4.0);
  EXPECT_GE(last["coordinator_seconds"].get<double>(), last["commit_seconds"].get<double>());
  const nlohmann::json devices = nlohmann::json::parse(http.Get("/v1/devices")->body);
  ASSERT_EQ(devices.size(), 2u);
  EXPECT_EQ(devices[0]["id"], "dev1");
  EXPECT_EQ(devices[0]["updates_accepted"], 1);
  // Messages that do not decode count against the connection's device.
  EXPECT_EQ(devices[0]["rejected_by_reason"], nlohmann::json({{"malformed", 2},
                                                              {"non_finite", 2},
                                                              {"wrong_size", 1},
                                                              {"stale_round", 1},
                                                              {"round_closed", 1},
                                                              {"unknown_kind", 1},
                                                              {"duplicate", 1}}));
  EXPECT_EQ(devices[1]["rejected_by_reason"]["stale_round"], 2);
  const nlohmann::json rounds = nlohmann::json::parse(http.Get("/v1/rounds")->body);
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0]["round"], 1);
  EXPECT_EQ(rounds[0]["devices"].size(), 2u);
  auto missing = http.Get("/no/such/thing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(nlohmann::json::parse(missing->body)["status"], 404);

  // The last round: the final model goes out and Run() returns.
  Expect<wire::Ack>(Ask(*dealer, Update("dev1", 2, 1, 1, 100)));
  Expect<wire::Ack>(Ask(*dealer2, Update("dev2", 2, 1, 1, 100)));
  wire::Model final_model = NextModel(*sub);
  EXPECT_TRUE(final_model.final);
  EXPECT_EQ(final_model.model_version, 2u);
  EXPECT_EQ(final_model.round, 0u);
  for (std::size_t i = 0; i < kParams; ++i)
    EXPECT_FLOAT_EQ(final_model.params[i], initial[i] + 0.5f);
  ASSERT_EQ(result_.wait_for(3s), std::future_status::ready);
  const nlohmann::json summary = StopServer();
  EXPECT_TRUE(summary["done"].get<bool>());
  EXPECT_EQ(summary["round"], 2);
  EXPECT_EQ(Committed().first, 2u);
  EXPECT_NE(log_.str().find("round 1/2: "), std::string::npos) << log_.str();
  EXPECT_NE(log_.str().find("round 2/2: "), std::string::npos) << log_.str();
}

TEST_F(CoordinatorServerTest, StopFlagEndsTheLoopPromptly) {
  StartServer();
  std::this_thread::sleep_for(100ms);
  const auto t0 = std::chrono::steady_clock::now();
  stop_ = true;
  ASSERT_EQ(result_.wait_for(1s), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  const nlohmann::json summary = StopServer();
  EXPECT_TRUE(summary["stopped"].get<bool>());
  EXPECT_FALSE(summary["done"].get<bool>());
}

TEST_F(CoordinatorServerTest, ResumesTheRunFromTheDatabase) {
  options_.min_devices = 1;
  options_.rounds = 5;
  StartServer();
  {
    auto dealer = Dealer();
    auto w = Expect<wire::Welcome>(Ask(*dealer, wire::Join{"dev1", 1, 100, "test"}));
    ASSERT_EQ(w.round, 1u);
    Expect<wire::Ack>(Ask(*dealer, Update("dev1", 1, 0, 1, 100)));
    for (int i = 0; i < 40 && Committed().first < 1; ++i) std::this_thread::sleep_for(50ms);
  }
  const std::int64_t run = server_->run_id();
  StopServer();
  const auto [round, params] = Committed();
  ASSERT_EQ(round, 1u);

  StartServer();
  EXPECT_EQ(server_->run_id(), run);
  auto dealer = Dealer();
  auto w = Expect<wire::Welcome>(Ask(*dealer, wire::Join{"dev1", 1, 100, "test"}));
  EXPECT_EQ(w.model_version, 1u);
  EXPECT_EQ(w.round, 2u) << "round numbers continue";
  EXPECT_EQ(w.params, params);
  StopServer();

  options_.model = "softmax:4-2";  // another plan on the same database
  EXPECT_THROW(CoordinatorServer(options_, log_).Start(), Error);
  options_.new_run = true;
  StartServer();
  EXPECT_NE(server_->run_id(), run);
}

// Issue 8, item 2: a finite update of 3e38 per weight claiming 2^64-1
// samples overflowed the float sum, and an all-Inf model was committed and
// resumed for ever. Now the claim is refused at join and at update.
TEST_F(CoordinatorServerTest, TheInfiniteWeightAttackIsRefusedAndTouchesNothing) {
  options_.min_devices = 1;
  StartServer();
  auto honest = Dealer();
  auto evil = Dealer();
  const auto initial = Committed();
  constexpr std::uint64_t kMaxSamples = ~std::uint64_t{0};
  EXPECT_EQ(RejectOf(*evil, wire::Join{"evil", 1, kMaxSamples, "x"}),
            RejectReason::kSamplesExceeded);
  EXPECT_EQ(Expect<wire::Welcome>(Ask(*honest, wire::Join{"dev1", 1, 100, "test"})).round, 1u);
  Expect<wire::Welcome>(Ask(*evil, wire::Join{"evil", 1, 10'000'000, "x"}));
  EXPECT_EQ(RejectOf(*evil, Update("evil", 1, 0, 3e38f, kMaxSamples)),
            RejectReason::kSamplesExceeded);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(Committed(), initial);
  StopServer();
  EXPECT_EQ(Committed(), initial);
}

// Should a finite aggregate still overflow the model, the round is refused
// before the commit: nothing reaches the database, the same round opens
// again, and honest updates commit it.
TEST_F(CoordinatorServerTest, ANonFiniteAggregateRefusesTheRound) {
  options_.min_devices = 1;
  options_.quorum = 0.5;
  options_.server_lr = 2;  // 2 x 3e38 is beyond the float range
  StartServer();
  auto honest = Dealer();
  auto evil = Dealer();
  const auto initial = Committed();
  ASSERT_EQ(Expect<wire::Welcome>(Ask(*honest, wire::Join{"dev1", 1, 100, "test"})).round, 1u);
  Expect<wire::Welcome>(Ask(*evil, wire::Join{"evil", 1, 10'000'000, "x"}));
  // dev1 alone is round 1's participant: this update alone closes it.
  EXPECT_EQ(Expect<wire::Ack>(Ask(*evil, Update("evil", 1, 0, 3e38f, 10'000'000))).detail,
            "accepted");
  httplib::Client http("127.0.0.1", server_->http_port());
  const nlohmann::json status =
      WaitForJson([&] { return nlohmann::json::parse(http.Get("/v1/status")->body); },
                  // The refusal and the reopening are published one after the other.
                  [](const nlohmann::json& j) {
                    return j.value("rounds_refused", 0) == 1 && j.value("open_round", 0) == 1;
                  });
  EXPECT_EQ(status["rounds_refused"], 1);
  EXPECT_EQ(status["round"], 0);
  EXPECT_EQ(status["open_round"], 1) << "the same round opens again";
  EXPECT_EQ(Committed(), initial) << "the database is untouched";
  const std::string metrics = http.Get("/metrics")->body;
  EXPECT_NE(metrics.find("fedsgd_rounds_refused_total 1\n"), std::string::npos) << metrics;

  EXPECT_EQ(Expect<wire::Ack>(Ask(*honest, Update("dev1", 1, 0, 1, 100))).detail, "accepted");
  for (int i = 0; i < 60 && Committed().first < 1; ++i) std::this_thread::sleep_for(50ms);
  const auto [round, params] = Committed();
  ASSERT_EQ(round, 1u);
  for (std::size_t i = 0; i < kParams; ++i) EXPECT_FLOAT_EQ(params[i], initial.second[i] + 2.0f);
  StopServer();
  EXPECT_NE(log_.str().find("round 1 refused"), std::string::npos) << log_.str();
}

TEST_F(CoordinatorServerTest, JoinsBeyondTheCapOrTheDeclaredSamplesAreRefused) {
  options_.max_devices = 2;
  options_.max_samples_per_device = 1000;
  StartServer();
  auto dealer = Dealer();
  Expect<wire::Welcome>(Ask(*dealer, wire::Join{"a", 1, 1000, "test"}));
  EXPECT_EQ(RejectOf(*dealer, wire::Join{"b", 1, 1001, "test"}), RejectReason::kSamplesExceeded);
  Expect<wire::Welcome>(Ask(*dealer, wire::Join{"b", 1, 10, "test"}));
  EXPECT_EQ(RejectOf(*dealer, wire::Join{"c", 1, 10, "test"}), RejectReason::kTooManyDevices);
  Expect<wire::Welcome>(Ask(*dealer, wire::Join{"a", 1, 10, "test"}));  // a rejoin
  httplib::Client http("127.0.0.1", server_->http_port());
  const nlohmann::json status =
      WaitForJson([&] { return nlohmann::json::parse(http.Get("/v1/status")->body); },
                  [](const nlohmann::json& j) { return j.value("updates_rejected", 0) == 2; });
  EXPECT_EQ(status["devices_total"], 2);
  EXPECT_EQ(status["max_devices"], 2);
  EXPECT_EQ(status["rejected_by_reason"],
            nlohmann::json({{"samples_exceeded", 1}, {"too_many_devices", 1}}));
}

TEST_F(CoordinatorServerTest, AJoinFloodIsRateLimitedWithoutSendingTheModel) {
  options_.max_joins_per_second = 3;
  StartServer();
  auto dealer = Dealer();
  const auto t0 = std::chrono::steady_clock::now();
  int welcomes = 0, limited = 0;
  for (int i = 0; i < 30; ++i) {
    auto m = Ask(*dealer, wire::Join{"fake" + std::to_string(i), 1, 10, "x"});
    if (!m) {
      StopServer();
      FAIL() << "no reply to join " << i << "; the log:\n" << log_.str();
    }
    welcomes += std::holds_alternative<wire::Welcome>(*m);
    const auto* r = std::get_if<wire::Reject>(&*m);
    limited += r && r->reason == RejectReason::kRateLimited;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(welcomes, 3);
  EXPECT_LE(welcomes, 3 + static_cast<int>(seconds * 3) + 1);
  EXPECT_EQ(welcomes + limited, 30);
  std::this_thread::sleep_for(700ms);
  Expect<wire::Welcome>(Ask(*dealer, wire::Join{"later", 1, 10, "x"}));
}

TEST_F(CoordinatorServerTest, ModelFetchesAreRateLimitedPerDevice) {
  StartServer();
  auto dealer = Dealer();
  Expect<wire::Welcome>(Ask(*dealer, wire::Join{"dev1", 1, 100, "test"}));
  const auto t0 = std::chrono::steady_clock::now();
  int models = 0, limited = 0;
  for (int i = 0; i < 20; ++i) {
    auto m = Ask(*dealer, wire::FetchModel{"dev1"});
    ASSERT_TRUE(m);
    models += std::holds_alternative<wire::Model>(*m);
    const auto* r = std::get_if<wire::Reject>(&*m);
    limited += r && r->reason == RejectReason::kRateLimited;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(models, 2);
  EXPECT_LE(models, 2 + static_cast<int>(seconds * 2) + 1);
  EXPECT_EQ(models + limited, 20);
}

// A peer that sends requests without reading the replies gets at most the
// ROUTER's high-water mark of them queued; the rest are dropped and counted.
TEST_F(CoordinatorServerTest, RepliesToAPeerThatDoesNotReadAreBounded) {
  StartServer();
  auto dealer = Dealer();
  dealer->set(zmq::sockopt::rcvhwm, 1);
  dealer->set(zmq::sockopt::rcvbuf, 4096);
  // The coordinator reads at most 4 requests ahead of this peer too: its
  // RCVHWM pushes back, so a send may have to wait.
  const auto until = std::chrono::steady_clock::now() + 10s;
  for (int i = 0; i < 2000; ++i) {
    while (!wire::Send(*dealer, wire::Heartbeat{"nobody"})) {
      ASSERT_LT(std::chrono::steady_clock::now(), until);
      std::this_thread::sleep_for(1ms);
    }
  }
  httplib::Client http("127.0.0.1", server_->http_port());
  const nlohmann::json status =
      WaitForJson([&] { return nlohmann::json::parse(http.Get("/v1/status")->body); },
                  [](const nlohmann::json& j) { return j.value("updates_rejected", 0) == 2000; });
  EXPECT_EQ(status["updates_rejected"], 2000);
  EXPECT_GT(status["replies_dropped"], 0);
}

// Issue 8, item 6: ZMQ_MAXMSGSIZE bounds frames, not messages.
TEST_F(CoordinatorServerTest, AFrameBombIsRefusedWithoutKeepingItsFrames) {
  StartServer();
  auto dealer = Dealer();
  Expect<wire::Welcome>(Ask(*dealer, wire::Join{"dev1", 1, 100, "test"}));
  std::vector<zmq::message_t> bomb = wire::Encode(wire::Heartbeat{"dev1"});
  for (int i = 0; i < 149; ++i) bomb.emplace_back(std::string(kParams * 4, 'x'));
  EXPECT_EQ(RejectOf(*dealer, std::move(bomb)), RejectReason::kMalformed);
  Expect<wire::Ack>(Ask(*dealer, wire::Heartbeat{"dev1"}));
  httplib::Client http("127.0.0.1", server_->http_port());
  const nlohmann::json status =
      WaitForJson([&] { return nlohmann::json::parse(http.Get("/v1/status")->body); },
                  [](const nlohmann::json& j) { return j.value("frames_dropped", 0) > 0; });
  EXPECT_EQ(status["frames_dropped"], 148);
  EXPECT_EQ(status["rejected_by_reason"]["malformed"], 1);
}

TEST_F(CoordinatorServerTest, ConnectionsDroppedByLibzmqAreCounted) {
  StartServer();
  {
    auto rogue = Dealer();
    wire::Update huge = Update("dev1", 1, 0, 1, 100);
    huge.payload.assign(kParams + 1'000'000, 1.0f);  // over ZMQ_MAXMSGSIZE
    EXPECT_TRUE(wire::Send(*rogue, std::move(huge)));
    EXPECT_FALSE(Receive(*rogue, 300ms).has_value());
  }
  httplib::Client http("127.0.0.1", server_->http_port());
  const nlohmann::json status =
      WaitForJson([&] { return nlohmann::json::parse(http.Get("/v1/status")->body); },
                  [](const nlohmann::json& j) { return j.value("connections_dropped", 0) > 0; });
  EXPECT_GE(status["connections_dropped"], 1);
  const std::string metrics = http.Get("/metrics")->body;
  EXPECT_NE(metrics.find("fedsgd_connections_dropped_total"), std::string::npos);
}

// Issue 10: the plan's update codec travels in the welcome; an update in
// it is decoded and aggregated, one in any other encoding is refused; a
// resume with another codec is refused unless --new-run.
TEST_F(CoordinatorServerTest, UpdatesMustArriveInThePlansCodec) {
  options_.min_devices = 1;
  options_.rounds = 3;
  options_.update_codec = "int8";
  StartServer();
  {
    auto dealer = Dealer();
    auto w = Expect<wire::Welcome>(Ask(*dealer, wire::Join{"dev1", 1, 100, "test"}));
    EXPECT_EQ(w.plan.value("update_codec", ""), "int8");
    ASSERT_EQ(w.round, 1u);
    // fp32, as before codecs existed: refused.
    EXPECT_EQ(Expect<wire::Reject>(Ask(*dealer, Update("dev1", 1, 0, 1, 100))).reason,
              RejectReason::kBadField);
    wire::Update fp16 = Update("dev1", 1, 0, 1, 100);
    std::mt19937_64 rng(1);
    fp16.encoded = wire::EncodeTensor(wire::UpdateCodec::Parse("fp16"), fp16.payload, rng);
    EXPECT_EQ(Expect<wire::Reject>(Ask(*dealer, fp16)).reason, RejectReason::kBadField);
    wire::Update int8 = Update("dev1", 1, 0, 1, 100);
    int8.encoded = wire::EncodeTensor(wire::UpdateCodec::Parse("int8"), int8.payload, rng);
    const std::size_t int8_bytes = int8.encoded.bytes.size();
    EXPECT_EQ(int8_bytes, kParams + 4);  // one block: one scale
    Expect<wire::Ack>(Ask(*dealer, std::move(int8)));
    for (int i = 0; i < 40 && Committed().first < 1; ++i) std::this_thread::sleep_for(50ms);
    const auto [round, params] = Committed();
    ASSERT_EQ(round, 1u);
    // Decoded to float32 and aggregated: the model moved.
    ASSERT_EQ(params.size(), kParams);
    EXPECT_NE(params, w.params);
  }
  StopServer();
  options_.update_codec = "fp16";
  EXPECT_THROW(CoordinatorServer(options_, log_).Start(), Error);
  options_.new_run = true;
  StartServer();
  auto dealer = Dealer();
  auto w = Expect<wire::Welcome>(Ask(*dealer, wire::Join{"dev1", 1, 100, "test"}));
  EXPECT_EQ(w.plan.value("update_codec", ""), "fp16");
}

// topk:1 sends 8 bytes per parameter, twice the fp32 frame: libzmq's frame
// limit must let it through.
TEST_F(CoordinatorServerTest, ATopKUpdateLargerThanFp32IsReceived) {
  options_.min_devices = 1;
  // 80,002 parameters: topk:1's frame (4 + 5 P bytes: every gap 1) is
  // larger than fp32's 4 P plus the 64 KiB of slack.
  options_.model = "softmax:40000-2";
  options_.update_codec = "topk:1";
  StartServer();
  auto dealer = Dealer();
  auto w = Expect<wire::Welcome>(Ask(*dealer, wire::Join{"dev1", 1, 100, "test"}));
  ASSERT_EQ(w.round, 1u);
  wire::Update u{"dev1", 1, 0, 100, 0.5, "delta", 0.1, {}, std::nullopt};
  std::mt19937_64 rng(1);
  u.encoded = wire::EncodeTensor(wire::UpdateCodec::Parse("topk:1"),
                                 std::vector<float>(w.params.size(), 0.001f), rng);
  EXPECT_EQ(u.encoded.bytes.size(), 4 + 5 * w.params.size());
  EXPECT_GT(static_cast<std::int64_t>(u.encoded.bytes.size()), MaxFrameBytes(w.params.size()));
  Expect<wire::Ack>(Ask(*dealer, std::move(u)));
}

}  // namespace
}  // namespace fedsgd
