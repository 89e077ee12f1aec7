// Backoff: the daemon's reconnect delays grow to the cap, stay within the
// jitter bounds, start again after Reset(), and differ between devices.
#include "fedsgd/backoff.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace fedsgd {
namespace {

TEST(BackoffTest, GrowsToTheCapWithBoundedJitter) {
  Backoff b(0.25, 8.0, 0.25, 42);
  double base = 0.25;
  for (int i = 0; i < 10; ++i) {
    const double d = b.Next();
    EXPECT_GE(d, base * 0.75 - 1e-12) << i;
    EXPECT_LE(d, base * 1.25 + 1e-12) << i;
    base = std::min(8.0, base * 2);
  }
  b.Reset();
  EXPECT_LE(b.Next(), 0.25 * 1.25);
}

TEST(BackoffTest, JitterSpreadsAFleet) {
  Backoff a(1, 8, 0.25, 1), c(1, 8, 0.25, 2);
  EXPECT_NE(a.Next(), c.Next());
}

TEST(BackoffTest, StaysAtTheCap) {
  Backoff b(0.25, 8.0, 0.25, 7);
  for (int i = 0; i < 6; ++i) b.Next();  // 0.25 .. 8
  double lo = 1e9, hi = 0;
  for (int i = 0; i < 200; ++i) {
    const double d = b.Next();
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_GE(lo, 6.0 - 1e-12);
  EXPECT_LE(hi, 10.0 + 1e-12);
  EXPECT_LT(lo, 7.0) << "the jitter should use its range";
  EXPECT_GT(hi, 9.0) << "the jitter should use its range";
}

TEST(BackoffTest, NoJitterIsExact) {
  Backoff b(0.5, 3.0, 0.0, 1);
  EXPECT_DOUBLE_EQ(b.Next(), 0.5);
  EXPECT_DOUBLE_EQ(b.Next(), 1.0);
  EXPECT_DOUBLE_EQ(b.Next(), 2.0);
  EXPECT_DOUBLE_EQ(b.Next(), 3.0);
  EXPECT_DOUBLE_EQ(b.Next(), 3.0);
  b.Reset();
  EXPECT_DOUBLE_EQ(b.Next(), 0.5);
}

}  // namespace
}  // namespace fedsgd
