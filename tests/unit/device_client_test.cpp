// DeviceClient against a fake coordinator written here (a ROUTER and a PUB
// bound on 127.0.0.1 ephemeral ports, speaking the wire API): joining,
// training a round and sending its update, heartbeats during training,
// missed broadcasts, rejoining after a coordinator restart or an
// unknown_device, a plan that does not fit, bad messages, the final model,
// and the stop flag.
#include "device_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "fedsgd/broadcast_codec.h"
#include "fedsgd/model.h"

namespace fedsgd {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr char kModel[] = "softmax:4-3";

Dataset Blobs(std::size_t n) {
  Dataset d;
  d.num_features = 4;
  d.num_classes = 3;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> noise(0.0f, 0.3f);
  for (std::size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % 3);
    for (int f = 0; f < 4; ++f) d.x.push_back((f == c ? 2.0f : 0.0f) + noise(rng));
    d.y.push_back(static_cast<float>(c));
  }
  return d;
}

int PortOf(zmq::socket_t& socket) {
  const std::string endpoint = socket.get(zmq::sockopt::last_endpoint);
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

// Binds, retrying for a moment: a port just released by a closed socket may
// still be held by libzmq's I/O thread.
void Bind(zmq::socket_t& socket, int port) {
  const std::string endpoint =
      "tcp://127.0.0.1:" + (port ? std::to_string(port) : std::string("*"));
  for (int i = 0;; ++i) {
    try {
      socket.bind(endpoint);
      return;
    } catch (const zmq::error_t&) {
      if (i == 100) throw;
      std::this_thread::sleep_for(20ms);
    }
  }
}

// A coordinator reduced to what a daemon sees: it answers Join with a
// welcome for its current state, Heartbeat with an Ack, FetchModel with the
// model, and records Updates (acking them); any of these but Join from a
// device that has not joined it gets Reject{unknown_device}, as from a
// restarted coordinator.
class FakeCoordinator {
 public:
  explicit FakeCoordinator(int router_port = 0, int pub_port = 0)
      : router_(context_, zmq::socket_type::router), pub_(context_, zmq::socket_type::pub) {
    router_.set(zmq::sockopt::linger, 0);
    pub_.set(zmq::sockopt::linger, 0);
    Bind(router_, router_port);
    Bind(pub_, pub_port);
    plan.model = kModel;
    plan.batch = 16;
    plan.local_epochs = 1;
    plan.sgd.lr = 0.1f;
    params = Model::Create(plan.architecture(), 3).params;
  }

  int router_port() { return PortOf(router_); }
  int pub_port() { return PortOf(pub_); }
  std::string endpoint() { return "tcp://127.0.0.1:" + std::to_string(router_port()); }

  // Answers requests until done() is true or the time is up; false then.
  bool ServeUntil(const std::function<bool()>& done, std::chrono::milliseconds limit = 8s) {
    const auto until = Clock::now() + limit;
    while (Clock::now() < until) {
      if (done()) return true;
      ServeOnce(10ms);
    }
    return done();
  }

  void Publish(wire::Message message) { wire::Send(pub_, std::move(message)); }
  // The model as the coordinator sends it: in the plan's broadcast_codec.
  wire::Model CurrentModel() const { return {run_id, version, round, final, params, Weights()}; }
  wire::EncodedTensor Weights() const {
    return wire::EncodeWeights(wire::ParseBroadcastCodec(plan.broadcast_codec), params);
  }

  // The fake's state, as a coordinator would hold it.
  Plan plan;
  std::string run_id = "7";
  std::uint64_t version = 3;
  std::uint64_t round = 4;
  bool final = false;
  int heartbeat_ms = 100;
  std::vector<float> params;
  // Overrides the reply to the next Join / Heartbeat when set.
  std::function<std::vector<zmq::message_t>(const wire::Join&)> on_join;
  std::function<std::optional<wire::Message>(const wire::Heartbeat&)> on_heartbeat;

  // What it received.
  std::vector<wire::Join> joins;
  std::vector<wire::Heartbeat> heartbeats;
  std::vector<wire::Update> updates;
  int fetches = 0;
  int unknown = 0;  // requests refused as unknown_device

 private:
  void ServeOnce(std::chrono::milliseconds timeout) {
    std::vector<zmq::pollitem_t> items = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
    wire::Poll(items, timeout);
    while (auto frames = wire::ReceiveFrames(router_, zmq::recv_flags::dontwait)) {
      zmq::message_t id = std::move(frames->front());
      frames->erase(frames->begin());
      wire::DecodeResult d = wire::Decode(*frames);
      ASSERT_TRUE(d.ok()) << d.error().detail;
      wire::Message& m = d.message();
      if (auto* j = std::get_if<wire::Join>(&m)) {
        joins.push_back(*j);
        known_.insert(j->device);
        if (on_join) {
          auto reply = on_join(*j);
          router_.send(id, zmq::send_flags::sndmore);
          for (std::size_t i = 0; i < reply.size(); ++i) {
            router_.send(reply[i],
                         i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
          }
          continue;
        }
        wire::Send(
            router_,
            wire::Welcome{j->device, run_id, plan.ToJson(), version, round,
                          "tcp://*:" + std::to_string(pub_port()), heartbeat_ms, params, Weights()},
            &id);
      } else if (!Known(m)) {
        ++unknown;
        wire::Send(router_, wire::Reject{wire::RejectReason::kUnknownDevice, "join first"}, &id);
      } else if (auto* h = std::get_if<wire::Heartbeat>(&m)) {
        heartbeats.push_back(*h);
        std::optional<wire::Message> reply = wire::Ack{round, version, ""};
        if (on_heartbeat) reply = on_heartbeat(*h);
        if (reply) wire::Send(router_, std::move(*reply), &id);
      } else if (std::get_if<wire::FetchModel>(&m)) {
        ++fetches;
        wire::Send(router_, CurrentModel(), &id);
      } else if (auto* u = std::get_if<wire::Update>(&m)) {
        updates.push_back(std::move(*u));
        wire::Send(router_, wire::Ack{round, version, "accepted"}, &id);
      }
    }
  }

  bool Known(const wire::Message& m) const {
    return std::visit(
        [&](const auto& r) {
          if constexpr (requires { r.device; }) {
            return known_.count(r.device) > 0;
          } else {
            return false;
          }
        },
        m);
  }

  std::set<std::string> known_;
  zmq::context_t context_;
  zmq::socket_t router_;
  zmq::socket_t pub_;
};

// A DeviceClient running on its own thread, as in the daemon.
class RunningClient {
 public:
  RunningClient(const std::string& endpoint, const Dataset& data, ClientTiming timing = Fast(),
                bool exit_when_done = false, std::string attack = "none") {
    DaemonOptions o;
    o.simulate_attack = std::move(attack);
    o.coordinator = endpoint;
    o.id = "dev0";
    o.threads = 1;
    o.mode = "sync";
    o.exit_when_done = exit_when_done;
    client_ = std::make_unique<DeviceClient>(o, data, log_, timing);
    thread_ = std::thread([this] {
      rc_ = client_->Run(stop_);
      returned_.store(true);
    });
  }
  ~RunningClient() { Stop(); }

  static ClientTiming Fast() {
    ClientTiming t;
    t.backoff_initial = 0.05;
    t.backoff_cap = 0.2;
    t.min_silence = 0;
    t.unfit_retry = 0.3;
    return t;
  }

  // Sets the stop flag and returns how long Run() took to return.
  Clock::duration Stop() {
    const auto t0 = Clock::now();
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    return Clock::now() - t0;
  }
  bool WaitReturned(std::chrono::milliseconds limit) {
    const auto until = Clock::now() + limit;
    while (!returned_.load() && Clock::now() < until) std::this_thread::sleep_for(5ms);
    return returned_.load();
  }
  DeviceClient& client() { return *client_; }
  int rc() const { return rc_; }
  // Only after Stop(): the client's thread writes it.
  std::string log() const { return log_.str(); }

 private:
  std::ostringstream log_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> returned_{false};
  int rc_ = -1;
  std::unique_ptr<DeviceClient> client_;
  std::thread thread_;
};

TEST(DeviceClientTest, JoinsTrainsTheOpenRoundAndSendsItsUpdate) {
  const Dataset data = Blobs(300);
  FakeCoordinator fake;
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
  ASSERT_EQ(fake.joins.size(), 1u);
  EXPECT_EQ(fake.joins[0].device, "dev0");
  EXPECT_EQ(fake.joins[0].samples, 300u);
  EXPECT_EQ(fake.joins[0].threads, 1);
  const wire::Update& u = fake.updates[0];
  EXPECT_EQ(u.device, "dev0");
  EXPECT_EQ(u.round, 4u);
  EXPECT_EQ(u.model_version, 3u);
  // The default plan holds out 10% per class (3 classes of 100) for
  // federated evaluation: the update weighs the samples trained on.
  EXPECT_EQ(u.samples, 270u);
  ASSERT_TRUE(u.evaluation.has_value());
  EXPECT_EQ(u.evaluation->samples, 30u);
  EXPECT_GE(u.evaluation->accuracy, 0.0);
  EXPECT_LE(u.evaluation->accuracy, 1.0);
  EXPECT_GT(u.evaluation->loss, 0.0);
  EXPECT_EQ(u.kind, "delta");
  EXPECT_EQ(u.payload.size(), fake.params.size());
  EXPECT_GT(u.loss, 0);

  // The next round arrives by broadcast, or (slow joiner) through the Ack
  // that shows a newer version, then a fetch.
  fake.version = 4;
  fake.round = 5;
  fake.params[0] += 1.0f;
  const auto until = Clock::now() + 8s;
  while (fake.updates.size() < 2 && Clock::now() < until) {
    fake.Publish(fake.CurrentModel());
    fake.ServeUntil([&] { return fake.updates.size() >= 2; }, 100ms);
  }
  ASSERT_EQ(fake.updates.size(), 2u);
  EXPECT_EQ(fake.updates[1].round, 5u);
  EXPECT_EQ(fake.updates[1].model_version, 4u);
  EXPECT_LT(c.Stop(), 1s);
  EXPECT_EQ(c.rc(), 0);
  EXPECT_EQ(c.client().updates_sent(), 2u);
  EXPECT_NE(c.log().find("dev0: joined run 7 at model version 3 (round 4 open)"), std::string::npos)
      << c.log();
  EXPECT_NE(c.log().find("dev0: round 4: trained 270 samples"), std::string::npos) << c.log();
  EXPECT_EQ(c.log().find("SIMULATED ATTACKER"), std::string::npos) << "honest by default";
}

// Sync mode with one thread is deterministic, so the attacker's update is
// exactly the transform of the honest one.
TEST(DeviceClientTest, SimulatedAttackerSendsTheTransformedUpdateAndSaysSo) {
  const Dataset data = Blobs(120);
  std::vector<float> honest;
  {
    FakeCoordinator fake;
    RunningClient c(fake.endpoint(), data);
    ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
    honest = fake.updates[0].payload;
  }
  FakeCoordinator fake;
  RunningClient c(fake.endpoint(), data, RunningClient::Fast(), false, "scale:-3");
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
  const std::vector<float>& sent = fake.updates[0].payload;
  ASSERT_EQ(sent.size(), honest.size());
  for (std::size_t i = 0; i < sent.size(); ++i) EXPECT_FLOAT_EQ(sent[i], -3.0f * honest[i]) << i;
  c.Stop();
  EXPECT_NE(c.log().find("SIMULATED ATTACKER: --simulate-attack scale:-3"), std::string::npos)
      << c.log();
}

// A label flipper trains on flipped labels but scores the global model on
// its held-out part's true labels: the same evaluation as an honest device
// of the same shard, a different update.
TEST(DeviceClientTest, ALabelFlipperTrainsOnFlippedLabelsAndEvaluatesOnTrueOnes) {
  const Dataset data = Blobs(120);
  auto first_update = [&](const char* attack) {
    FakeCoordinator fake;
    RunningClient c(fake.endpoint(), data, RunningClient::Fast(), false, attack);
    EXPECT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
    c.Stop();
    return fake.updates.empty() ? wire::Update{} : fake.updates[0];
  };
  const wire::Update honest = first_update("none");
  const wire::Update flipper = first_update("label-flip");
  ASSERT_TRUE(honest.evaluation.has_value());
  ASSERT_TRUE(flipper.evaluation.has_value());
  EXPECT_EQ(flipper.samples, honest.samples);
  EXPECT_EQ(flipper.evaluation->samples, honest.evaluation->samples);
  EXPECT_EQ(flipper.evaluation->loss, honest.evaluation->loss);
  EXPECT_NE(flipper.payload, honest.payload);
}

TEST(DeviceClientTest, FedSgdSendsTheGradient) {
  const Dataset data = Blobs(90);
  FakeCoordinator fake;
  fake.plan.algorithm = Algorithm::kFedSgd;
  fake.plan.eval_fraction = 0;  // federated evaluation off: the whole shard, no evaluation
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
  EXPECT_EQ(fake.updates[0].kind, "gradient");
  EXPECT_EQ(fake.updates[0].samples, 90u);
  EXPECT_FALSE(fake.updates[0].evaluation.has_value());
  EXPECT_EQ(fake.updates[0].payload.size(), fake.params.size());
}

TEST(DeviceClientTest, HeartbeatsKeepArrivingWhileItTrainsAndStopEndsItQuickly) {
  const Dataset data = Blobs(3000);
  FakeCoordinator fake;
  fake.plan.model = "mlp:4-64-3";
  fake.plan.local_epochs = 100000;  // trains until stopped
  fake.plan.batch = 8;
  fake.params = Model::Create(fake.plan.architecture(), 3).params;
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] {
    int training = 0;
    for (const auto& h : fake.heartbeats) training += h.state == "training";
    return training >= 6;
  }));
  const wire::Heartbeat& last = fake.heartbeats.back();
  EXPECT_EQ(last.state, "training");
  EXPECT_EQ(last.round, 4u);
  EXPECT_GT(last.samples_per_second, 0);
  EXPECT_GT(last.progress, 0);
  EXPECT_LT(last.progress, 1);
  EXPECT_TRUE(fake.updates.empty());
  EXPECT_LT(c.Stop(), 1s);
  EXPECT_EQ(c.rc(), 0);
}

TEST(DeviceClientTest, RejoinsByItselfWhenTheCoordinatorRestarts) {
  const Dataset data = Blobs(300);
  auto first = std::make_unique<FakeCoordinator>();
  const int router_port = first->router_port(), pub_port = first->pub_port();
  RunningClient c(first->endpoint(), data);
  ASSERT_TRUE(first->ServeUntil([&] { return !first->updates.empty(); }));
  first.reset();  // gone: no more replies

  FakeCoordinator second(router_port, pub_port);
  second.version = 4;  // resumed from its database
  second.round = 5;
  ASSERT_TRUE(second.ServeUntil([&] { return !second.updates.empty(); }));
  EXPECT_EQ(second.joins.size(), 1u);
  EXPECT_EQ(second.updates[0].round, 5u);
  EXPECT_EQ(second.updates[0].model_version, 4u);
  c.Stop();
  EXPECT_EQ(c.client().joins(), 2u);
  // Its DEALER usually reaches the new coordinator by itself and hears
  // unknown_device; if the new one took longer than 3 heartbeats to bind,
  // the silence rule made fresh sockets first. Either way it joined again.
  const std::string log = c.log();
  EXPECT_TRUE(log.find("does not know this device") != std::string::npos ||
              log.find("reconnecting in") != std::string::npos)
      << log;
}

TEST(DeviceClientTest, ReconnectsWithFreshSocketsWhenTheCoordinatorFallsSilent) {
  const Dataset data = Blobs(300);
  FakeCoordinator fake;
  fake.round = 0;
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.heartbeats.empty(); }));
  // Hung: bound but answering nothing for longer than 3 x heartbeat_ms.
  std::this_thread::sleep_for(700ms);
  fake.round = 1;
  fake.version = 0;
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
  // Joins sent on the sockets it gave up are read late, and answered to
  // routing ids that are gone.
  EXPECT_GE(fake.joins.size(), 2u);
  EXPECT_EQ(fake.updates[0].round, 1u);
  c.Stop();
  EXPECT_GE(c.client().reconnects(), 1u);
  EXPECT_NE(c.log().find("dev0: coordinator silent for 0."), std::string::npos) << c.log();
  EXPECT_NE(c.log().find(" s, reconnecting in 0."), std::string::npos) << c.log();
}

TEST(DeviceClientTest, UnknownDeviceMeansJoinAgainAtOnce) {
  const Dataset data = Blobs(60);
  FakeCoordinator fake;
  fake.round = 0;  // nothing to train
  ClientTiming slow = RunningClient::Fast();
  slow.min_silence = 60;  // so only the Reject can cause the second join
  RunningClient c(fake.endpoint(), data, slow);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.heartbeats.empty(); }));
  fake.on_heartbeat = [](const wire::Heartbeat&) -> std::optional<wire::Message> {
    return wire::Reject{wire::RejectReason::kUnknownDevice, "who?"};
  };
  const auto t0 = Clock::now();
  ASSERT_TRUE(fake.ServeUntil([&] { return fake.joins.size() >= 2; }, 2s));
  EXPECT_LT(Clock::now() - t0, 1s);
  c.Stop();
  EXPECT_EQ(c.client().reconnects(), 0u);
}

TEST(DeviceClientTest, ASkippedBroadcastIsFetched) {
  const Dataset data = Blobs(60);
  FakeCoordinator fake;
  fake.round = 0;
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.heartbeats.empty(); }));
  // Version 4 and round 5 were "broadcast" while nobody listened.
  fake.version = 4;
  fake.round = 5;
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
  EXPECT_GE(fake.fetches, 1);
  EXPECT_EQ(fake.updates[0].round, 5u);
  EXPECT_EQ(fake.updates[0].model_version, 4u);
}

TEST(DeviceClientTest, APlanThatDoesNotFitIsLoggedAndAskedForAgainSlowly) {
  const Dataset data = Blobs(60);
  FakeCoordinator fake;
  fake.plan.model = "softmax:9-3";  // the data has 4 features
  fake.params = Model::Create(fake.plan.architecture(), 3).params;
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return fake.joins.size() >= 2; }, 4s));
  EXPECT_TRUE(fake.heartbeats.empty()) << "a device that cannot train should not look online";
  EXPECT_TRUE(fake.updates.empty());
  EXPECT_LT(c.Stop(), 1s);
  const std::string log = c.log();
  EXPECT_NE(log.find("cannot take part in run 7: model softmax:9-3 expects 9 features but this "
                     "device's data has 4"),
            std::string::npos)
      << log;
  // Said once, not at every retry.
  EXPECT_EQ(log.find("cannot take part", log.find("cannot take part") + 1), std::string::npos)
      << log;
}

TEST(DeviceClientTest, BadMessagesAreDroppedNotFatal) {
  const Dataset data = Blobs(60);
  FakeCoordinator fake;
  int bad_welcomes = 0;
  fake.on_join = [&](const wire::Join&) {
    std::vector<zmq::message_t> garbage;
    garbage.emplace_back(std::string("\xff\x00garbage", 9));
    ++bad_welcomes;
    return garbage;
  };
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return bad_welcomes >= 1; }));
  fake.on_join = nullptr;  // the client asks again and gets a real welcome
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.heartbeats.empty(); }));
  // A broadcast of the wrong size, and a non-model broadcast.
  wire::Model wrong = fake.CurrentModel();
  wrong.params.resize(3);
  wrong.round = 9;
  const auto until = Clock::now() + 3s;
  while (c.client().bad_messages() < 3 && Clock::now() < until) {
    fake.Publish(wrong);
    fake.Publish(wire::Ack{1, 1, ""});
    fake.ServeUntil([] { return false; }, 50ms);
  }
  EXPECT_GE(c.client().bad_messages(), 3u);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
  EXPECT_EQ(fake.updates[0].round, 4u);  // not the bad broadcast's round 9
  c.Stop();
  EXPECT_NE(c.log().find("dropped a bad reply from the coordinator"), std::string::npos) << c.log();
  EXPECT_NE(c.log().find("dropped a bad broadcast: wrong_size"), std::string::npos) << c.log();
}

TEST(DeviceClientTest, AFloodOfBadMessagesIsLoggedInAFewLines) {
  const Dataset data = Blobs(60);
  FakeCoordinator fake;
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.heartbeats.empty(); }));
  wire::Model wrong = fake.CurrentModel();
  wrong.params.resize(3);
  const auto until = Clock::now() + 5s;
  while (c.client().bad_messages() < 200 && Clock::now() < until) {
    for (int i = 0; i < 20; ++i) fake.Publish(wrong);
    fake.ServeUntil([] { return false; }, 20ms);
  }
  EXPECT_GE(c.client().bad_messages(), 200u);
  c.Stop();
  const std::string log = c.log();
  std::size_t lines = 0;
  for (auto at = log.find("dropped a bad broadcast"); at != std::string::npos;
       at = log.find("dropped a bad broadcast", at + 1)) {
    ++lines;
  }
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 5u) << "one line per dropped message floods the journal";
}

TEST(DeviceClientTest, ExitsAtTheFinalModelOnlyWhenAsked) {
  const Dataset data = Blobs(60);
  FakeCoordinator fake;
  fake.round = 0;
  fake.version = 10;
  RunningClient stays(fake.endpoint(), data);
  RunningClient exits(fake.endpoint(), data, RunningClient::Fast(), /*exit_when_done=*/true);
  ASSERT_TRUE(fake.ServeUntil([&] { return fake.heartbeats.size() >= 2; }));
  fake.final = true;
  fake.version = 11;  // the Acks show it; a fetch returns the final model
  ASSERT_TRUE(fake.ServeUntil([&] { return exits.WaitReturned(0ms); }));
  EXPECT_EQ(exits.rc(), 0);
  fake.ServeUntil([] { return false; }, 300ms);
  EXPECT_FALSE(stays.WaitReturned(0ms)) << "without --exit-when-done a daemon waits for a new run";
  EXPECT_LT(stays.Stop(), 1s);
  EXPECT_NE(stays.log().find("run 7 finished at model version 11"), std::string::npos)
      << stays.log();
}

// Issue 10: the device compresses its update with the plan's codec. Sync
// mode with one thread is deterministic, so the topk update is exactly the
// largest entries of the fp32 one.
TEST(DeviceClientTest, SendsItsUpdateInThePlansCodec) {
  const Dataset data = Blobs(120);
  std::vector<float> dense;
  {
    FakeCoordinator fake;
    RunningClient c(fake.endpoint(), data);
    ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
    EXPECT_EQ(fake.updates[0].encoded.encoding, wire::TensorEncoding::kFp32);
    dense = fake.updates[0].payload;
  }
  FakeCoordinator fake;
  fake.plan.update_codec = "topk:0.2";  // 3 of softmax:4-3's 15 parameters
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
  const wire::Update& u = fake.updates[0];
  EXPECT_EQ(u.encoded.encoding, wire::TensorEncoding::kTopK);
  ASSERT_EQ(u.payload.size(), dense.size());
  std::size_t sent = 0;
  for (std::size_t i = 0; i < dense.size(); ++i) {
    if (u.payload[i] == 0) continue;
    ++sent;
    EXPECT_EQ(u.payload[i], dense[i]) << i;
  }
  EXPECT_EQ(sent, 3u);
  c.Stop();
  // The count, 3 float32 values and 3 one-byte varints (indices < 15).
  EXPECT_NE(c.log().find("update sent (19 bytes)"), std::string::npos) << c.log();
}

// Issue 10: with the plan's broadcast_codec fp16 the device trains from
// the fp16-rounded model it received and sends its delta against that, so
// its update is exactly the one an fp32 broadcast of the rounded weights
// gives. A Model in another encoding than the plan's is dropped.
TEST(DeviceClientTest, TrainsFromTheFp16ModelItReceived) {
  const Dataset data = Blobs(120);
  std::vector<float> expected;
  {
    FakeCoordinator fake;
    const std::vector<float> exact = fake.params;
    for (float& w : fake.params) w = wire::HalfToFloat(wire::FloatToHalf(w));
    ASSERT_NE(fake.params, exact);  // the rounding is visible
    RunningClient c(fake.endpoint(), data);
    ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
    expected = fake.updates[0].payload;
  }
  FakeCoordinator fake;
  fake.plan.broadcast_codec = "fp16";
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.updates.empty(); }));
  EXPECT_EQ(fake.updates[0].payload, expected);
  EXPECT_EQ(c.client().bad_messages(), 0u);

  // An fp32 Model for a newer round, although the plan says fp16.
  wire::Model fp32 = fake.CurrentModel();
  fp32.encoded = {};
  fp32.model_version = fake.version + 1;
  fp32.round = 9;
  const auto until = Clock::now() + 3s;
  while (c.client().bad_messages() < 1 && Clock::now() < until) {
    fake.Publish(fp32);
    fake.ServeUntil([] { return false; }, 50ms);
  }
  EXPECT_GE(c.client().bad_messages(), 1u);
  c.Stop();
  EXPECT_NE(c.log().find("bad_field: model encoded as fp32, the plan's is fp16"), std::string::npos)
      << c.log();
  for (const wire::Update& u : fake.updates) EXPECT_NE(u.round, 9u);
}

// A Welcome whose weights are not in the broadcast_codec of the plan it
// carries is a plan this device cannot use: it does not train from it.
TEST(DeviceClientTest, RefusesAWelcomeNotInItsPlansBroadcastCodec) {
  const Dataset data = Blobs(60);
  FakeCoordinator fake;
  Plan fp16 = fake.plan;
  fp16.broadcast_codec = "fp16";
  int welcomes = 0;
  fake.on_join = [&](const wire::Join& j) {
    ++welcomes;
    return wire::Encode(wire::Welcome{j.device, fake.run_id, fp16.ToJson(), fake.version,
                                      fake.round, "tcp://*:" + std::to_string(fake.pub_port()),
                                      fake.heartbeat_ms, fake.params});
  };
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return welcomes >= 1; }));
  fake.ServeUntil([] { return false; }, 300ms);
  c.Stop();
  EXPECT_TRUE(fake.updates.empty());
  EXPECT_NE(c.log().find("the welcome's model is encoded as fp32, its plan's broadcast_codec is "
                         "fp16"),
            std::string::npos)
      << c.log();
}

}  // namespace
}  // namespace fedsgd

namespace fedsgd {
namespace {

// Asynchronous plans (FedBuff): a newer model arriving mid-training does not
// cancel the job; its update goes out, and the next job starts at once from
// the newest model, without waiting for another announcement.
TEST(DeviceClientTest, AsyncKeepsTrainingThroughANewVersionAndStartsAgainAtOnce) {
  const Dataset data = Blobs(3000);
  FakeCoordinator fake;
  fake.plan.model = "mlp:4-64-3";
  fake.plan.mode = "async";
  fake.plan.local_epochs = 300;  // a few tenths of a second (a minute under qemu)
  fake.plan.batch = 8;
  fake.params = Model::Create(fake.plan.architecture(), 3).params;
  RunningClient c(fake.endpoint(), data);
  ASSERT_TRUE(fake.ServeUntil([&] { return !fake.joins.empty(); }));
  // Version 4 while the device trains from 3: broadcast until its SUB
  // socket has it (and the heartbeats' Acks tell it too).
  fake.version = 4;
  fake.round = 5;
  fake.params[0] += 1.0f;
  ASSERT_TRUE(fake.ServeUntil(
      [&] {
        if (fake.updates.empty()) fake.Publish(fake.CurrentModel());
        return fake.updates.size() >= 2;
      },
      240s));
  EXPECT_EQ(fake.updates[0].model_version, 3u);
  EXPECT_EQ(fake.updates[0].round, 4u);
  EXPECT_EQ(fake.updates[1].model_version, 4u);
  EXPECT_EQ(fake.updates[1].round, 5u);
  c.Stop();
  EXPECT_EQ(c.log().find("round 4: training cancelled"), std::string::npos) << c.log();
}

}  // namespace
}  // namespace fedsgd
