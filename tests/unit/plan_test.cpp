#include "fedsgd/plan.h"

#include <gtest/gtest.h>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

TEST(PlanTest, JsonRoundTrip) {
  Plan p;
  p.model = "mlp:784-128-64-10:tanh";
  p.algorithm = Algorithm::kFedSgd;
  p.local_epochs = 2.5;
  p.batch = 64;
  p.sgd.lr = 0.125f;
  p.sgd.momentum = 0.5f;
  p.sgd.schedule = LrSchedule::Parse("step:100:0.5");
  p.server_lr = 0.75;
  p.seed = 42;
  const Plan q = Plan::FromJson(p.ToJson());
  EXPECT_EQ(q.ToJson(), p.ToJson());
  EXPECT_EQ(q.algorithm, Algorithm::kFedSgd);
  EXPECT_EQ(q.architecture(), p.architecture());
}

TEST(PlanTest, RejectsBadValuesWithTheFieldName) {
  auto bad = [](auto mutate, const std::string& field) {
    Plan p;
    mutate(p);
    try {
      p.Validate();
      ADD_FAILURE() << "accepted a bad " << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  bad([](Plan& p) { p.batch = 0; }, "batch");
  bad([](Plan& p) { p.sgd.lr = -1; }, "lr");
  bad([](Plan& p) { p.sgd.momentum = 1; }, "momentum");
  bad([](Plan& p) { p.server_lr = 0; }, "server_lr");
  bad([](Plan& p) { p.local_epochs = 0; }, "local_epochs");
  bad([](Plan& p) { p.model = "mlp:"; }, "mlp:");
}

TEST(PlanTest, AggregationFieldsRoundTripDefaultAndValidate) {
  Plan p;
  p.aggregator = "multi_krum";
  p.byzantine = 2;
  p.krum_select = 3;
  p.norm_bound = "fixed:0.5";
  p.server_optimizer = "yogi";
  p.server_tau = 0.01;
  const Plan back = Plan::FromJson(p.ToJson());
  EXPECT_EQ(back.ToJson(), p.ToJson());
  EXPECT_EQ(back.aggregator, "multi_krum");
  nlohmann::json old = Plan{}.ToJson();
  old.erase("aggregator");
  old.erase("norm_bound");
  old.erase("server_optimizer");
  const Plan defaults = Plan::FromJson(old);
  EXPECT_EQ(defaults.aggregator, "mean");
  EXPECT_EQ(defaults.norm_bound, "adaptive:2");
  EXPECT_EQ(defaults.server_optimizer, "sgd");
  auto bad = [](auto change, const std::string& flag) {
    Plan q;
    change(q);
    try {
      q.Validate();
      ADD_FAILURE() << flag << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  bad([](Plan& q) { q.aggregator = "bulyan"; }, "--aggregator");
  bad([](Plan& q) { q.trim_fraction = 0.5; }, "--trim-fraction");
  bad([](Plan& q) { q.byzantine = -1; }, "--byzantine");
  bad([](Plan& q) { q.norm_bound = "adaptive:-2"; }, "--norm-bound");
  bad([](Plan& q) { q.server_optimizer = "lamb"; }, "--server-optimizer");
  bad([](Plan& q) { q.server_beta2 = 1; }, "--server-beta2");
  bad([](Plan& q) { q.server_tau = 0; }, "--server-tau");
  bad([](Plan& q) { q.aggregation_memory_mb = 0; }, "--aggregation-memory-mb");
}

TEST(PlanTest, FromJsonRejectsMissingAndMistypedFields) {
  nlohmann::json j = Plan{}.ToJson();
  j.erase("batch");
  EXPECT_THROW(Plan::FromJson(j), Error);
  j = Plan{}.ToJson();
  j["lr"] = "fast";
  EXPECT_THROW(Plan::FromJson(j), Error);
  EXPECT_THROW(Plan::FromJson(nlohmann::json::array()), Error);
  j = Plan{}.ToJson();
  j["algorithm"] = "fedprox";
  EXPECT_THROW(Plan::FromJson(j), Error);
}

}  // namespace
}  // namespace fedsgd
