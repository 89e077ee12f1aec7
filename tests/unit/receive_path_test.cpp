// The receive path without allocation (issue 11): Decode with a
// wire::TensorBuffer against the plain Decode, the allocation-free Update
// header reader against the general one, and the allocations themselves.
#include <gtest/gtest.h>

#include <bit>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>
#include <random>

#include "fedsgd/update_codec.h"
#include "fedsgd/wire.h"

// Counts operator new on this thread, for the allocation test below. Not
// under the sanitizers, which bring their own operator new.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define FEDSGD_COUNT_NEW 1
namespace {
thread_local long t_news = 0;
}
void* operator new(std::size_t size) {
  ++t_news;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
// GCC cannot see that this operator new above is malloc's.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop
#endif

namespace fedsgd::wire {
namespace {

using nlohmann::json;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

Update SomeUpdate(std::size_t n, std::uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 1);
  Update u;
  u.device = "dev-0.a_b";
  u.round = 3;
  u.model_version = 2;
  u.samples = 15000;
  u.loss = 0.25;
  u.kind = "delta";
  u.train_seconds = 1.5;
  for (std::size_t i = 0; i < n; ++i) u.payload.push_back(normal(rng));
  return u;
}

void ExpectSameFields(const Update& a, const Update& b) {
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.round, b.round);
  EXPECT_EQ(a.model_version, b.model_version);
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(std::bit_cast<std::uint64_t>(a.loss), std::bit_cast<std::uint64_t>(b.loss));
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.train_seconds, b.train_seconds);
  ASSERT_EQ(a.evaluation.has_value(), b.evaluation.has_value());
  if (a.evaluation) {
    EXPECT_EQ(a.evaluation->loss, b.evaluation->loss);
    EXPECT_EQ(a.evaluation->accuracy, b.evaluation->accuracy);
    EXPECT_EQ(a.evaluation->samples, b.evaluation->samples);
  }
  EXPECT_EQ(a.encoded.encoding, b.encoded.encoding);
  EXPECT_EQ(a.encoded.count, b.encoded.count);
  EXPECT_EQ(a.encoded.block, b.encoded.block);
}

void ExpectBitEqual(std::span<const float> a, std::span<const float> b) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size_bytes()), 0);
}

// Both decoders on the same frames: the same verdict, fields and values.
void ExpectSameDecode(std::vector<zmq::message_t>& frames, const Limits& limits,
                      TensorBuffer& tensor) {
  DecodeResult plain = Decode(frames, limits);
  DecodeResult buffered = Decode(frames, limits, tensor);
  ASSERT_EQ(plain.ok(), buffered.ok());
  if (!plain.ok()) {
    EXPECT_EQ(plain.error().reason, buffered.error().reason);
    EXPECT_EQ(plain.error().detail, buffered.error().detail);
    EXPECT_TRUE(tensor.values().empty());
    return;
  }
  ASSERT_EQ(plain.message().index(), buffered.message().index());
  if (const auto* p = std::get_if<Update>(&plain.message())) {
    const auto& b = std::get<Update>(buffered.message());
    ExpectSameFields(*p, b);
    EXPECT_TRUE(b.payload.empty());
    ExpectBitEqual(p->payload, tensor.values());
  }
}

TEST(ReceivePathTest, BufferedDecodeEqualsPlainDecodeAndBorrowsTheFrame) {
  TensorBuffer tensor;
  EXPECT_TRUE(tensor.values().empty());
  for (const std::size_t n : {1u, 5u, 1000u, 101770u}) {
    Update u = SomeUpdate(n, static_cast<std::uint32_t>(n));
    u.kind = n % 2 ? "gradient" : "delta";
    if (n == 1000) u.evaluation = HeldOutEvaluation{0.5, 0.875, 300};
    auto frames = Encode(u);
    ExpectSameDecode(frames, Limits{n}, tensor);
    // The fp32 frame is viewed, not copied.
    EXPECT_TRUE(tensor.borrowed());
    EXPECT_EQ(static_cast<const void*>(tensor.values().data()), frames[1].data());
    EXPECT_EQ(tensor.capacity_bytes(), 0u);
  }
}

TEST(ReceivePathTest, UnalignedFramesAreCopiedIntoTheReusedStorage) {
  const Update u = SomeUpdate(1000);
  auto frames = Encode(u);
  // The same bytes at an odd address inside a larger frame's buffer.
  std::vector<unsigned char> bytes(4001);
  std::memcpy(bytes.data() + 1, frames[1].data(), 4000);
  frames[1] = zmq::message_t(bytes.data() + 1, 4000, nullptr, nullptr);
  TensorBuffer tensor;
  ExpectSameDecode(frames, Limits{1000}, tensor);
  EXPECT_FALSE(tensor.borrowed());
  ExpectBitEqual(tensor.values(), u.payload);
  const float* storage = tensor.values().data();
  ExpectSameDecode(frames, Limits{1000}, tensor);
  EXPECT_EQ(tensor.values().data(), storage);  // reused, not reallocated
}

TEST(ReceivePathTest, CompressedEncodingsDecodeIntoTheStorageAsBefore) {
  TensorBuffer tensor;
  std::mt19937_64 rng(7);
  for (const char* codec : {"fp16", "int8", "topk:0.1"}) {
    const UpdateCodec c = UpdateCodec::Parse(codec);
    Update u = SomeUpdate(2000);
    u.encoded = EncodeTensor(c, u.payload, rng);
    auto frames = Encode(u);
    Limits limits{2000};
    limits.update_encoding = c.encoding;
    ExpectSameDecode(frames, limits, tensor);
    EXPECT_FALSE(tensor.borrowed()) << codec;
    EXPECT_EQ(tensor.values().size(), 2000u) << codec;
    const float* storage = tensor.values().data();
    ExpectSameDecode(frames, limits, tensor);
    EXPECT_EQ(tensor.values().data(), storage) << codec;
  }
}

TEST(ReceivePathTest, RefusesExactlyAsThePlainDecode) {
  TensorBuffer tensor;
  // A success first, so a refusal must also clear what it showed.
  auto good = Encode(SomeUpdate(1000));
  ExpectSameDecode(good, Limits{1000}, tensor);
  ASSERT_FALSE(tensor.values().empty());

  auto wrong_size = Encode(SomeUpdate(999));
  ExpectSameDecode(wrong_size, Limits{1000}, tensor);
  auto oversize = Encode(SomeUpdate(1001));
  ExpectSameDecode(oversize, Limits{0, 1000}, tensor);
  for (const std::size_t bytes : {1u, 2u, 3u, 7u, 4001u}) {
    auto ragged = Encode(SomeUpdate(1000));
    ragged[1] = zmq::message_t(bytes);
    ExpectSameDecode(ragged, Limits{}, tensor);
  }
  for (const float poison : {kNaN, -kNaN, kInf, -kInf, std::bit_cast<float>(0x7f800001u)}) {
    for (const std::size_t at : {0u, 777u, 999u}) {
      Update u = SomeUpdate(1000);
      u.payload[at] = poison;
      auto frames = Encode(u);
      ExpectSameDecode(frames, Limits{1000}, tensor);
      DecodeResult r = Decode(frames, Limits{1000}, tensor);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.error().reason, RejectReason::kNonFinite);
    }
  }
  // Another encoding than the plan's is bad_field, before the tensor.
  Limits fp16_only{1000};
  fp16_only.update_encoding = TensorEncoding::kFp16;
  ExpectSameDecode(good, fp16_only, tensor);
  EXPECT_EQ(Decode(good, fp16_only, tensor).error().reason, RejectReason::kBadField);
  // Other messages take their tensors as always and leave the buffer empty.
  auto model = Encode(Model{"r", 1, 1, false, std::vector<float>(3, 1.0f)});
  DecodeResult m = Decode(model, Limits{}, tensor);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(std::get<Model>(m.message()).params.size(), 3u);
  EXPECT_TRUE(tensor.values().empty());
}

// The allocation-free header reader accepts only what the general path
// reads the same way. A header with an extra unknown key always takes the
// general path (which ignores such keys), so it is the reference.
TEST(ReceivePathTest, PlainHeaderReaderAgreesWithTheGeneralPath) {
  std::mt19937 rng(3);
  Update base = SomeUpdate(4);
  base.device = std::string(64, 'd');
  std::vector<Update> variants = {SomeUpdate(4), base};
  variants.back().evaluation = HeldOutEvaluation{0.5, 1, 7};
  variants.push_back(SomeUpdate(4));
  variants.back().loss = 1e300;  // a float64 on the wire
  TensorBuffer tensor;
  int accepted = 0;
  for (int trial = 0; trial < 30000; ++trial) {
    auto frames = Encode(variants[trial % variants.size()]);
    std::vector<std::uint8_t> header(
        static_cast<const std::uint8_t*>(frames[0].data()),
        static_cast<const std::uint8_t*>(frames[0].data()) + frames[0].size());
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; trial > 0 && k < flips; ++k)
      header[rng() % header.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
    frames[0] = zmq::message_t(header.data(), header.size());
    DecodeResult fast = Decode(frames, Limits{4}, tensor);

    json h;
    try {  // nlohmann throws on some hostile lengths even so (Decode probes first)
      h = json::from_cbor(header, /*strict=*/true, /*allow_exceptions=*/false);
    } catch (const json::exception&) {
      h = json(json::value_t::discarded);
    }
    if (h.is_discarded() || !h.is_object()) {
      EXPECT_FALSE(fast.ok()) << trial;
      continue;
    }
    json extended = h;
    extended["zz_unknown"] = 0;
    auto reference_frames = Encode(SomeUpdate(4));
    const std::vector<std::uint8_t> cbor = json::to_cbor(extended);
    reference_frames[0] = zmq::message_t(cbor.data(), cbor.size());
    reference_frames[1] = zmq::message_t(frames[1].data(), frames[1].size());
    DecodeResult reference = Decode(reference_frames, Limits{4});
    if (fast.ok()) {
      ++accepted;
      ASSERT_TRUE(reference.ok()) << trial;
      ASSERT_TRUE(std::holds_alternative<Update>(reference.message()));
      ExpectSameFields(std::get<Update>(fast.message()), std::get<Update>(reference.message()));
    }
  }
  EXPECT_GT(accepted, 3);  // the unmutated headers at least
}

#ifdef FEDSGD_COUNT_NEW
TEST(ReceivePathTest, AnFp32UpdateDecodesWithoutAllocating) {
  auto frames = Encode(SomeUpdate(101770));
  const Limits limits{101770};
  TensorBuffer tensor;
  ASSERT_TRUE(Decode(frames, limits, tensor).ok());  // warm: nothing is kept between calls anyway
  const long before = t_news;
  for (int i = 0; i < 10; ++i) {
    DecodeResult r = Decode(frames, limits, tensor);
    ASSERT_TRUE(r.ok());
  }
  EXPECT_EQ(t_news - before, 0);
  // The plain Decode allocates the payload (a sanity check of the counter).
  const long plain = t_news;
  ASSERT_TRUE(Decode(frames, limits).ok());
  EXPECT_GE(t_news - plain, 1);
}
#endif

}  // namespace
}  // namespace fedsgd::wire
