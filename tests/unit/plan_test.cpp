#include "fedsgd/plan.h"

#include <gtest/gtest.h>

#include <cmath>

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
  p.prox_mu = 0.01;
  p.eval_fraction = 0.2;
  const Plan q = Plan::FromJson(p.ToJson());
  EXPECT_EQ(q.ToJson(), p.ToJson());
  EXPECT_EQ(q.algorithm, Algorithm::kFedSgd);
  EXPECT_EQ(q.architecture(), p.architecture());
  EXPECT_EQ(q.prox_mu, 0.01);
  EXPECT_EQ(q.eval_fraction, 0.2);
}

TEST(PlanTest, PlanWithoutTheDeviceKeysGetsTheDefaults) {
  nlohmann::json j = Plan{}.ToJson();
  j.erase("prox_mu");
  j.erase("eval_fraction");
  const Plan p = Plan::FromJson(j);
  EXPECT_EQ(p.prox_mu, 0.0);
  EXPECT_EQ(p.eval_fraction, 0.1);
  EXPECT_EQ(p.ToJson(), Plan{}.ToJson());
  j["prox_mu"] = "strong";
  EXPECT_THROW(Plan::FromJson(j), Error);
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
  bad([](Plan& p) { p.prox_mu = -0.1; }, "prox_mu");
  bad([](Plan& p) { p.prox_mu = std::nan(""); }, "prox_mu");
  bad([](Plan& p) { p.eval_fraction = 0.6; }, "eval_fraction");
  bad([](Plan& p) { p.eval_fraction = -0.1; }, "eval_fraction");
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
