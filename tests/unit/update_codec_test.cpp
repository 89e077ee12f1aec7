// Update codecs (fp16, int8, topk) as wire tensor encodings: parsing the
// plan's --update-codec, round trips through Encode/Decode, each codec's
// error bound, and every malformed variant refused with a stable reason.
#include "fedsgd/update_codec.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "fedsgd/error.h"
#include "fedsgd/wire.h"

namespace fedsgd::wire {
namespace {

using nlohmann::json;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> Gaussian(std::size_t n, std::uint64_t seed, float sigma = 0.01f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

Update Compressed(const std::string& codec, const std::vector<float>& values,
                  std::uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  Update u;
  u.device = "dev-1";
  u.round = 4;
  u.model_version = 3;
  u.samples = 100;
  u.encoded = EncodeTensor(UpdateCodec::Parse(codec), values, rng);
  return u;
}

// Encodes `u`, decodes it with `limits`, and returns the decoded update.
Update RoundTrip(Update u, const Limits& limits = {}) {
  auto frames = Encode(std::move(u));
  DecodeResult r = Decode(frames, limits);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().detail);
  if (!r.ok()) return Update{};
  return std::get<Update>(r.message());
}

// The frames of `u` with the header map edited by `edit` and the tensor
// frame replaced by `tensor` (when given).
std::vector<zmq::message_t> Tampered(Update u, const std::function<void(json&)>& edit,
                                     std::optional<std::vector<std::uint8_t>> tensor = {}) {
  auto frames = Encode(std::move(u));
  const auto* first = static_cast<const std::uint8_t*>(frames[0].data());
  json h = json::from_cbor(first, first + frames[0].size());
  edit(h);
  const std::vector<std::uint8_t> header = json::to_cbor(h);
  frames[0] = zmq::message_t(header.data(), header.size());
  if (tensor) frames[1] = zmq::message_t(tensor->data(), tensor->size());
  return frames;
}

std::vector<std::uint8_t> TensorBytes(const Update& u) { return u.encoded.bytes; }

DecodeError Refused(std::vector<zmq::message_t> frames, const Limits& limits = {}) {
  DecodeResult r = Decode(frames, limits);
  EXPECT_FALSE(r.ok());
  return r.ok() ? DecodeError{} : r.error();
}

void PutLe32(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

TEST(UpdateCodecTest, ParsesEveryCodecAndPrintsItBack) {
  for (const std::string text : {"fp32", "fp16", "int8", "topk:0.01", "topk:1", "topk:0.5"}) {
    EXPECT_EQ(UpdateCodec::Parse(text).ToString(), text);
  }
  EXPECT_EQ(UpdateCodec::Parse("topk:0.01").encoding, TensorEncoding::kTopK);
  EXPECT_DOUBLE_EQ(UpdateCodec::Parse("topk:0.01").topk_fraction, 0.01);
  for (const std::string bad : {"", "fp64", "FP16", "topk", "topk:", "topk:0", "topk:-0.1",
                                "topk:1.5", "topk:nan", "topk:inf", "topk:0.1x", "int8 "}) {
    try {
      UpdateCodec::Parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--update-codec"), std::string::npos);
    }
  }
}

TEST(UpdateCodecTest, TopKCountIsTheCeilingAndAtLeastOne) {
  const UpdateCodec c = UpdateCodec::Parse("topk:0.01");
  EXPECT_EQ(c.TopKCount(101770), 1018u);
  EXPECT_EQ(c.TopKCount(10), 1u);
  EXPECT_EQ(c.TopKCount(0), 0u);
  EXPECT_EQ(UpdateCodec::Parse("topk:1").TopKCount(7), 7u);
}

TEST(UpdateCodecTest, HalfConversionIsIeeeBinary16) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e9f), 0x7bff);  // saturates, never Inf
  EXPECT_EQ(FloatToHalf(-1e9f), 0xfbff);
  EXPECT_EQ(FloatToHalf(5.9604645e-8f), 0x0001);       // the smallest subnormal
  EXPECT_EQ(FloatToHalf(6.103515625e-5f), 0x0400);     // the smallest normal
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048), 0x3c00);  // a tie rounds to even
  EXPECT_EQ(FloatToHalf(1.0f + 3.0f / 2048), 0x3c02);
  // Every finite half survives the trip through float and back.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00u) == 0x7c00u) continue;
    const auto half = static_cast<std::uint16_t>(h);
    ASSERT_EQ(FloatToHalf(HalfToFloat(half)), half) << h;
  }
}

TEST(UpdateCodecTest, HeaderWithoutEncodingIsFp32AsBefore) {
  Update u;
  u.device = "dev-1";
  u.samples = 1;
  u.payload = {1, 2, 3};
  auto frames = Encode(u);
  const auto* first = static_cast<const std::uint8_t*>(frames[0].data());
  const json h = json::from_cbor(first, first + frames[0].size());
  EXPECT_FALSE(h.contains("encoding"));
  EXPECT_FALSE(h.contains("count"));
  const Update back = RoundTrip(u);
  EXPECT_EQ(back.encoded.encoding, TensorEncoding::kFp32);
  EXPECT_EQ(back.payload, u.payload);
}

TEST(UpdateCodecTest, EachCodecRoundTripsWithinItsErrorBound) {
  const std::size_t n = 101770;  // MLP 784-128-10
  std::vector<float> values = Gaussian(n, 1);
  values[5] = 3.0f;  // one large value in the first int8 block
  values[n - 1] = -0.5f;

  const Update fp16 = RoundTrip(Compressed("fp16", values), Limits{n});
  ASSERT_EQ(fp16.payload.size(), n);
  EXPECT_EQ(fp16.encoded.encoding, TensorEncoding::kFp16);
  EXPECT_EQ(fp16.encoded.count, n);
  for (std::size_t i = 0; i < n; ++i) {
    // Relative error 2^-11 for normals, absolute 2^-25 in the subnormals.
    ASSERT_LE(std::fabs(fp16.payload[i] - values[i]),
              std::max(std::fabs(values[i]) * 0x1p-11f, 0x1p-25f))
        << i;
  }

  const Update int8 = RoundTrip(Compressed("int8", values), Limits{n});
  ASSERT_EQ(int8.payload.size(), n);
  EXPECT_EQ(int8.encoded.block, kInt8BlockSize);
  for (std::size_t b = 0; b * kInt8BlockSize < n; ++b) {
    float scale = 0;
    const std::size_t end = std::min(n, (b + 1) * kInt8BlockSize);
    for (std::size_t i = b * kInt8BlockSize; i < end; ++i) {
      scale = std::max(scale, std::fabs(values[i]));
    }
    for (std::size_t i = b * kInt8BlockSize; i < end; ++i) {
      // Within one quantisation step of the true value.
      ASSERT_LE(std::fabs(int8.payload[i] - values[i]), scale / 127 * 1.0001f) << i;
    }
  }
  // The block maximum itself is exact.
  EXPECT_FLOAT_EQ(int8.payload[5], 3.0f);

  const Update topk = RoundTrip(Compressed("topk:0.01", values), Limits{n});
  ASSERT_EQ(topk.payload.size(), n);
  std::size_t sent = 0;
  float smallest_sent = kInf, largest_unsent = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (topk.payload[i] != 0) {
      ++sent;
      ASSERT_EQ(topk.payload[i], values[i]);  // exact
      smallest_sent = std::min(smallest_sent, std::fabs(values[i]));
    } else {
      largest_unsent = std::max(largest_unsent, std::fabs(values[i]));
    }
  }
  EXPECT_EQ(sent, 1018u);
  EXPECT_GE(smallest_sent, largest_unsent);
}

TEST(UpdateCodecTest, Int8StochasticRoundingIsUnbiased) {
  // One value a third of a step above a level, in a block whose scale is 1:
  // its mean over many encodings converges to the value, not to the level.
  const std::vector<float> values = {1.0f, (10 + 1.0f / 3) / 127};
  double sum = 0;
  std::mt19937_64 rng(3);
  const int trials = 20000;
  for (int t = 0; t < trials; ++t) {
    Update u = Compressed("int8", values, static_cast<std::uint64_t>(t));
    sum += RoundTrip(std::move(u)).payload[1];
  }
  EXPECT_NEAR(sum / trials, values[1], 0.02 / 127);
}

TEST(UpdateCodecTest, CompressedSizesAreAsDocumented) {
  const std::size_t n = 101770;
  const std::vector<float> values = Gaussian(n, 2);
  EXPECT_EQ(Compressed("fp16", values).encoded.bytes.size(), 2 * n);
  EXPECT_EQ(Compressed("int8", values).encoded.bytes.size(), n + 4 * ((n + 255) / 256));
  EXPECT_EQ(Compressed("topk:0.01", values).encoded.bytes.size(), 8u * 1018);
}

TEST(UpdateCodecTest, RefusesAnEncodingThatIsNotThePlans) {
  const std::vector<float> values = Gaussian(300, 3);
  Limits limits{300};
  limits.update_encoding = TensorEncoding::kInt8;
  EXPECT_EQ(RoundTrip(Compressed("int8", values), limits).payload.size(), 300u);
  for (const std::string other : {"fp16", "topk:0.1"}) {
    const DecodeError e = Refused(Encode(Compressed(other, values)), limits);
    EXPECT_EQ(e.reason, RejectReason::kBadField) << other;
  }
  Update plain = Compressed("fp16", values);
  plain.encoded = {};
  plain.payload = values;
  EXPECT_EQ(Refused(Encode(std::move(plain)), limits).reason, RejectReason::kBadField);
}

TEST(UpdateCodecTest, RefusesMalformedHeaders) {
  const std::vector<float> values = Gaussian(300, 4);
  const Update int8 = Compressed("int8", values);
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    RejectReason reason;
  };
  const std::vector<Case> cases = {
      {"unknown encoding", [](json& h) { h["encoding"] = "int4"; }, RejectReason::kBadField},
      {"encoding not a string", [](json& h) { h["encoding"] = 8; }, RejectReason::kBadField},
      {"count missing", [](json& h) { h.erase("count"); }, RejectReason::kBadField},
      {"count negative", [](json& h) { h["count"] = -1; }, RejectReason::kBadField},
      {"count a string", [](json& h) { h["count"] = "300"; }, RejectReason::kBadField},
      {"block missing", [](json& h) { h.erase("block"); }, RejectReason::kBadField},
      {"block zero", [](json& h) { h["block"] = 0; }, RejectReason::kBadField},
      {"block huge", [](json& h) { h["block"] = kMaxInt8Block + 1; }, RejectReason::kBadField},
      {"block changed", [](json& h) { h["block"] = 128; }, RejectReason::kWrongSize},
      {"count changed", [](json& h) { h["count"] = 299; }, RejectReason::kWrongSize},
      {"count over the limit", [](json& h) { h["count"] = std::uint64_t{1} << 40; },
       RejectReason::kOversize},
      {"fp32 claimed", [](json& h) { h["encoding"] = "fp32"; }, RejectReason::kWrongSize},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Refused(Tampered(int8, c.edit), Limits{300}).reason, c.reason) << c.what;
  }
  // The model's size is enforced on the dense count.
  EXPECT_EQ(Refused(Encode(int8), Limits{301}).reason, RejectReason::kWrongSize);
}

TEST(UpdateCodecTest, RefusesMalformedFp16Frames) {
  const std::vector<float> values = Gaussian(10, 5);
  const Update u = Compressed("fp16", values);
  const auto keep = [](json&) {};
  std::vector<std::uint8_t> bytes = TensorBytes(u);
  bytes.pop_back();
  EXPECT_EQ(Refused(Tampered(u, keep, bytes)).reason, RejectReason::kWrongSize);
  bytes = TensorBytes(u);
  bytes.push_back(0);
  bytes.push_back(0);
  EXPECT_EQ(Refused(Tampered(u, keep, bytes)).reason, RejectReason::kWrongSize);
  for (const unsigned bad : {0x7c00u, 0xfc00u, 0x7e00u, 0x7c01u}) {  // +-Inf, NaNs
    bytes = TensorBytes(u);
    bytes[6] = static_cast<std::uint8_t>(bad & 0xff);
    bytes[7] = static_cast<std::uint8_t>(bad >> 8);
    const DecodeError e = Refused(Tampered(u, keep, bytes));
    EXPECT_EQ(e.reason, RejectReason::kNonFinite) << bad;
    EXPECT_NE(e.detail.find("value 3"), std::string::npos) << e.detail;
  }
}

TEST(UpdateCodecTest, RefusesMalformedInt8Frames) {
  const std::vector<float> values = Gaussian(300, 6);  // two blocks: 8 bytes of scales
  const Update u = Compressed("int8", values);
  const auto keep = [](json&) {};
  std::vector<std::uint8_t> bytes = TensorBytes(u);
  ASSERT_EQ(bytes.size(), 8u + 300);
  bytes.pop_back();
  EXPECT_EQ(Refused(Tampered(u, keep, bytes)).reason, RejectReason::kWrongSize);
  for (const float scale : {kInf, -kInf, std::numeric_limits<float>::quiet_NaN()}) {
    bytes = TensorBytes(u);
    PutLe32(bytes, 4, std::bit_cast<std::uint32_t>(scale));
    EXPECT_EQ(Refused(Tampered(u, keep, bytes)).reason, RejectReason::kNonFinite) << scale;
  }
  bytes = TensorBytes(u);
  PutLe32(bytes, 0, std::bit_cast<std::uint32_t>(-1.0f));
  EXPECT_EQ(Refused(Tampered(u, keep, bytes)).reason, RejectReason::kBadField);
  bytes = TensorBytes(u);
  bytes[8 + 299] = 0x80;  // -128
  EXPECT_EQ(Refused(Tampered(u, keep, bytes)).reason, RejectReason::kBadField);
}

TEST(UpdateCodecTest, RefusesMalformedTopKFrames) {
  std::vector<float> values(100, 0.0f);
  values[10] = 1;
  values[20] = -2;
  values[30] = 3;
  const Update u = Compressed("topk:0.03", values);  // indices 10, 20, 30
  const auto keep = [](json&) {};
  std::vector<std::uint8_t> bytes = TensorBytes(u);
  ASSERT_EQ(bytes.size(), 24u);
  const Update back = RoundTrip(u);
  EXPECT_EQ(back.payload, values);

  bytes.pop_back();
  EXPECT_EQ(Refused(Tampered(u, keep, bytes)).reason, RejectReason::kWrongSize);
  struct Case {
    const char* what;
    std::size_t at;  // byte offset of the 32-bit word to overwrite
    std::uint32_t value;
    RejectReason reason;
  };
  const std::vector<Case> cases = {
      {"unsorted", 0, 25, RejectReason::kBadField},
      {"duplicate", 4, 10, RejectReason::kBadField},
      {"out of range", 8, 100, RejectReason::kBadField},
      {"far out of range", 8, 0xffffffffu, RejectReason::kBadField},
      {"NaN value", 16, 0x7fc00000u, RejectReason::kNonFinite},
      {"Inf value", 20, 0xff800000u, RejectReason::kNonFinite},
  };
  for (const Case& c : cases) {
    bytes = TensorBytes(u);
    PutLe32(bytes, c.at, c.value);
    EXPECT_EQ(Refused(Tampered(u, keep, bytes)).reason, c.reason) << c.what;
  }
  // More entries than the dense count.
  const auto small = [](json& h) { h["count"] = 2; };
  EXPECT_EQ(Refused(Tampered(u, small)).reason, RejectReason::kWrongSize);
  // No entries at all is a zero update, and well-formed.
  const std::vector<std::uint8_t> none;
  auto frames = Tampered(u, keep, none);
  DecodeResult r = Decode(frames);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<Update>(r.message()).payload, std::vector<float>(100, 0.0f));
}

TEST(UpdateCodecTest, EncodingIsDeterministicForAGivenRngSeed) {
  const std::vector<float> values = Gaussian(1000, 8);
  EXPECT_EQ(Compressed("int8", values, 1).encoded.bytes,
            Compressed("int8", values, 1).encoded.bytes);
  EXPECT_NE(Compressed("int8", values, 1).encoded.bytes,
            Compressed("int8", values, 2).encoded.bytes);
}

}  // namespace
}  // namespace fedsgd::wire
