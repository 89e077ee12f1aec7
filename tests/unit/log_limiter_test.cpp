// LogLimiter with a hand-driven clock.
#include "fedsgd/log_limiter.h"

#include <gtest/gtest.h>

namespace fedsgd {
namespace {

TEST(LogLimiterTest, WritesNLinesPerKeyThenOneSummary) {
  LogLimiter limiter(3, 10);
  int written = 0;
  for (int i = 0; i < 38096; ++i) written += limiter.Allow("malformed", 0.0001 * i);
  EXPECT_EQ(written, 3);
  EXPECT_TRUE(limiter.TakeSuppressed(5).empty()) << "the interval has not ended";
  const auto held = limiter.TakeSuppressed(10);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].key, "malformed");
  EXPECT_EQ(held[0].count, 38093u);
  EXPECT_EQ(limiter.Summary(held[0].count), "... and 38093 more like this in the last 10 s");
  EXPECT_TRUE(limiter.TakeSuppressed(100).empty()) << "reported once";
  EXPECT_TRUE(limiter.Allow("malformed", 100)) << "a new interval";
}

TEST(LogLimiterTest, KeysAreLimitedApart) {
  LogLimiter limiter(1, 10);
  EXPECT_TRUE(limiter.Allow("a", 0));
  EXPECT_FALSE(limiter.Allow("a", 1));
  EXPECT_TRUE(limiter.Allow("b", 1));
  // a's interval has ended with a line held back: until its summary is
  // taken, lines keep counting into it, so the summary precedes them.
  EXPECT_FALSE(limiter.Allow("a", 11));
  const auto held = limiter.TakeSuppressed(11);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].key, "a");
  EXPECT_EQ(held[0].count, 2u);
  EXPECT_TRUE(limiter.Allow("a", 11));
}

TEST(LogLimiterTest, AQuietKeyStartsANewIntervalWithoutSummary) {
  LogLimiter limiter(2, 10);
  EXPECT_TRUE(limiter.Allow("k", 0));
  EXPECT_TRUE(limiter.Allow("k", 1));
  EXPECT_TRUE(limiter.TakeSuppressed(20).empty());
  EXPECT_TRUE(limiter.Allow("k", 20));
  EXPECT_TRUE(limiter.Allow("k", 21));
  EXPECT_FALSE(limiter.Allow("k", 22));
}

}  // namespace
}  // namespace fedsgd
