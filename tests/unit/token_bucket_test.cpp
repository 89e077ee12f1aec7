// TokenBucket with a hand-driven clock.
#include "token_bucket.h"

#include <gtest/gtest.h>

namespace fedsgd {
namespace {

TEST(TokenBucketTest, AllowsABurstThenTheRate) {
  TokenBucket bucket(/*rate=*/2, /*burst=*/3);
  EXPECT_TRUE(bucket.Take(10));
  EXPECT_TRUE(bucket.Take(10));
  EXPECT_TRUE(bucket.Take(10));
  EXPECT_FALSE(bucket.Take(10)) << "the burst is spent";
  EXPECT_FALSE(bucket.Take(10.4)) << "0.8 of a token";
  EXPECT_TRUE(bucket.Take(10.5));
  EXPECT_FALSE(bucket.Take(10.5));
  // A long pause refills to the burst, not beyond.
  int allowed = 0;
  for (int i = 0; i < 10; ++i) allowed += bucket.Take(1000);
  EXPECT_EQ(allowed, 3);
}

TEST(TokenBucketTest, AFloodGetsTheRateAndNoMore) {
  TokenBucket bucket(50, 50);
  int allowed = 0;
  for (int i = 0; i < 10000; ++i) allowed += bucket.Take(i * 0.001);  // 1,000 a second for 10 s
  EXPECT_GE(allowed, 50 + 499);
  EXPECT_LE(allowed, 50 + 501);
}

TEST(TokenBucketTest, AClockGoingBackwardsAddsNothing) {
  TokenBucket bucket(1, 1);
  EXPECT_TRUE(bucket.Take(100));
  EXPECT_FALSE(bucket.Take(50));
  EXPECT_FALSE(bucket.Take(100.5));
  EXPECT_TRUE(bucket.Take(101));
}

}  // namespace
}  // namespace fedsgd
