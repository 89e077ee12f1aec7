// UpdateCompressor: error feedback for topk (nothing is lost: what was sent
// plus the residual is what was trained), when the residual is kept and
// when it is reset, and the other codecs passing through.
#include "update_compressor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "fedsgd/wire.h"

namespace fedsgd {
namespace {

// The dense values an encoded tensor carries, through the real decoder.
std::vector<float> Decoded(const wire::EncodedTensor& t) {
  wire::Update u;
  u.device = "d";
  u.samples = 1;
  u.encoded = t;
  auto frames = wire::Encode(std::move(u));
  wire::DecodeResult r = wire::Decode(frames);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().detail);
  return r.ok() ? std::get<wire::Update>(r.message()).payload : std::vector<float>();
}

std::vector<float> Random(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0, 1);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(UpdateCompressorTest, TopKErrorFeedbackLosesNothing) {
  const std::size_t n = 1000;
  UpdateCompressor c(1);
  c.Prepare("run1", wire::UpdateCodec::Parse("topk:0.01"), n);
  std::vector<double> trained(n, 0), delivered(n, 0);
  for (int step = 0; step < 50; ++step) {
    const std::vector<float> update = Random(n, static_cast<std::uint64_t>(step));
    const wire::EncodedTensor t = c.Compress(update);
    // k = 10: a count, 10 float32 values and 10 varint gaps of 1 or 2 bytes.
    EXPECT_GE(t.bytes.size(), 4u + 5 * 10);
    EXPECT_LE(t.bytes.size(), 4u + 6 * 10);
    const std::vector<float> sent = Decoded(t);
    ASSERT_EQ(sent.size(), n);
    for (std::size_t i = 0; i < n; ++i) {
      trained[i] += update[i];
      delivered[i] += sent[i];
    }
    // Sent so far + residual = trained so far, coordinate by coordinate.
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_NEAR(delivered[i] + c.residual()[i], trained[i], 1e-3) << step << " " << i;
    }
  }
}

TEST(UpdateCompressorTest, ResidualSurvivesTheSameRunAndIsResetForAnother) {
  const std::size_t n = 100;
  const wire::UpdateCodec topk = wire::UpdateCodec::Parse("topk:0.1");
  UpdateCompressor c(1);
  c.Prepare("run1", topk, n);
  c.Compress(Random(n, 1));
  const std::vector<float> kept = c.residual();
  double norm = 0;
  for (const float v : kept) norm += std::fabs(v);
  EXPECT_GT(norm, 0);
  c.Prepare("run1", topk, n);  // a rejoin of the same run
  EXPECT_EQ(c.residual(), kept);
  c.Prepare("run2", topk, n);  // a new run
  EXPECT_EQ(c.residual(), std::vector<float>(n, 0.0f));
  c.Compress(Random(n, 2));
  c.Prepare("run2", wire::UpdateCodec::Parse("topk:0.2"), n);  // another codec
  EXPECT_EQ(c.residual(), std::vector<float>(n, 0.0f));
  c.Prepare("run2", wire::UpdateCodec::Parse("int8"), n);
  EXPECT_TRUE(c.residual().empty()) << "only topk keeps a residual";
}

TEST(UpdateCompressorTest, OtherCodecsCompressWithoutMemory) {
  const std::vector<float> update = Random(600, 3);
  UpdateCompressor c(1);
  c.Prepare("run1", wire::UpdateCodec::Parse("fp32"), update.size());
  EXPECT_FALSE(c.active());
  c.Prepare("run1", wire::UpdateCodec::Parse("fp16"), update.size());
  EXPECT_TRUE(c.active());
  const wire::EncodedTensor t = c.Compress(update);
  EXPECT_EQ(t.encoding, wire::TensorEncoding::kFp16);
  EXPECT_EQ(t.bytes.size(), 2 * update.size());
  EXPECT_EQ(c.Compress(update).bytes, t.bytes) << "fp16 has no memory";
  c.Prepare("run1", wire::UpdateCodec::Parse("int8"), update.size());
  const std::vector<float> back = Decoded(c.Compress(update));
  ASSERT_EQ(back.size(), update.size());
  EXPECT_NEAR(back[7], update[7], 0.05);
}

}  // namespace
}  // namespace fedsgd
