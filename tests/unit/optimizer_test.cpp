// SGD kernels and learning-rate schedules: the step math (momentum, L2
// weight decay, L1), the shared (hogwild) step against the plain one, a
// multithreaded smoke test that must stay quiet under ThreadSanitizer, and
// every schedule with its text form and refusals.
#include "fedsgd/optimizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

TEST(OptimizerTest, PlainStep) {
  SgdOptions o;
  std::vector<float> w = {1, -2, 0}, g = {0.5f, 0.5f, 1};
  SgdStep(w.data(), g.data(), nullptr, 3, 0.1f, o);
  EXPECT_FLOAT_EQ(w[0], 0.95f);
  EXPECT_FLOAT_EQ(w[1], -2.05f);
  EXPECT_FLOAT_EQ(w[2], -0.1f);
}

TEST(OptimizerTest, WeightDecayAndL1) {
  SgdOptions o;
  o.weight_decay = 0.1f;
  o.l1 = 0.2f;
  std::vector<float> w = {1, -2, 0}, g = {0.5f, 0.5f, 1};
  SgdStep(w.data(), g.data(), nullptr, 3, 0.1f, o);
  EXPECT_FLOAT_EQ(w[0], 1 - 0.1f * (0.5f + 0.1f * 1 + 0.2f));
  EXPECT_FLOAT_EQ(w[1], -2 - 0.1f * (0.5f - 0.2f - 0.2f));
  EXPECT_FLOAT_EQ(w[2], -0.1f);  // sign(0) = 0: L1 does not push a zero weight
}

TEST(OptimizerTest, MomentumAccumulatesTheRegularisedGradient) {
  SgdOptions o;
  o.momentum = 0.9f;
  std::vector<float> w = {1}, v = {0}, g = {1};
  SgdStep(w.data(), g.data(), v.data(), 1, 0.1f, o);
  EXPECT_FLOAT_EQ(v[0], 1.0f);
  EXPECT_FLOAT_EQ(w[0], 0.9f);
  SgdStep(w.data(), g.data(), v.data(), 1, 0.1f, o);
  EXPECT_FLOAT_EQ(v[0], 1.9f);
  EXPECT_FLOAT_EQ(w[0], 0.9f - 0.19f);

  // With L2 and L1: g' = g + wd w + l1 sign(w), v = mu v + g', w -= lr v.
  o.weight_decay = 0.5f;
  o.l1 = 0.25f;
  w = {2};
  v = {1};
  g = {-1};
  SgdStep(w.data(), g.data(), v.data(), 1, 0.1f, o);
  const float g1 = -1 + 0.5f * 2 + 0.25f;
  EXPECT_FLOAT_EQ(v[0], 0.9f * 1 + g1);
  EXPECT_FLOAT_EQ(w[0], 2 - 0.1f * (0.9f + g1));
}

TEST(OptimizerTest, NoVelocityBufferMeansNoMomentum) {
  // v may be null only when momentum == 0; a null v with momentum set
  // degrades to the plain step rather than dereferencing it.
  SgdOptions o;
  std::vector<float> w = {1}, g = {1};
  SgdStep(w.data(), g.data(), nullptr, 1, 0.5f, o);
  EXPECT_FLOAT_EQ(w[0], 0.5f);
  o.momentum = 0.9f;
  SgdStep(w.data(), g.data(), nullptr, 1, 0.5f, o);
  EXPECT_FLOAT_EQ(w[0], 0.0f);
}

std::vector<float> Normal(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(OptimizerTest, SharedStepEqualsPlainStepOnOneThread) {
  // Every specialisation of the shared loop: momentum on/off x
  // regularisation on/off. Odd length, so no vector-width tail is special.
  const std::vector<float> w = Normal(1001, 1), g = Normal(1001, 2);
  for (float momentum : {0.0f, 0.5f}) {
    for (float decay : {0.0f, 0.01f}) {
      for (float l1 : {0.0f, 0.001f}) {
        SgdOptions o;
        o.momentum = momentum;
        o.weight_decay = decay;
        o.l1 = l1;
        std::vector<float> a = w, b = w, va(w.size()), vb(w.size());
        for (int i = 0; i < 3; ++i) {
          SgdStep(a.data(), g.data(), va.data(), a.size(), 0.05f, o);
          SgdStepShared(b.data(), g.data(), vb.data(), b.size(), 0.05f, o);
        }
        for (std::size_t i = 0; i < a.size(); ++i) {
          ASSERT_NEAR(a[i], b[i], 1e-6f * (1 + std::abs(a[i])))
              << "momentum " << momentum << " decay " << decay << " l1 " << l1 << " at " << i;
          ASSERT_NEAR(va[i], vb[i], 1e-6f * (1 + std::abs(va[i])));
        }
      }
    }
  }
}

TEST(OptimizerTest, LoadSharedCopiesExactly) {
  std::vector<float> w = Normal(777, 3), out(777);
  LoadShared(w.data(), out.data(), w.size());
  EXPECT_EQ(out, w);
}

TEST(OptimizerTest, SharedStepFromManyThreadsIsRaceFree) {
  // Built with -DFEDSGD_SANITIZE=thread, TSan must stay quiet: relaxed
  // atomic_ref accesses from several threads are not data races. Four threads
  // snapshot and update the same weights (and, in the second pass, the same
  // velocity), as the hogwild trainer does.
  constexpr int kThreads = 4, kSteps = 200;
  constexpr std::size_t kSize = 4096;
  for (float momentum : {0.0f, 0.5f}) {
    std::vector<float> w(kSize, 0.0f), v(kSize, 0.0f), g(kSize, 1.0f);
    SgdOptions o;
    o.momentum = momentum;
    std::atomic<int> ready{0};
    {
      std::vector<std::jthread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
          ready.fetch_add(1);
          while (ready.load() < kThreads) std::this_thread::yield();
          std::vector<float> snapshot(kSize);
          for (int i = 0; i < kSteps; ++i) {
            LoadShared(w.data(), snapshot.data(), kSize);
            SgdStepShared(w.data(), g.data(), momentum != 0 ? v.data() : nullptr, kSize, 0.001f, o);
          }
        });
      }
    }
    // Hogwild may lose concurrent steps, never invent any: every stored
    // value is some loaded value minus one step, so a weight moved by at
    // least one step and at most by all of them (|v| <= 1 / (1 - momentum)).
    // Lost steps are rare (a thread must be preempted between its load and
    // store of that weight), so on average most steps land.
    const float step = 0.001f / (1 - momentum);
    double mean = 0;
    for (float x : w) {
      ASSERT_TRUE(std::isfinite(x));
      EXPECT_LE(x, -0.001f + 1e-6f);
      EXPECT_GE(x, -step * kSteps * kThreads - 1e-4f);
      mean += x;
    }
    mean /= kSize;
    EXPECT_LE(mean, -0.001 * kSteps);
  }
}

TEST(LrScheduleTest, Constant) {
  const LrSchedule s = LrSchedule::Parse("constant");
  EXPECT_EQ(s.kind, LrSchedule::Kind::kConstant);
  EXPECT_DOUBLE_EQ(s.Rate(0.1, 0), 0.1);
  EXPECT_DOUBLE_EQ(s.Rate(0.1, 1000000), 0.1);
  EXPECT_EQ(LrSchedule().ToString(), "constant");
  EXPECT_DOUBLE_EQ(LrSchedule().Rate(0.3, 5), 0.3);
}

TEST(LrScheduleTest, Step) {
  const LrSchedule s = LrSchedule::Parse("step:10:0.5");
  EXPECT_EQ(s.kind, LrSchedule::Kind::kStep);
  EXPECT_EQ(s.step_size, 10);
  EXPECT_DOUBLE_EQ(s.Rate(0.1, 0), 0.1);
  EXPECT_DOUBLE_EQ(s.Rate(0.1, 9), 0.1);
  EXPECT_DOUBLE_EQ(s.Rate(0.1, 10), 0.05);
  EXPECT_DOUBLE_EQ(s.Rate(0.1, 25), 0.025);
}

TEST(LrScheduleTest, Exponential) {
  const LrSchedule s = LrSchedule::Parse("exp:0.99");
  EXPECT_EQ(s.kind, LrSchedule::Kind::kExponential);
  EXPECT_DOUBLE_EQ(s.Rate(0.1, 0), 0.1);
  EXPECT_NEAR(s.Rate(0.1, 100), 0.1 * std::pow(0.99, 100), 1e-15);
}

TEST(LrScheduleTest, InverseTime) {
  const LrSchedule s = LrSchedule::Parse("inv:0.1");
  EXPECT_EQ(s.kind, LrSchedule::Kind::kInverseTime);
  EXPECT_DOUBLE_EQ(s.power, 1.0);
  EXPECT_DOUBLE_EQ(s.Rate(1.0, 0), 1.0);
  EXPECT_DOUBLE_EQ(s.Rate(1.0, 10), 0.5);
  EXPECT_DOUBLE_EQ(LrSchedule::Parse("inv:0.1:2").Rate(1.0, 10), 0.25);
  EXPECT_DOUBLE_EQ(LrSchedule::Parse("inv:0.1:0.5").Rate(1.0, 30), 0.5);
}

TEST(LrScheduleTest, TextRoundTrip) {
  for (const char* text : {"constant", "step:10:0.5", "exp:0.99", "inv:0.1", "inv:0.1:2",
                           "step:1000:0.316", "inv:0:0.75"}) {
    const LrSchedule s = LrSchedule::Parse(text);
    EXPECT_EQ(s.ToString(), text);  // canonical and short
    const LrSchedule back = LrSchedule::Parse(s.ToString());
    EXPECT_EQ(back.kind, s.kind);
    EXPECT_EQ(back.gamma, s.gamma);
    EXPECT_EQ(back.step_size, s.step_size);
    EXPECT_EQ(back.power, s.power);
  }
  EXPECT_EQ(LrSchedule::Parse("inv:0.1:1").ToString(), "inv:0.1");
  EXPECT_EQ(LrSchedule::Parse("exp:1e-1").ToString(), "exp:0.1");
}

TEST(LrScheduleTest, RefusesBadText) {
  for (const char* bad : {"",
                          "linear",
                          "Constant",
                          "constant:1",
                          "step",
                          "step:10",
                          "step:0:0.5",
                          "step:-5:0.5",
                          "step:2.5:0.5",
                          "step:10:1.5",
                          "step:10:0",
                          "step:10:0.5:1",
                          "exp",
                          "exp:",
                          "exp:-1",
                          "exp:0",
                          "exp:2",
                          "exp:0.9x",
                          "exp:nan",
                          "exp:inf",
                          "inv",
                          "inv:x",
                          "inv:-0.1",
                          "inv:0.1:0",
                          "inv:0.1:-1",
                          "inv:0.1:2:3",
                          "step:10:0.5 ",
                          " exp:0.9",
                          "step:1.6e57:0.5",
                          "step:inf:0.5",
                          "step:nan:0.5",
                          "step:1000000001:0.5"}) {
    try {
      LrSchedule::Parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + std::string(bad) + "'"), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace fedsgd
