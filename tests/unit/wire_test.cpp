// Wire protocol: every kind round-trips (the tensor without a copy), every
// malformation is refused with the right reason, hostile and random bytes
// never throw or crash, and frames cross real sockets.
#include "fedsgd/wire.h"

#include <gtest/gtest.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

namespace fedsgd::wire {
namespace {

using nlohmann::json;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

template <typename T>
T RoundTrip(T in, const Limits& limits = {}) {
  auto frames = Encode(std::move(in));
  DecodeResult r = Decode(frames, limits);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().detail);
  if (!r.ok()) return T{};
  EXPECT_TRUE(std::holds_alternative<T>(r.message()));
  return std::get<T>(r.message());
}

zmq::message_t Bytes(const std::vector<std::uint8_t>& b) {
  return zmq::message_t(b.data(), b.size());
}
zmq::message_t Cbor(const json& j) { return Bytes(json::to_cbor(j)); }

std::vector<zmq::message_t> HeaderOnly(zmq::message_t header) {
  std::vector<zmq::message_t> f;
  f.push_back(std::move(header));
  return f;
}

DecodeError Refused(std::vector<zmq::message_t> frames, const Limits& limits = {}) {
  DecodeResult r = Decode(frames, limits);
  EXPECT_FALSE(r.ok()) << KindName(r.ok() ? r.message() : Message{});
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

// One valid message of every kind, for the tests that break them.
std::vector<Message> OneOfEach() {
  return {Join{"dev0", 4, 15000, "fedsgd 0.1"},
          Welcome{"dev0", "7", json{{"model", "mlp:4-3-2"}, {"lr", 0.5}}, 7, 8, "tcp://h:1", 250,
                  std::vector<float>(5, 0.25f)},
          Heartbeat{"dev1", "training", 4, 1234.5, 0.75, 0.5},
          FetchModel{"dev2"},
          Model{"7", 9, 10, false, std::vector<float>(5, -1.0f)},
          SomeUpdate(),
          Ack{4, 3, "accepted"},
          Reject{RejectReason::kStaleRound, "round 2 is closed"}};
}

// ---------------------------------------------------------------------------

TEST(WireRoundTripTest, EveryKindRoundTrips) {
  Join j = RoundTrip(Join{"dev0", 4, 15000, "fedsgd 0.1"});
  EXPECT_EQ(j.device, "dev0");
  EXPECT_EQ(j.threads, 4);
  EXPECT_EQ(j.samples, 15000u);
  EXPECT_EQ(j.software, "fedsgd 0.1");

  const json plan{{"model", "mlp:4-3-2"}, {"lr", 0.5}, {"nested", {{"a", {1, 2}}}}};
  Welcome w = RoundTrip(Welcome{"dev0", "run-1", plan, 7, 8, "tcp://h:1", 250, {1, 2, 3}});
  EXPECT_EQ(w.device, "dev0");
  EXPECT_EQ(w.run_id, "run-1");
  EXPECT_EQ(w.plan, plan);
  EXPECT_EQ(w.model_version, 7u);
  EXPECT_EQ(w.round, 8u);
  EXPECT_EQ(w.publish_endpoint, "tcp://h:1");
  EXPECT_EQ(w.heartbeat_ms, 250);
  EXPECT_EQ(w.params, (std::vector<float>{1, 2, 3}));

  Heartbeat h = RoundTrip(Heartbeat{"dev1", "training", 4, 1234.5, 0.75, 0.5});
  EXPECT_EQ(h.device, "dev1");
  EXPECT_EQ(h.state, "training");
  EXPECT_EQ(h.round, 4u);
  EXPECT_DOUBLE_EQ(h.samples_per_second, 1234.5);
  EXPECT_DOUBLE_EQ(h.loss, 0.75);
  EXPECT_DOUBLE_EQ(h.progress, 0.5);

  EXPECT_EQ(RoundTrip(FetchModel{"dev2"}).device, "dev2");

  Model m = RoundTrip(Model{"run-1", 9, 10, true, {0.5f, -0.5f}});
  EXPECT_EQ(m.run_id, "run-1");
  EXPECT_EQ(m.model_version, 9u);
  EXPECT_EQ(m.round, 10u);
  EXPECT_TRUE(m.final);
  EXPECT_EQ(m.params, (std::vector<float>{0.5f, -0.5f}));

  const Update u0 = SomeUpdate();
  Update u = RoundTrip(u0, Limits{5});
  EXPECT_EQ(u.device, u0.device);
  EXPECT_EQ(u.round, 3u);
  EXPECT_EQ(u.model_version, 2u);
  EXPECT_EQ(u.samples, 15000u);
  EXPECT_DOUBLE_EQ(u.loss, 0.25);
  EXPECT_EQ(u.kind, "delta");
  EXPECT_DOUBLE_EQ(u.train_seconds, 1.5);
  EXPECT_EQ(u.payload, u0.payload);
  Update g = SomeUpdate();
  g.kind = "gradient";
  EXPECT_EQ(RoundTrip(g).kind, "gradient");

  Ack a = RoundTrip(Ack{4, 3, "accepted"});
  EXPECT_EQ(a.round, 4u);
  EXPECT_EQ(a.model_version, 3u);
  EXPECT_EQ(a.detail, "accepted");
  Reject r = RoundTrip(Reject{RejectReason::kStaleRound, "round 2 is closed"});
  EXPECT_EQ(r.reason, RejectReason::kStaleRound);
  EXPECT_EQ(r.detail, "round 2 is closed");
}

TEST(WireRoundTripTest, KindNamesMatchTheWire) {
  const std::vector<std::string_view> names = {"join",  "welcome", "heartbeat", "fetch_model",
                                               "model", "update",  "ack",       "reject"};
  const std::vector<Message> messages = OneOfEach();
  ASSERT_EQ(messages.size(), names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(KindName(messages[i]), names[i]);
    auto frames = Encode(messages[i]);
    const auto* b = static_cast<const std::uint8_t*>(frames[0].data());
    EXPECT_EQ(json::from_cbor(b, b + frames[0].size())["kind"].get<std::string>(), names[i]);
  }
}

TEST(WireRoundTripTest, TensorIsSentWithoutACopyAndDecodedBitExact) {
  std::vector<float> params(101770);
  for (std::size_t i = 0; i < params.size(); ++i) params[i] = std::sin(static_cast<float>(i));
  params[0] = -0.0f;
  params[1] = std::numeric_limits<float>::denorm_min();
  params[2] = std::numeric_limits<float>::max();
  params[3] = std::numeric_limits<float>::lowest();
  const std::vector<float> expected = params;
  const float* buffer = params.data();

  auto frames = Encode(Model{"r", 1, 2, false, std::move(params)});
  ASSERT_EQ(frames.size(), 2u);
  ASSERT_EQ(frames[1].size(), expected.size() * sizeof(float));
  if constexpr (std::endian::native == std::endian::little) {
    EXPECT_EQ(frames[1].data(), static_cast<const void*>(buffer));
  }
  // Little-endian bytes on the wire whatever the host.
  const auto* bytes = static_cast<const unsigned char*>(frames[1].data());
  const auto bits = std::bit_cast<std::uint32_t>(expected[7]);
  EXPECT_EQ(bytes[7 * 4], bits & 0xffu);
  EXPECT_EQ(bytes[7 * 4 + 3], bits >> 24);

  DecodeResult r = Decode(frames, Limits{expected.size()});
  ASSERT_TRUE(r.ok()) << r.error().detail;
  const auto& got = std::get<Model>(r.message()).params;
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0);
}

TEST(WireRoundTripTest, ExtremesAndEmptyTensors) {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  Update u = SomeUpdate(0);
  u.round = kMax;
  u.model_version = kMax - 1;
  u.samples = kMax;
  Update got = RoundTrip(u);  // no expected size: an empty tensor is allowed
  EXPECT_EQ(got.round, kMax);
  EXPECT_EQ(got.model_version, kMax - 1);
  EXPECT_EQ(got.samples, kMax);
  EXPECT_TRUE(got.payload.empty());

  EXPECT_EQ(RoundTrip(Join{std::string(64, 'x'), 4096, 0, std::string(256, 's')}).threads, 4096);
  EXPECT_EQ(RoundTrip(Join{"d", 1, 0, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}).software,
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_DOUBLE_EQ(RoundTrip(Heartbeat{"d", "idle", 0, 0, -1e300, 1.0}).loss, -1e300);
  EXPECT_EQ(RoundTrip(Welcome{"d", "", json::object(), 0, 0, "", 10, {}}).heartbeat_ms, 10);
}

// ---------------------------------------------------------------------------

TEST(WireRejectTest, ReasonNamesAreStableAndParse) {
  const std::vector<std::string_view> names = {
      "malformed",         "bad_version",      "unknown_kind", "bad_field",
      "wrong_size",        "non_finite",       "oversize",     "unknown_device",
      "stale_round",       "round_closed",     "duplicate",    "not_selected",
      "identity_mismatch", "too_many_devices", "rate_limited", "samples_exceeded"};
  ASSERT_EQ(names.size(), static_cast<std::size_t>(kRejectReasonCount));
  for (int i = 0; i < kRejectReasonCount; ++i) {
    const auto reason = static_cast<RejectReason>(i);
    EXPECT_EQ(ToString(reason), names[static_cast<std::size_t>(i)]);
    EXPECT_EQ(ParseRejectReason(ToString(reason)), reason);
  }
  EXPECT_EQ(ToString(static_cast<RejectReason>(kRejectReasonCount)), "unknown");
  EXPECT_FALSE(ParseRejectReason("nope"));
  EXPECT_FALSE(ParseRejectReason(""));
  EXPECT_FALSE(ParseRejectReason("Malformed"));
}

TEST(WireRejectTest, RefusesGarbageAndStructuralErrors) {
  EXPECT_EQ(Refused({}).reason, RejectReason::kMalformed);
  EXPECT_EQ(Refused(HeaderOnly(zmq::message_t())).reason, RejectReason::kMalformed);
  EXPECT_EQ(Refused(HeaderOnly(zmq::message_t(std::string("\xff\x00garbage", 9)))).reason,
            RejectReason::kMalformed);
  EXPECT_EQ(Refused(HeaderOnly(zmq::message_t(std::string("{\"v\":1}")))).reason,
            RejectReason::kMalformed);  // JSON text is not CBOR
  EXPECT_EQ(Refused(HeaderOnly(Cbor(json::array({1, 2})))).reason, RejectReason::kMalformed);
  EXPECT_EQ(Refused(HeaderOnly(Cbor(42))).reason, RejectReason::kMalformed);
  EXPECT_EQ(Refused(HeaderOnly(Cbor("join"))).reason, RejectReason::kMalformed);

  // A valid header with trailing bytes is not one CBOR item.
  auto trailing = json::to_cbor(json{{"v", 1}, {"kind", "fetch_model"}, {"device", "d"}});
  trailing.push_back(0);
  EXPECT_EQ(Refused(HeaderOnly(Bytes(trailing))).reason, RejectReason::kMalformed);
  // Truncated.
  auto truncated = json::to_cbor(json{{"v", 1}, {"kind", "fetch_model"}, {"device", "d"}});
  truncated.pop_back();
  EXPECT_EQ(Refused(HeaderOnly(Bytes(truncated))).reason, RejectReason::kMalformed);

  EXPECT_EQ(Refused(HeaderOnly(Cbor({{"v", 2}, {"kind", "fetch_model"}, {"device", "d"}}))).reason,
            RejectReason::kBadVersion);
  EXPECT_EQ(Refused(HeaderOnly(Cbor({{"v", 0}, {"kind", "fetch_model"}, {"device", "d"}}))).reason,
            RejectReason::kBadVersion);
  EXPECT_EQ(
      Refused(HeaderOnly(Cbor({{"v", "1"}, {"kind", "fetch_model"}, {"device", "d"}}))).reason,
      RejectReason::kBadVersion);
  EXPECT_EQ(Refused(HeaderOnly(Cbor({{"v", -1}, {"kind", "fetch_model"}, {"device", "d"}}))).reason,
            RejectReason::kBadVersion);
  EXPECT_EQ(Refused(HeaderOnly(Cbor({{"kind", "fetch_model"}, {"device", "d"}}))).reason,
            RejectReason::kBadVersion);

  EXPECT_EQ(Refused(HeaderOnly(Cbor({{"v", 1}, {"kind", "launch_missiles"}}))).reason,
            RejectReason::kUnknownKind);
  EXPECT_EQ(Refused(HeaderOnly(Cbor({{"v", 1}, {"kind", "JOIN"}}))).reason,
            RejectReason::kUnknownKind);
  EXPECT_EQ(Refused(HeaderOnly(Cbor({{"v", 1}, {"device", "d"}}))).reason,
            RejectReason::kBadField);  // no kind
  EXPECT_EQ(Refused(HeaderOnly(Cbor({{"v", 1}, {"kind", 5}}))).reason, RejectReason::kBadField);

  std::vector<zmq::message_t> big;
  big.push_back(Cbor({{"v", 1}, {"kind", "fetch_model"}, {"pad", std::string(70000, 'x')}}));
  EXPECT_EQ(Refused(std::move(big)).reason, RejectReason::kOversize);
}

TEST(WireRejectTest, RefusesMissingAndExtraTensorFrames) {
  for (Message& m : OneOfEach()) {
    const bool has_tensor = std::holds_alternative<Welcome>(m) ||
                            std::holds_alternative<Model>(m) || std::holds_alternative<Update>(m);
    auto frames = Encode(m);
    ASSERT_EQ(frames.size(), has_tensor ? 2u : 1u) << KindName(m);
    if (has_tensor) {
      frames.pop_back();
    } else {
      frames.emplace_back(8);
    }
    EXPECT_EQ(Refused(std::move(frames)).reason, RejectReason::kMalformed) << KindName(m);

    auto three = Encode(m);
    while (three.size() < 3) three.emplace_back(4);
    EXPECT_EQ(Refused(std::move(three)).reason, RejectReason::kMalformed) << KindName(m);
  }
}

// A header of the given kind with every field valid, to break one field.
json ValidHeader(const Message& m) {
  auto frames = Encode(m);
  const auto* b = static_cast<const std::uint8_t*>(frames[0].data());
  return json::from_cbor(b, b + frames[0].size());
}

RejectReason WithField(const Message& m, const std::string& key, const json& value) {
  json h = ValidHeader(m);
  if (value.is_discarded()) {
    h.erase(key);
  } else {
    h[key] = value;
  }
  auto frames = Encode(m);
  frames[0] = Cbor(h);
  DecodeResult r = Decode(frames);
  EXPECT_FALSE(r.ok()) << KindName(m) << "." << key << " = " << value.dump();
  return r.ok() ? RejectReason::kMalformed : r.error().reason;
}

TEST(WireRejectTest, RefusesEveryMissingOrMistypedField) {
  const json kMissing = json(json::value_t::discarded);
  for (const Message& m : OneOfEach()) {
    const json header = ValidHeader(m);
    for (const auto& [key, value] : header.items()) {
      if (key == "v" || key == "kind") continue;
      EXPECT_EQ(WithField(m, key, kMissing), RejectReason::kBadField) << KindName(m) << "." << key;
      // The wrong type for every field: a map is never a legal field value
      // except for the plan, which in turn must not be an array.
      const json wrong = key == "plan" ? json::array({1}) : json::object({{"x", 1}});
      EXPECT_EQ(WithField(m, key, wrong), RejectReason::kBadField) << KindName(m) << "." << key;
      if (value.is_string()) {
        EXPECT_EQ(WithField(m, key, 1), RejectReason::kBadField) << KindName(m) << "." << key;
      } else if (value.is_number()) {
        EXPECT_EQ(WithField(m, key, "1"), RejectReason::kBadField) << KindName(m) << "." << key;
      }
    }
  }
}

TEST(WireRejectTest, RefusesOutOfRangeFields) {
  const Join join{"dev0", 4, 15000, "fedsgd"};
  const Heartbeat beat{"dev1", "training", 4, 10, 0.5, 0.5};
  const Welcome welcome{"dev0", "7", json::object(), 7, 8, "tcp://h:1", 250, {1}};
  const Update update = SomeUpdate();
  const std::vector<std::pair<Message, std::pair<std::string, json>>> cases = {
      {FetchModel{"d"}, {"device", ""}},
      {FetchModel{"d"}, {"device", "has space"}},
      {FetchModel{"d"}, {"device", "semi;colon"}},
      {FetchModel{"d"}, {"device", "caf\xc3\xa9"}},
      {FetchModel{"d"}, {"device", std::string(65, 'a')}},
      {join, {"threads", 0}},
      {join, {"threads", -1}},
      {join, {"threads", 4097}},
      {join, {"threads", 2.0}},
      {join, {"samples", -5}},
      {join, {"software", std::string(257, 's')}},
      {join, {"software", "two\nlines"}},
      {join, {"software", std::string("nul\0", 4)}},
      {welcome, {"heartbeat_ms", 9}},
      {welcome, {"heartbeat_ms", 3600 * 1000 + 1}},
      {welcome, {"plan", "mlp"}},
      {welcome, {"round", -1}},
      {beat, {"state", "dancing"}},
      {beat, {"state", ""}},
      {beat, {"progress", 1.5}},
      {beat, {"progress", -0.1}},
      {beat, {"samples_per_second", -1.0}},
      {beat, {"loss", std::numeric_limits<double>::quiet_NaN()}},
      {beat, {"loss", std::numeric_limits<double>::infinity()}},
      {update, {"samples", 0}},
      {update, {"update_kind", "weights"}},
      {update, {"train_seconds", -1.0}},
      {update, {"loss", -std::numeric_limits<double>::infinity()}},
      {update, {"round", 1.5}},
      {Model{"7", 1, 2, false, {1}}, {"final", 1}},
      {Reject{RejectReason::kDuplicate, ""}, {"reason", "because"}},
      {Reject{RejectReason::kDuplicate, ""}, {"reason", "DUPLICATE"}},
  };
  for (const auto& [message, field] : cases) {
    EXPECT_EQ(WithField(message, field.first, field.second), RejectReason::kBadField)
        << KindName(message) << "." << field.first << " = " << field.second.dump();
  }
  // Encoding does not validate; the receiver does.
  Update nan_loss = SomeUpdate();
  nan_loss.loss = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(Refused(Encode(nan_loss)).reason, RejectReason::kBadField);
}

TEST(WireTest, UpdateCarriesAnOptionalHeldOutEvaluation) {
  const Update plain = RoundTrip(SomeUpdate());
  EXPECT_FALSE(plain.evaluation.has_value());
  Update u0 = SomeUpdate();
  u0.evaluation = HeldOutEvaluation{0.625, 0.75, 600};
  const Update u = RoundTrip(u0);
  ASSERT_TRUE(u.evaluation.has_value());
  EXPECT_DOUBLE_EQ(u.evaluation->loss, 0.625);
  EXPECT_DOUBLE_EQ(u.evaluation->accuracy, 0.75);
  EXPECT_EQ(u.evaluation->samples, 600u);
  EXPECT_EQ(ValidHeader(u0).count("eval_samples"), 1u);
  EXPECT_EQ(ValidHeader(SomeUpdate()).count("eval_samples"), 0u) << "absent when not measured";
}

TEST(WireRejectTest, RefusesABadHeldOutEvaluation) {
  Update u = SomeUpdate();
  u.evaluation = HeldOutEvaluation{0.5, 0.5, 100};
  const json nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<std::pair<std::string, json>> cases = {
      {"eval_accuracy", 1.5},
      {"eval_accuracy", -0.1},
      {"eval_accuracy", nan},
      {"eval_accuracy", "0.9"},
      {"eval_loss", -1.0},
      {"eval_loss", nan},
      {"eval_loss", std::numeric_limits<double>::infinity()},
      {"eval_samples", 0},
      {"eval_samples", -3},
      {"eval_samples", 1.5},
      {"eval_samples", (std::uint64_t{1} << 32) + 1},
      {"eval_samples", json(json::value_t::discarded)},  // the others without it
      {"eval_loss", json(json::value_t::discarded)},
  };
  for (const auto& [key, value] : cases) {
    EXPECT_EQ(WithField(u, key, value), RejectReason::kBadField) << key << " = " << value.dump();
  }
  // One field alone on an update without evaluation: the other two are missing.
  EXPECT_EQ(WithField(SomeUpdate(), "eval_accuracy", 0.5), RejectReason::kBadField);
}

TEST(WireTest, UpdateCarriesAnOptionalPersonalisedEvaluation) {
  Update u0 = SomeUpdate();
  u0.evaluation = HeldOutEvaluation{0.625, 0.75, 600};
  EXPECT_FALSE(RoundTrip(u0).personal.has_value());
  EXPECT_EQ(ValidHeader(u0).count("personal_accuracy"), 0u) << "absent when not measured";
  u0.personal = HeldOutEvaluation{0.25, 0.9375, 600};
  const Update u = RoundTrip(u0);
  ASSERT_TRUE(u.personal.has_value());
  EXPECT_DOUBLE_EQ(u.personal->loss, 0.25);
  EXPECT_DOUBLE_EQ(u.personal->accuracy, 0.9375);
  EXPECT_EQ(u.personal->samples, 600u) << "the evaluation's held-out samples";

  const json nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<std::pair<std::string, json>> cases = {
      {"personal_accuracy", 1.5}, {"personal_accuracy", -0.1},
      {"personal_accuracy", nan}, {"personal_loss", -1.0},
      {"personal_loss", nan},     {"personal_loss", json(json::value_t::discarded)},
      {"personal_accuracy", "1"},
  };
  for (const auto& [key, value] : cases) {
    EXPECT_EQ(WithField(u0, key, value), RejectReason::kBadField) << key << " = " << value.dump();
  }
  // Without the held-out evaluation it is measured against, it is refused.
  Update alone = SomeUpdate();
  EXPECT_EQ(WithField(alone, "personal_accuracy", 0.5), RejectReason::kBadField);
}

TEST(WireTest, AckCarriesOptionalSelectionPaceAndUploadFields) {
  // Absent: an Ack as before (an older coordinator's).
  const json plain = ValidHeader(Ack{4, 3, ""});
  for (const char* key : {"selected", "heartbeat_ms", "upload", "retry_ms"}) {
    EXPECT_EQ(plain.count(key), 0u) << key;
  }
  Ack a{4, 3, "", true, 25000, false, 50};
  const Ack b = RoundTrip(a);
  ASSERT_TRUE(b.selected.has_value());
  EXPECT_TRUE(*b.selected);
  EXPECT_EQ(b.heartbeat_ms, 25000);
  ASSERT_TRUE(b.upload.has_value());
  EXPECT_FALSE(*b.upload);
  EXPECT_EQ(b.retry_ms, 50);
  const Ack granted = RoundTrip(Ack{4, 3, "", false, 0, true, 0});
  EXPECT_FALSE(*granted.selected);
  EXPECT_TRUE(*granted.upload);
  EXPECT_EQ(ValidHeader(Ack{4, 3, "", std::nullopt, 0, true, 0}).count("retry_ms"), 0u);
}

TEST(WireRejectTest, RefusesBadAckPaceAndUploadFields) {
  const Ack a{4, 3, "", true, 1000, false, 50};
  const std::vector<std::pair<std::string, json>> cases = {
      {"selected", 1},
      {"selected", "yes"},
      {"heartbeat_ms", 0},
      {"heartbeat_ms", 9},
      {"heartbeat_ms", 3600001},
      {"heartbeat_ms", 1.5},
      {"upload", "no"},
      {"retry_ms", 0},
      {"retry_ms", -5},
      {"retry_ms", json(json::value_t::discarded)},  // a refusal says when to ask again
  };
  for (const auto& [key, value] : cases) {
    EXPECT_EQ(WithField(a, key, value), RejectReason::kBadField) << key << " = " << value.dump();
  }
}

TEST(WireRejectTest, RefusesHostileCbor) {
  // 60,000 nested arrays: a recursive parser would overflow its stack.
  std::string deep = "\xa1\x61p";
  deep.append(60000, '\x81');
  deep.push_back('\x00');
  DecodeError e = Refused(HeaderOnly(zmq::message_t(deep)));
  EXPECT_EQ(e.reason, RejectReason::kMalformed);
  EXPECT_NE(e.detail.find("deep"), std::string::npos) << e.detail;

  // A map declaring 2^32 entries in a few bytes.
  const std::string huge_map("\xba\xff\xff\xff\xff\x00", 6);
  EXPECT_EQ(Refused(HeaderOnly(zmq::message_t(huge_map))).reason, RejectReason::kMalformed);
  // An array declaring 11422086765081621603 elements in a map: nlohmann's
  // from_cbor throws out_of_range.408 for it even with allow_exceptions=false
  // (found by fuzz/plan_json_fuzz.cpp, fuzz/corpus/plan_json/
  // cbor-excessive-array-size); Decode must refuse it before that parse.
  const std::string huge_array("\xa1\x61p\x9b\x9e\x83\x67\x65\x62\x61\x74\x63", 12);
  EXPECT_EQ(Refused(HeaderOnly(zmq::message_t(huge_array))).reason, RejectReason::kMalformed);
  // A text string declaring 2^64-1 bytes.
  const std::string huge_text("\xa1\x7b\xff\xff\xff\xff\xff\xff\xff\xff", 10);
  EXPECT_EQ(Refused(HeaderOnly(zmq::message_t(huge_text))).reason, RejectReason::kMalformed);
  // An indefinite-length map that never ends.
  EXPECT_EQ(Refused(HeaderOnly(zmq::message_t(std::string("\xbf\x61v\x01", 4)))).reason,
            RejectReason::kMalformed);

  // Invalid UTF-8 in a value, in a key, an overlong '/', a surrogate.
  for (const std::string& bad : {std::string("x\xff"), std::string("\xc0\xaf"),
                                 std::string("\xed\xa0\x80"), std::string("\xe2\x82")}) {
    json h{{"v", 1},       {"kind", "join"}, {"device", "d"},
           {"threads", 1}, {"samples", 1},   {"software", bad}};
    EXPECT_EQ(Refused(HeaderOnly(Cbor(h))).reason, RejectReason::kMalformed);
    json k{{"v", 1}, {"kind", "fetch_model"}, {"device", "d"}, {bad, 1}};
    EXPECT_EQ(Refused(HeaderOnly(Cbor(k))).reason, RejectReason::kMalformed);
  }

  // The detail of an unknown kind is printable and short whatever was sent.
  e = Refused(HeaderOnly(Cbor({{"v", 1}, {"kind", "\x01\x02" + std::string(300, 'k')}})));
  EXPECT_EQ(e.reason, RejectReason::kBadField);  // too long for a kind
  e = Refused(HeaderOnly(Cbor({{"v", 1}, {"kind", "bell\x07"}})));
  EXPECT_EQ(e.reason, RejectReason::kBadField);  // control character
  e = Refused(HeaderOnly(Cbor({{"v", 1}, {"kind", "caf\xc3\xa9"}})));
  EXPECT_EQ(e.reason, RejectReason::kUnknownKind);
  for (const char c : e.detail) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << e.detail;
}

TEST(WireRejectTest, RefusesBadTensors) {
  EXPECT_EQ(Refused(Encode(SomeUpdate(5)), Limits{6}).reason, RejectReason::kWrongSize);
  EXPECT_EQ(Refused(Encode(SomeUpdate(0)), Limits{6}).reason, RejectReason::kWrongSize);
  EXPECT_EQ(Refused(Encode(SomeUpdate(7)), Limits{0, 6}).reason, RejectReason::kOversize);
  EXPECT_EQ(Refused(Encode(Model{"r", 1, 1, false, std::vector<float>(7)}), Limits{7, 6}).reason,
            RejectReason::kOversize);
  EXPECT_EQ(
      Refused(Encode(Welcome{"d", "r", json::object(), 0, 0, "", 100, {1, 2}}), Limits{3}).reason,
      RejectReason::kWrongSize);

  for (const std::size_t bytes : {1u, 2u, 3u, 7u, 21u}) {
    auto ragged = Encode(SomeUpdate());
    ragged[1] = zmq::message_t(bytes);
    EXPECT_EQ(Refused(std::move(ragged)).reason, RejectReason::kWrongSize) << bytes;
  }

  for (const float poison : {kNaN, -kNaN, kInf, -kInf, std::bit_cast<float>(0x7f800001u)}) {
    for (const std::size_t at : {0u, 777u, 999u}) {
      Update u = SomeUpdate(1000);
      u.payload[at] = poison;
      const DecodeError e = Refused(Encode(u), Limits{1000});
      EXPECT_EQ(e.reason, RejectReason::kNonFinite);
      EXPECT_NE(e.detail.find(std::to_string(at)), std::string::npos) << e.detail;
    }
  }
  Model m{"r", 1, 1, false, std::vector<float>(3, 1.0f)};
  m.params[2] = kInf;
  EXPECT_EQ(Refused(Encode(m)).reason, RejectReason::kNonFinite);
}

// ---------------------------------------------------------------------------

TEST(WireFuzzTest, RandomBytesNeverThrow) {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 96);
  int accepted = 0;
  for (int i = 0; i < 4000; ++i) {
    std::vector<zmq::message_t> f;
    const int frames = i % 4;  // 0..3 frames
    for (int k = 0; k < frames; ++k) {
      std::string bytes(static_cast<std::size_t>(len(rng)), '\0');
      for (char& c : bytes) c = static_cast<char>(byte(rng));
      f.emplace_back(bytes);
    }
    DecodeResult r;
    EXPECT_NO_THROW(r = Decode(f, Limits{i % 2 ? 5u : 0u, 16}));
    accepted += r.ok();
  }
  EXPECT_EQ(accepted, 0);
}

TEST(WireFuzzTest, MutatedValidMessagesNeverThrow) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  int accepted = 0, total = 0;
  for (const Message& original : OneOfEach()) {
    const auto frames = Encode(original);
    const auto* b = static_cast<const std::uint8_t*>(frames[0].data());
    const std::vector<std::uint8_t> header(b, b + frames[0].size());
    for (int i = 0; i < 1000; ++i, ++total) {
      std::vector<std::uint8_t> m = header;
      switch (i % 4) {
        case 0:  // flip bytes
        case 1:
          for (int k = 0; k <= i % 5; ++k)
            m[rng() % m.size()] = static_cast<std::uint8_t>(byte(rng));
          break;
        case 2:  // truncate
          m.resize(rng() % m.size());
          break;
        case 3:  // insert a byte
          m.insert(m.begin() + static_cast<std::ptrdiff_t>(rng() % m.size()),
                   static_cast<std::uint8_t>(byte(rng)));
          break;
      }
      std::vector<zmq::message_t> f;
      f.push_back(Bytes(m));
      if (frames.size() == 2) f.emplace_back(static_cast<std::size_t>(rng() % 3 == 0 ? 19 : 20));
      DecodeResult r;
      EXPECT_NO_THROW(r = Decode(f, Limits{5}));
      if (r.ok()) {
        ++accepted;
        // Whatever got through is well-formed: it encodes and decodes again.
        auto again = Encode(r.message());
        EXPECT_TRUE(Decode(again, Limits{5}).ok()) << KindName(r.message());
      }
    }
  }
  EXPECT_LT(accepted, total);
}

// ---------------------------------------------------------------------------

zmq::message_t PopRoutingId(std::vector<zmq::message_t>& frames) {
  zmq::message_t id = std::move(frames.front());
  frames.erase(frames.begin());
  return id;
}

TEST(WireSocketTest, CrossesRouterDealerAndPubSubOverTcp) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router), pub(ctx, zmq::socket_type::pub);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::rcvtimeo, 5000);  // a failure fails, never hangs
  pub.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  pub.bind("tcp://127.0.0.1:*");
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer), sub(ctx, zmq::socket_type::sub);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::rcvtimeo, 5000);
  sub.set(zmq::sockopt::linger, 0);
  const std::string router_endpoint = router.get(zmq::sockopt::last_endpoint);
  EXPECT_EQ(router_endpoint.rfind("tcp://127.0.0.1:", 0), 0u) << router_endpoint;
  dealer.connect(router_endpoint);
  sub.connect(pub.get(zmq::sockopt::last_endpoint));
  sub.set(zmq::sockopt::subscribe, "");

  ASSERT_TRUE(Send(dealer, Join{"dev0", 2, 100, "test"}));
  ASSERT_TRUE(Send(dealer, SomeUpdate(1000)));
  for (std::string_view expected : {"join", "update"}) {
    auto frames = ReceiveFrames(router);
    ASSERT_TRUE(frames);
    ASSERT_EQ(frames->size(), expected == "update" ? 3u : 2u);  // id, header[, tensor]
    zmq::message_t id = PopRoutingId(*frames);
    DecodeResult r = Decode(*frames, Limits{expected == "update" ? 1000u : 0u});
    ASSERT_TRUE(r.ok()) << r.error().detail;
    EXPECT_EQ(KindName(r.message()), expected);
    if (auto* u = std::get_if<Update>(&r.message())) {
      EXPECT_EQ(u->payload, SomeUpdate(1000).payload);
    }
    ASSERT_TRUE(Send(router, Ack{1, 0, std::string(expected)}, &id));
    auto reply = ReceiveFrames(dealer);
    ASSERT_TRUE(reply);
    DecodeResult ack = Decode(*reply);
    ASSERT_TRUE(ack.ok());
    EXPECT_EQ(std::get<Ack>(ack.message()).detail, expected);
  }

  // PUB drops messages until the subscription has arrived: retry, bounded.
  std::optional<std::vector<zmq::message_t>> got;
  for (int i = 0; i < 250 && !got; ++i) {
    Send(pub, Model{"run", 1, 2, false, std::vector<float>(1000, 0.5f)});
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    got = ReceiveFrames(sub, zmq::recv_flags::dontwait);
  }
  ASSERT_TRUE(got);
  DecodeResult r = Decode(*got, Limits{1000});
  ASSERT_TRUE(r.ok()) << r.error().detail;
  EXPECT_EQ(std::get<Model>(r.message()).round, 2u);
  EXPECT_EQ(std::get<Model>(r.message()).params[999], 0.5f);
}

TEST(WireSocketTest, CarriesAFullSizeUpdateOverInproc) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  router.set(zmq::sockopt::rcvtimeo, 5000);
  dealer.set(zmq::sockopt::rcvtimeo, 5000);
  router.bind("inproc://wire-full-size");
  dealer.connect("inproc://wire-full-size");
  const Update sent = SomeUpdate(101770);
  ASSERT_TRUE(Send(dealer, sent));
  auto frames = ReceiveFrames(router);
  ASSERT_TRUE(frames);
  zmq::message_t id = PopRoutingId(*frames);
  DecodeResult r = Decode(*frames, Limits{101770});
  ASSERT_TRUE(r.ok()) << r.error().detail;
  EXPECT_EQ(std::get<Update>(r.message()).payload, sent.payload);

  EXPECT_FALSE(ReceiveFrames(router, zmq::recv_flags::dontwait));  // nothing more queued
  ASSERT_TRUE(Send(router, Reject{RejectReason::kDuplicate, "again"}, &id));
  auto reply = ReceiveFrames(dealer);
  ASSERT_TRUE(reply);
  DecodeResult rejected = Decode(*reply);
  ASSERT_TRUE(rejected.ok());
  EXPECT_EQ(std::get<Reject>(rejected.message()).reason, RejectReason::kDuplicate);
}

TEST(WireSocketTest, SendReportsWouldBlockAndUnroutableWithoutThrowing) {
  zmq::context_t ctx;
  // A DEALER with no peer has nowhere to queue: EAGAIN.
  zmq::socket_t lonely(ctx, zmq::socket_type::dealer);
  lonely.set(zmq::sockopt::linger, 0);
  EXPECT_FALSE(Send(lonely, FetchModel{"d"}));

  // A ROUTER_MANDATORY socket and a routing id nobody has: EHOSTUNREACH.
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::router_mandatory, true);
  router.bind("inproc://wire-mandatory");
  const zmq::message_t nobody(std::string("nobody"));
  bool sent = true;
  EXPECT_NO_THROW(sent = Send(router, Ack{1, 1, ""}, &nobody));
  EXPECT_FALSE(sent);
}

TEST(WireSocketTest, ReceiveBoundedKeepsTheFirstFramesAndDropsTheRest) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  router.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::linger, 0);
  router.bind("inproc://wire-bounded");
  dealer.connect("inproc://wire-bounded");
  // A frame bomb: 150 frames of 64 KiB.
  for (int i = 0; i < 150; ++i) {
    zmq::message_t frame(std::string(65536, static_cast<char>('a' + i % 26)));
    dealer.send(frame, i + 1 < 150 ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  ASSERT_TRUE(Send(dealer, FetchModel{"d"}));  // and then an honest message
  auto bomb = ReceiveBounded(router, 1 + kMaxFrames);
  ASSERT_TRUE(bomb);
  ASSERT_EQ(bomb->frames.size(), 3u);  // routing id, then two frames
  EXPECT_EQ(bomb->frames[1].to_string(), std::string(65536, 'a'));
  EXPECT_EQ(bomb->dropped_frames, 148u);
  EXPECT_EQ(bomb->dropped_bytes, 148u * 65536u);
  auto next = ReceiveBounded(router, 1 + kMaxFrames);
  ASSERT_TRUE(next) << "the bomb's frames did not spill into the next message";
  EXPECT_EQ(next->dropped_frames, 0u);
  next->frames.erase(next->frames.begin());
  DecodeResult d = Decode(next->frames);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(std::get<FetchModel>(d.message()).device, "d");
  EXPECT_FALSE(ReceiveBounded(router, 3, zmq::recv_flags::dontwait));
}

}  // namespace
}  // namespace fedsgd::wire
