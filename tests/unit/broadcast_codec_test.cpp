// Broadcast codec (issue 10): the plan's --broadcast-codec parsed, Welcome
// and Model weights in fp16 through Encode/Decode, and every malformed
// variant of such a message refused with a stable reason.
#include "fedsgd/broadcast_codec.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <optional>
#include <random>

#include "fedsgd/error.h"
#include "fedsgd/plan.h"
#include "fedsgd/wire.h"

namespace fedsgd::wire {
namespace {

using nlohmann::json;

std::vector<float> Weights(std::size_t n) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0, 0.1f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

std::vector<float> Rounded(std::vector<float> v) {
  for (float& x : v) x = HalfToFloat(FloatToHalf(x));
  return v;
}

Model Fp16Model(const std::vector<float>& weights) {
  return Model{"run-1", 4, 5, false, {}, EncodeWeights(TensorEncoding::kFp16, weights)};
}

Welcome Fp16Welcome(const std::vector<float>& weights) {
  Plan plan;
  plan.broadcast_codec = "fp16";
  return Welcome{"dev0", "run-1", plan.ToJson(),
                 4,      5,       "tcp://h:1",
                 250,    {},      EncodeWeights(TensorEncoding::kFp16, weights)};
}

json HeaderOf(const std::vector<zmq::message_t>& frames) {
  const auto* first = static_cast<const std::uint8_t*>(frames[0].data());
  return json::from_cbor(first, first + frames[0].size());
}

// The frames of `m` with the header edited and, when given, another tensor.
std::vector<zmq::message_t> Tampered(Message m, const std::function<void(json&)>& edit,
                                     std::optional<std::vector<std::uint8_t>> tensor = {}) {
  auto frames = Encode(std::move(m));
  json h = HeaderOf(frames);
  edit(h);
  const std::vector<std::uint8_t> header = json::to_cbor(h);
  frames[0] = zmq::message_t(header.data(), header.size());
  if (tensor) frames[1] = zmq::message_t(tensor->data(), tensor->size());
  return frames;
}

DecodeError Refused(std::vector<zmq::message_t> frames, const Limits& limits = {}) {
  DecodeResult r = Decode(frames, limits);
  EXPECT_FALSE(r.ok()) << KindName(r.message());
  return r.ok() ? DecodeError{} : r.error();
}

TEST(BroadcastCodecTest, ParsesFp32AndFp16AndNamesTheFlagOtherwise) {
  EXPECT_EQ(ParseBroadcastCodec("fp32"), TensorEncoding::kFp32);
  EXPECT_EQ(ParseBroadcastCodec("fp16"), TensorEncoding::kFp16);
  for (const std::string bad : {"", "int8", "topk:0.5", "FP16", "fp16 "}) {
    try {
      ParseBroadcastCodec(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--broadcast-codec"), std::string::npos) << e.what();
    }
  }
}

TEST(BroadcastCodecTest, Fp32WeightsTravelAsBefore) {
  const std::vector<float> w = Weights(50);
  EXPECT_EQ(EncodeWeights(TensorEncoding::kFp32, w).encoding, TensorEncoding::kFp32);
  EXPECT_TRUE(EncodeWeights(TensorEncoding::kFp32, w).bytes.empty());
  Model m{"run-1", 4, 5, false, w, EncodeWeights(TensorEncoding::kFp32, w)};
  const auto frames = Encode(m);
  EXPECT_FALSE(HeaderOf(frames).contains("encoding"));
  EXPECT_EQ(frames[1].size(), 4 * w.size());
}

TEST(BroadcastCodecTest, Fp16ModelAndWelcomeRoundTripToTheRoundedWeights) {
  const std::vector<float> w = Weights(1000);
  for (Message m : {Message{Fp16Model(w)}, Message{Fp16Welcome(w)}}) {
    auto frames = Encode(std::move(m));
    const json h = HeaderOf(frames);
    EXPECT_EQ(h.at("encoding"), "fp16");
    EXPECT_EQ(h.at("count"), 1000);
    EXPECT_EQ(frames[1].size(), 2000u);  // half of fp32's
    Limits limits{1000};
    limits.model_encoding = TensorEncoding::kFp16;
    DecodeResult r = Decode(frames, limits);
    ASSERT_TRUE(r.ok()) << r.error().detail;
    const auto* model = std::get_if<Model>(&r.message());
    const auto* welcome = std::get_if<Welcome>(&r.message());
    ASSERT_TRUE(model || welcome);
    const EncodedTensor& e = model ? model->encoded : welcome->encoded;
    EXPECT_EQ(e.encoding, TensorEncoding::kFp16);
    EXPECT_EQ(e.count, 1000u);
    EXPECT_TRUE(e.bytes.empty());
    EXPECT_EQ(model ? model->params : welcome->params, Rounded(w));
  }
}

TEST(BroadcastCodecTest, ModelEncodingLimitIsEnforcedAsBadField) {
  const std::vector<float> w = Weights(10);
  Limits fp32;
  fp32.model_encoding = TensorEncoding::kFp32;
  Limits fp16;
  fp16.model_encoding = TensorEncoding::kFp16;
  EXPECT_EQ(Refused(Encode(Fp16Model(w)), fp32).reason, RejectReason::kBadField);
  EXPECT_EQ(Refused(Encode(Model{"r", 1, 2, false, w}), fp16).reason, RejectReason::kBadField);
  // A Welcome carries its own plan; the daemon checks it against that.
  auto welcome = Encode(Fp16Welcome(w));
  EXPECT_TRUE(Decode(welcome, fp32).ok());
  // The update limit does not bind models, nor the model limit updates.
  Limits update_fp32;
  update_fp32.update_encoding = TensorEncoding::kFp32;
  auto model = Encode(Fp16Model(w));
  EXPECT_TRUE(Decode(model, update_fp32).ok());
}

TEST(BroadcastCodecTest, RefusesMalformedFp16Weights) {
  const std::vector<float> w = Weights(10);
  const auto keep = [](json&) {};
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    std::optional<std::vector<std::uint8_t>> tensor;
    Limits limits;
    RejectReason reason;
  };
  std::vector<std::uint8_t> inf = EncodeWeights(TensorEncoding::kFp16, w).bytes;
  inf[7] = 0x7c;  // value 3: exponent all ones
  inf[6] = 0x00;
  std::vector<std::uint8_t> nan = inf;
  nan[6] = 0x01;
  const std::vector<Case> cases = {
      {"int8 weights",
       [](json& h) {
         h["encoding"] = "int8";
         h["block"] = 256;
       },
       {},
       {},
       RejectReason::kBadField},
      {"topk weights", [](json& h) { h["encoding"] = "topk"; }, {}, {}, RejectReason::kBadField},
      {"unknown encoding",
       [](json& h) { h["encoding"] = "bf16"; },
       {},
       {},
       RejectReason::kBadField},
      {"encoding not a string",
       [](json& h) { h["encoding"] = 16; },
       {},
       {},
       RejectReason::kBadField},
      {"no count", [](json& h) { h.erase("count"); }, {}, {}, RejectReason::kBadField},
      {"count mistyped", [](json& h) { h["count"] = "10"; }, {}, {}, RejectReason::kBadField},
      {"count negative", [](json& h) { h["count"] = -10; }, {}, {}, RejectReason::kBadField},
      {"count not the frame's", [](json& h) { h["count"] = 11; }, {}, {}, RejectReason::kWrongSize},
      {"frame cut short", keep, std::vector<std::uint8_t>(19), {}, RejectReason::kWrongSize},
      {"frame too long", keep, std::vector<std::uint8_t>(21), {}, RejectReason::kWrongSize},
      {"not the model's size", keep, {}, Limits{11}, RejectReason::kWrongSize},
      {"over max_params", keep, {}, Limits{0, 9}, RejectReason::kOversize},
      {"count far over max_params",
       [](json& h) { h["count"] = std::numeric_limits<std::uint64_t>::max(); },
       {},
       {},
       RejectReason::kOversize},
      {"Inf", keep, inf, {}, RejectReason::kNonFinite},
      {"NaN", keep, nan, {}, RejectReason::kNonFinite},
  };
  for (const Case& c : cases) {
    for (Message m : {Message{Fp16Model(w)}, Message{Fp16Welcome(w)}}) {
      const std::string kind(KindName(m));
      EXPECT_EQ(Refused(Tampered(std::move(m), c.edit, c.tensor), c.limits).reason, c.reason)
          << kind << ": " << c.what;
    }
  }
}

}  // namespace
}  // namespace fedsgd::wire
