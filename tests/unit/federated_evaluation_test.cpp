// Federated evaluation summary: sample-weighted means and the fairness view
// (min / median / max accuracy over devices).
#include "federated_evaluation.h"

#include <gtest/gtest.h>

namespace fedsgd {
namespace {

TEST(FederatedEvaluationTest, WeightsBySamplesAndReportsTheSpread) {
  const auto f =
      SummariseFederatedEvaluation({{0.25, 1.0, 100}, {1.0, 0.5, 300}, {0.5, 0.75, 100}});
  ASSERT_TRUE(f.has_value());
  EXPECT_DOUBLE_EQ(f->accuracy, (100 * 1.0 + 300 * 0.5 + 100 * 0.75) / 500);
  EXPECT_DOUBLE_EQ(f->loss, (100 * 0.25 + 300 * 1.0 + 100 * 0.5) / 500);
  EXPECT_DOUBLE_EQ(f->min_accuracy, 0.5);
  EXPECT_DOUBLE_EQ(f->median_accuracy, 0.75);
  EXPECT_DOUBLE_EQ(f->max_accuracy, 1.0);
  EXPECT_EQ(f->devices, 3u);
  EXPECT_EQ(f->samples, 500u);
}

TEST(FederatedEvaluationTest, MedianOfAnEvenCountIsTheMiddlePairsMean) {
  const auto f = SummariseFederatedEvaluation({{0, 0.9, 1}, {0, 0.1, 1}, {0, 0.3, 1}, {0, 0.5, 1}});
  ASSERT_TRUE(f.has_value());
  EXPECT_DOUBLE_EQ(f->median_accuracy, 0.4);
  EXPECT_DOUBLE_EQ(f->min_accuracy, 0.1);
}

TEST(FederatedEvaluationTest, NothingWithoutEvaluations) {
  EXPECT_FALSE(SummariseFederatedEvaluation({}).has_value());
}

}  // namespace
}  // namespace fedsgd
