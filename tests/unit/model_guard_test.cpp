// FindNonFinite: the check before a new model is committed.
#include "model_guard.h"

#include <gtest/gtest.h>

#include <limits>
#include <vector>

namespace fedsgd {
namespace {

TEST(ModelGuardTest, AcceptsFiniteModelsAndNamesTheFirstBadParameter) {
  std::vector<float> params(1000, 0.5f);
  params[7] = std::numeric_limits<float>::max();
  params[8] = -std::numeric_limits<float>::denorm_min();
  EXPECT_FALSE(FindNonFinite(params));
  EXPECT_FALSE(FindNonFinite(std::vector<float>{}));
  params[500] = std::numeric_limits<float>::infinity();
  params[900] = std::numeric_limits<float>::quiet_NaN();
  const auto what = FindNonFinite(params);
  ASSERT_TRUE(what);
  EXPECT_EQ(*what, "2 of 1000 parameters are not finite, the first at index 500: inf");
  params[0] = -std::numeric_limits<float>::infinity();
  EXPECT_NE(FindNonFinite(params)->find("3 of 1000"), std::string::npos);
}

}  // namespace
}  // namespace fedsgd
