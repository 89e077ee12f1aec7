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
  // topk: a count, 1018 float32 values and 1018 varint gaps; random
  // indices a mean 100 apart take 1 byte (gap < 128) or 2.
  const std::size_t topk = Compressed("topk:0.01", values).encoded.bytes.size();
  EXPECT_GE(topk, 4u + 5 * 1018);
  EXPECT_LE(topk, 4u + 6 * 1018);
  EXPECT_LE(topk, TopKFrameBytesAtMost(1018));
  // Issue 10: the whole message, header included, >= 50x below fp32's.
  const auto frames = Encode(Compressed("topk:0.01", values));
  EXPECT_LE(50 * (frames[0].size() + frames[1].size()), 4 * n);
}

TEST(UpdateCodecTest, TopKFrameLayoutIsCountValuesThenVarintGaps) {
  std::vector<float> values(70000, 0.0f);
  // The first index 0, then gaps 1, 127, 128, 16384, 53359: varints of 1,
  // 2 and 3 bytes.
  const std::vector<std::uint32_t> at = {0, 1, 128, 256, 16640, 69999};
  for (std::size_t j = 0; j < at.size(); ++j) values[at[j]] = static_cast<float>(j + 1);
  const Update u = Compressed("topk:0.0000857", values);
  ASSERT_EQ(UpdateCodec::Parse("topk:0.0000857").TopKCount(values.size()), 6u);
  const std::vector<std::uint8_t> expected = [&] {
    std::vector<std::uint8_t> b(4 + 4 * 6);
    PutLe32(b, 0, 6);
    for (std::size_t j = 0; j < 6; ++j)
      PutLe32(b, 4 + 4 * j, std::bit_cast<std::uint32_t>(static_cast<float>(j + 1)));
    // 0, 1, 127, 128, 16384, 53359 as LEB128.
    const std::vector<std::uint8_t> varints = {0x00, 0x01, 0x7f, 0x80, 0x01, 0x80,
                                               0x80, 0x01, 0xef, 0xa0, 0x03};
    for (const std::uint8_t byte : varints) b.push_back(byte);
    return b;
  }();
  EXPECT_EQ(TensorBytes(u), expected);
  EXPECT_EQ(RoundTrip(u, Limits{values.size()}).payload, values);
}

TEST(UpdateCodecTest, TopKOfEveryEntryAndOfLargeIndicesRoundTrips) {
  const std::vector<float> values = Gaussian(1000, 11);
  EXPECT_EQ(RoundTrip(Compressed("topk:1", values)).payload, values);
  // One entry at the end of a large tensor: a 3-byte first index.
  std::vector<float> sparse(1u << 20, 0.0f);
  sparse.back() = -4;
  const Update u = Compressed("topk:0.0000001", sparse);
  EXPECT_EQ(TensorBytes(u).size(), 4u + 4 + 3);
  EXPECT_EQ(RoundTrip(u).payload, sparse);
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
  std::vector<float> values(200, 0.0f);
  values[10] = 1;
  values[20] = -2;
  values[150] = 3;
  const Update u = Compressed("topk:0.015", values);  // indices 10, 20, 150
  const auto keep = [](json&) {};
  // k = 3, values 1, -2, 3, then the gaps 10, 10, 130 (two bytes).
  const std::vector<std::uint8_t> good = TensorBytes(u);
  ASSERT_EQ(good.size(), 4u + 12 + 4);
  EXPECT_EQ(std::vector<std::uint8_t>(good.begin() + 16, good.end()),
            (std::vector<std::uint8_t>{10, 10, 0x82, 0x01}));
  EXPECT_EQ(RoundTrip(u).payload, values);

  struct Case {
    const char* what;
    std::vector<std::uint8_t> tensor;
    RejectReason reason;
  };
  const auto with = [&](std::size_t at, std::vector<std::uint8_t> bytes) {
    std::vector<std::uint8_t> b = good;
    b.resize(std::max(b.size(), at + bytes.size()));
    std::copy(bytes.begin(), bytes.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
    return b;
  };
  const auto count = [&](std::uint32_t k) {
    std::vector<std::uint8_t> b = good;
    PutLe32(b, 0, k);
    return b;
  };
  const auto value = [&](std::size_t j, std::uint32_t bits) {
    std::vector<std::uint8_t> b = good;
    PutLe32(b, 4 + 4 * j, bits);
    return b;
  };
  const auto gaps = [&](const std::vector<std::uint8_t>& varints) {
    std::vector<std::uint8_t> b = good;
    b.resize(16);  // the count and the values
    for (const std::uint8_t byte : varints) b.push_back(byte);
    return b;
  };
  const std::vector<Case> cases = {
      {"empty frame", {}, RejectReason::kWrongSize},
      {"count cut short", {3, 0, 0}, RejectReason::kWrongSize},
      {"more entries than values", count(201), RejectReason::kWrongSize},
      {"count 2^32 - 1", count(0xffffffffu), RejectReason::kWrongSize},
      {"too short for k varints", count(4), RejectReason::kWrongSize},
      {"too long for k varints", with(good.size(), std::vector<std::uint8_t>(12, 1)),
       RejectReason::kWrongSize},
      {"a byte after the last varint", with(good.size(), {0}), RejectReason::kWrongSize},
      {"ends inside a varint", gaps({10, 10, 0x82, 0x81}), RejectReason::kWrongSize},
      {"repeated index", gaps({10, 0, 0x82, 0x01}), RejectReason::kBadField},
      {"index == count", gaps({10, 10, 0xb4, 0x01}), RejectReason::kBadField},
      {"index far out of range", gaps({10, 10, 0xff, 0xff, 0xff, 0xff, 0x0f}),
       RejectReason::kBadField},
      {"first index out of range", gaps({0xc8, 0x01, 1, 1}), RejectReason::kBadField},
      {"varint over 32 bits", gaps({10, 10, 0xff, 0xff, 0xff, 0xff, 0x1f}),
       RejectReason::kBadField},
      {"varint of 6 bytes", gaps({10, 10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}),
       RejectReason::kBadField},
      {"varint not shortest", gaps({10, 10, 0x8a, 0x00}), RejectReason::kBadField},
      {"5-byte zero", gaps({0x80, 0x80, 0x80, 0x80, 0x00, 10, 130}), RejectReason::kBadField},
      {"NaN value", value(1, 0x7fc00000u), RejectReason::kNonFinite},
      {"Inf value", value(2, std::bit_cast<std::uint32_t>(-kInf)), RejectReason::kNonFinite},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Refused(Tampered(u, keep, c.tensor)).reason, c.reason) << c.what;
  }
  // More entries than the dense count (the header's count, this time).
  const auto small = [](json& h) { h["count"] = 2; };
  EXPECT_EQ(Refused(Tampered(u, small)).reason, RejectReason::kWrongSize);
  // No entries at all is a zero update, and well-formed.
  auto frames = Tampered(u, keep, std::vector<std::uint8_t>{0, 0, 0, 0});
  DecodeResult r = Decode(frames);
  ASSERT_TRUE(r.ok()) << r.error().detail;
  EXPECT_EQ(std::get<Update>(r.message()).payload, std::vector<float>(200, 0.0f));
  // A lone entry: k = 1, the value 1.0f, the first index 299 in 2 bytes.
  std::vector<float> one(300, 0.0f);
  one[299] = 1;
  const Update last = Compressed("topk:0.001", one);
  EXPECT_EQ(TensorBytes(last),
            (std::vector<std::uint8_t>{1, 0, 0, 0, 0, 0, 0x80, 0x3f, 0xab, 0x02}));
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
