// Wire protocol: every kind round-trips, every malformation is refused with
// the right reason and nothing throws, and frames cross real sockets.
#include "fedsgd/wire.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <thread>

namespace fedsgd::wire {
namespace {

using nlohmann::json;

std::vector<zmq::message_t> Frames(Message m) { return Encode(std::move(m)); }

template <typename T>
T RoundTrip(T in, const Limits& limits = {}) {
  auto frames = Encode(in);
  DecodeResult r = Decode(frames, limits);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().detail);
  return std::get<T>(r.message());
}

zmq::message_t Cbor(const json& j) {
  const auto bytes = json::to_cbor(j);
  return zmq::message_t(bytes.data(), bytes.size());
}

DecodeError Refused(std::vector<zmq::message_t> frames, const Limits& limits = {}) {
  DecodeResult r = Decode(frames, limits);
  EXPECT_FALSE(r.ok());
  return r.ok() ? DecodeError{} : r.error();
}

Update SomeUpdate(std::size_t n = 5) {
  Update u;
  u.device = "dev-0.a_b";
  u.round = 3;
  u.model_version = 2;
  u.samples = 15000;
  u.loss = 0.25;
  u.kind = "delta";
  u.train_seconds = 1.5;
  for (std::size_t i = 0; i < n; ++i) u.payload.push_back(static_cast<float>(i) * 0.5f - 1);
  return u;
}

TEST(WireTest, EveryKindRoundTrips) {
  Join j = RoundTrip(Join{"dev0", 4, 15000, "fedsgd 0.1"});
  EXPECT_EQ(j.device, "dev0");
  EXPECT_EQ(j.threads, 4);
  EXPECT_EQ(j.samples, 15000u);
  EXPECT_EQ(j.software, "fedsgd 0.1");

  Welcome w0{"dev0", "run-1",  json{{"model", "mlp:4-3-2"}, {"lr", 0.5}}, 7, 8, "tcp://h:1",
             250,    {1, 2, 3}};
  Welcome w = RoundTrip(w0);
  EXPECT_EQ(w.plan, w0.plan);
  EXPECT_EQ(w.model_version, 7u);
  EXPECT_EQ(w.round, 8u);
  EXPECT_EQ(w.publish_endpoint, "tcp://h:1");
  EXPECT_EQ(w.heartbeat_ms, 250);
  EXPECT_EQ(w.params, (std::vector<float>{1, 2, 3}));

  Heartbeat h = RoundTrip(Heartbeat{"dev1", "training", 4, 1234.5, 0.75, 0.5});
  EXPECT_EQ(h.state, "training");
  EXPECT_DOUBLE_EQ(h.samples_per_second, 1234.5);
  EXPECT_DOUBLE_EQ(h.progress, 0.5);

  EXPECT_EQ(RoundTrip(FetchModel{"dev2"}).device, "dev2");

  Model m = RoundTrip(Model{"run-1", 9, 10, true, {0.5f, -0.5f}});
  EXPECT_TRUE(m.final);
  EXPECT_EQ(m.round, 10u);
  EXPECT_EQ(m.params, (std::vector<float>{0.5f, -0.5f}));

  const Update u0 = SomeUpdate();
  Update u = RoundTrip(u0, Limits{5});
  EXPECT_EQ(u.payload, u0.payload);
  EXPECT_EQ(u.samples, u0.samples);
  EXPECT_EQ(u.kind, "delta");

  Ack a = RoundTrip(Ack{4, 3, "accepted"});
  EXPECT_EQ(a.round, 4u);
  EXPECT_EQ(a.model_version, 3u);
  Reject r = RoundTrip(Reject{RejectReason::kStaleRound, "round 2 is closed"});
  EXPECT_EQ(r.reason, RejectReason::kStaleRound);
  EXPECT_EQ(r.detail, "round 2 is closed");
}

TEST(WireTest, ReasonNamesAreStableAndParse) {
  EXPECT_EQ(ToString(RejectReason::kNonFinite), "non_finite");
  EXPECT_EQ(ToString(RejectReason::kUnknownDevice), "unknown_device");
  for (int i = 0; i < kRejectReasonCount; ++i) {
    const auto reason = static_cast<RejectReason>(i);
    EXPECT_EQ(ParseRejectReason(ToString(reason)), reason);
  }
  EXPECT_FALSE(ParseRejectReason("nope"));
}

TEST(WireTest, RefusesGarbageAndStructuralErrors) {
  std::vector<zmq::message_t> none;
  EXPECT_EQ(Refused(std::move(none)).reason, RejectReason::kMalformed);

  std::vector<zmq::message_t> garbage;
  garbage.emplace_back(std::string("\xff\x00garbage", 9));
  EXPECT_EQ(Refused(std::move(garbage)).reason, RejectReason::kMalformed);

  std::vector<zmq::message_t> array;
  array.push_back(Cbor(json::array({1, 2})));
  EXPECT_EQ(Refused(std::move(array)).reason, RejectReason::kMalformed);

  std::vector<zmq::message_t> version;
  version.push_back(Cbor({{"v", 2}, {"kind", "fetch_model"}, {"device", "d"}}));
  EXPECT_EQ(Refused(std::move(version)).reason, RejectReason::kBadVersion);

  std::vector<zmq::message_t> kind;
  kind.push_back(Cbor({{"v", 1}, {"kind", "launch_missiles"}}));
  EXPECT_EQ(Refused(std::move(kind)).reason, RejectReason::kUnknownKind);

  std::vector<zmq::message_t> three = Frames(SomeUpdate());
  three.emplace_back(4);
  EXPECT_EQ(Refused(std::move(three)).reason, RejectReason::kMalformed);

  auto missing = Frames(SomeUpdate());
  missing.pop_back();
  EXPECT_EQ(Refused(std::move(missing)).reason, RejectReason::kMalformed);

  auto extra = Frames(FetchModel{"d"});
  extra.emplace_back(8);
  EXPECT_EQ(Refused(std::move(extra)).reason, RejectReason::kMalformed);
}

TEST(WireTest, RefusesBadFields) {
  auto bad = [](json header) {
    header["v"] = 1;
    std::vector<zmq::message_t> f;
    f.push_back(Cbor(header));
    return Refused(std::move(f)).reason;
  };
  EXPECT_EQ(bad({{"kind", "fetch_model"}}), RejectReason::kBadField);
  EXPECT_EQ(bad({{"kind", "fetch_model"}, {"device", 5}}), RejectReason::kBadField);
  EXPECT_EQ(bad({{"kind", "fetch_model"}, {"device", ""}}), RejectReason::kBadField);
  EXPECT_EQ(bad({{"kind", "fetch_model"}, {"device", "has space"}}), RejectReason::kBadField);
  EXPECT_EQ(bad({{"kind", "fetch_model"}, {"device", std::string(65, 'a')}}),
            RejectReason::kBadField);
  EXPECT_EQ(
      bad({{"kind", "join"}, {"device", "d"}, {"threads", -1}, {"samples", 1}, {"software", ""}}),
      RejectReason::kBadField);
  EXPECT_EQ(bad({{"kind", "heartbeat"},
                 {"device", "d"},
                 {"state", "dancing"},
                 {"round", 1},
                 {"samples_per_second", 1.0},
                 {"loss", 1.0},
                 {"progress", 0.0}}),
            RejectReason::kBadField);
  EXPECT_EQ(bad({{"kind", "heartbeat"},
                 {"device", "d"},
                 {"state", "idle"},
                 {"round", 1},
                 {"samples_per_second", "fast"},
                 {"loss", 1.0},
                 {"progress", 0.0}}),
            RejectReason::kBadField);
  EXPECT_EQ(bad({{"kind", "reject"}, {"reason", "because"}, {"detail", ""}}),
            RejectReason::kBadField);

  Update zero = SomeUpdate();
  zero.samples = 0;
  EXPECT_EQ(Refused(Frames(zero)).reason, RejectReason::kBadField);
  Update nan_loss = SomeUpdate();
  nan_loss.loss = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(Refused(Frames(nan_loss)).reason, RejectReason::kBadField);
  Update kind = SomeUpdate();
  kind.kind = "weights";
  EXPECT_EQ(Refused(Frames(kind)).reason, RejectReason::kBadField);
}

TEST(WireTest, RefusesBadTensors) {
  EXPECT_EQ(Refused(Frames(SomeUpdate(5)), Limits{6}).reason, RejectReason::kWrongSize);
  EXPECT_EQ(Refused(Frames(SomeUpdate(7)), Limits{0, 6}).reason, RejectReason::kOversize);

  auto ragged = Frames(SomeUpdate());
  ragged[1] = zmq::message_t(std::string("abcdefg"));
  EXPECT_EQ(Refused(std::move(ragged)).reason, RejectReason::kWrongSize);

  for (float poison :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity()}) {
    Update u = SomeUpdate(1000);
    u.payload[777] = poison;
    const DecodeError e = Refused(Frames(u), Limits{1000});
    EXPECT_EQ(e.reason, RejectReason::kNonFinite);
    EXPECT_NE(e.detail.find("777"), std::string::npos) << e.detail;
  }
}

TEST(WireTest, RandomBytesAndMutatedHeadersNeverThrow) {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 64);
  for (int i = 0; i < 3000; ++i) {
    std::string bytes(static_cast<std::size_t>(len(rng)), '\0');
    for (char& c : bytes) c = static_cast<char>(byte(rng));
    std::vector<zmq::message_t> f;
    f.emplace_back(bytes);
    if (i % 2) f.emplace_back(bytes);
    EXPECT_NO_THROW(Decode(f, Limits{5}));
  }
  const std::vector<std::uint8_t> valid = json::to_cbor(json{{"v", 1},
                                                             {"kind", "update"},
                                                             {"device", "d"},
                                                             {"round", 1},
                                                             {"model_version", 0},
                                                             {"samples", 3},
                                                             {"loss", 0.5},
                                                             {"update_kind", "delta"},
                                                             {"train_seconds", 1.0}});
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::uint8_t> m = valid;
    const int flips = 1 + i % 4;
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = static_cast<std::uint8_t>(byte(rng));
    std::vector<zmq::message_t> f;
    f.emplace_back(m.data(), m.size());
    f.emplace_back(20);
    DecodeResult r;
    EXPECT_NO_THROW(r = Decode(f, Limits{5}));
    accepted += r.ok();
  }
  EXPECT_LT(accepted, 3000);
}

TEST(WireTest, CrossesRouterDealerAndPubSubOverTcp) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router), pub(ctx, zmq::socket_type::pub);
  router.set(zmq::sockopt::linger, 0);
  pub.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  pub.bind("tcp://127.0.0.1:*");
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer), sub(ctx, zmq::socket_type::sub);
  dealer.set(zmq::sockopt::linger, 0);
  sub.set(zmq::sockopt::linger, 0);
  dealer.connect(router.get(zmq::sockopt::last_endpoint));
  sub.connect(pub.get(zmq::sockopt::last_endpoint));
  sub.set(zmq::sockopt::subscribe, "");

  ASSERT_TRUE(Send(dealer, Join{"dev0", 2, 100, "test"}));
  ASSERT_TRUE(Send(dealer, SomeUpdate(1000)));
  for (std::string_view expected : {"join", "update"}) {
    auto frames = ReceiveFrames(router);
    ASSERT_TRUE(frames);
    ASSERT_GE(frames->size(), 2u);
    zmq::message_t id = std::move(frames->front());
    frames->erase(frames->begin());
    DecodeResult r = Decode(*frames, Limits{expected == "update" ? 1000u : 0u});
    ASSERT_TRUE(r.ok()) << r.error().detail;
    EXPECT_EQ(KindName(r.message()), expected);
    ASSERT_TRUE(Send(router, Ack{1, 0, std::string(expected)}, &id));
    auto reply = ReceiveFrames(dealer);
    ASSERT_TRUE(reply);
    DecodeResult ack = Decode(*reply);
    ASSERT_TRUE(ack.ok());
    EXPECT_EQ(std::get<Ack>(ack.message()).detail, expected);
  }

  // PUB drops messages until the subscription has arrived: retry, bounded.
  std::optional<std::vector<zmq::message_t>> got;
  for (int i = 0; i < 100 && !got; ++i) {
    Send(pub, Model{"run", 1, 2, false, std::vector<float>(1000, 0.5f)});
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    got = ReceiveFrames(sub, zmq::recv_flags::dontwait);
  }
  ASSERT_TRUE(got);
  DecodeResult r = Decode(*got, Limits{1000});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<Model>(r.message()).params[999], 0.5f);
}

}  // namespace
}  // namespace fedsgd::wire
