#include "secure_gaussian.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace fedsgd {
namespace {

TEST(SecureGaussianTest, MomentsOfAMillionSamplesAreStandardNormal) {
  SecureGaussian g;
  constexpr int kN = 1'000'000;
  double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
  for (int i = 0; i < kN; ++i) {
    const double x = g.Next();
    ASSERT_TRUE(std::isfinite(x));
    s1 += x;
    s2 += x * x;
    s3 += x * x * x;
    s4 += x * x * x * x;
  }
  const double mean = s1 / kN;
  const double variance = s2 / kN - mean * mean;
  const double skewness = s3 / kN / std::pow(variance, 1.5);
  const double kurtosis = s4 / kN / (variance * variance);
  // Standard errors at n = 1e6: mean 0.001, variance 0.0014, skewness
  // 0.0024, kurtosis 0.0049; the bounds are 5 of them.
  EXPECT_NEAR(mean, 0.0, 0.005);
  EXPECT_NEAR(variance, 1.0, 0.007);
  EXPECT_NEAR(skewness, 0.0, 0.012);
  EXPECT_NEAR(kurtosis, 3.0, 0.025);
}

TEST(SecureGaussianTest, TailsHaveTheNormalShare) {
  SecureGaussian g;
  constexpr int kN = 200'000;
  int beyond2 = 0;
  for (int i = 0; i < kN; ++i) beyond2 += std::abs(g.Next()) > 2;
  // P(|X| > 2) = 0.0455; standard error 0.00047.
  EXPECT_NEAR(static_cast<double>(beyond2) / kN, 0.0455, 0.0025);
}

TEST(SecureGaussianTest, UniformStaysInsideTheOpenInterval) {
  SecureGaussian g;
  double lo = 1, hi = 0, sum = 0;
  for (int i = 0; i < 100'000; ++i) {
    const double u = g.Uniform();
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
  }
  EXPECT_GT(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  EXPECT_NEAR(sum / 100'000, 0.5, 0.005);
}

TEST(SecureGaussianTest, TwoInstancesNeverRepeatEachOther) {
  // A seeded generator constructed twice gives the same stream; a CSPRNG
  // must not.
  SecureGaussian a, b;
  std::vector<double> xa(1000), xb(1000);
  for (double& x : xa) x = a.Next();
  for (double& x : xb) x = b.Next();
  int equal = 0;
  for (std::size_t i = 0; i < xa.size(); ++i) equal += xa[i] == xb[i];
  EXPECT_EQ(equal, 0);
  EXPECT_NE(xa, xb);
}

TEST(SecureGaussianTest, AddNoiseScalesByTheStandardDeviation) {
  SecureGaussian g;
  std::vector<float> v(200'000, 5.0f);
  g.AddNoise(v, 0.5);
  double s1 = 0, s2 = 0;
  for (float x : v) {
    s1 += x;
    s2 += static_cast<double>(x) * x;
  }
  const double mean = s1 / static_cast<double>(v.size());
  const double stddev = std::sqrt(s2 / static_cast<double>(v.size()) - mean * mean);
  EXPECT_NEAR(mean, 5.0, 0.01);
  EXPECT_NEAR(stddev, 0.5, 0.01);
}

}  // namespace
}  // namespace fedsgd
