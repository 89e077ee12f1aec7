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

TEST(PlanTest, ClassWeightingIsInTheJsonOnlyWhenOn) {
  Plan p;
  EXPECT_EQ(p.class_weighting, "none");
  EXPECT_FALSE(p.ToJson().contains("class_weighting"));  // old plans compare equal
  p.class_weighting = "inverse_frequency";
  const nlohmann::json j = p.ToJson();
  EXPECT_EQ(j.at("class_weighting"), "inverse_frequency");
  EXPECT_EQ(Plan::FromJson(j).class_weighting, "inverse_frequency");
  EXPECT_EQ(Plan::FromJson(Plan{}.ToJson()).class_weighting, "none");
  Plan q;
  q.class_weighting = "balanced";
  try {
    q.Validate();
    ADD_FAILURE() << "class_weighting balanced accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--class-weighting"), std::string::npos) << e.what();
  }
  nlohmann::json bad = Plan{}.ToJson();
  bad["class_weighting"] = 1;
  EXPECT_THROW(Plan::FromJson(bad), Error);
}

TEST(PlanTest, LogitAdjustmentIsInTheJsonOnlyWhenOn) {
  Plan p;
  EXPECT_FALSE(p.ToJson().contains("logit_adjustment"));  // old plans compare equal
  p.logit_adjustment = 1.5;
  const nlohmann::json j = p.ToJson();
  EXPECT_EQ(j.at("logit_adjustment"), 1.5);
  EXPECT_EQ(Plan::FromJson(j).logit_adjustment, 1.5);
  EXPECT_EQ(Plan::FromJson(Plan{}.ToJson()).logit_adjustment, 0.0);
  for (const double bad : {-0.5, 11.0, std::nan("")}) {
    Plan q;
    q.logit_adjustment = bad;
    try {
      q.Validate();
      ADD_FAILURE() << "logit_adjustment " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--logit-adjustment"), std::string::npos) << e.what();
    }
  }
}

TEST(PlanTest, TheRoundLearningRateDecaysGeometricallyFromRoundOne) {
  Plan p;
  p.sgd.lr = 0.02f;
  EXPECT_FALSE(p.ToJson().contains("lr_round_decay"));  // old plans compare equal
  EXPECT_EQ(p.RoundLr(1), 0.02f);
  EXPECT_EQ(p.RoundLr(50), 0.02f);
  p.lr_round_decay = 0.9;
  EXPECT_FLOAT_EQ(p.RoundLr(1), 0.02f);
  EXPECT_FLOAT_EQ(p.RoundLr(2), 0.018f);
  EXPECT_FLOAT_EQ(p.RoundLr(11), static_cast<float>(0.02 * std::pow(0.9, 10)));
  EXPECT_GE(p.RoundLr(100000), 0.0f);  // underflows to 0 at worst, never negative
  const nlohmann::json j = p.ToJson();
  EXPECT_EQ(j.at("lr_round_decay"), 0.9);
  EXPECT_EQ(Plan::FromJson(j).lr_round_decay, 0.9);
  EXPECT_EQ(Plan::FromJson(Plan{}.ToJson()).lr_round_decay, 1.0);
  for (const double bad : {0.0, -0.5, 1.5, std::nan("")}) {
    Plan q;
    q.lr_round_decay = bad;
    try {
      q.Validate();
      ADD_FAILURE() << "lr_round_decay " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--lr-round-decay"), std::string::npos) << e.what();
    }
  }
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

TEST(PlanTest, DifferentialPrivacyFieldsRoundTrip) {
  Plan p;
  p.dp_noise_multiplier = 1.1;
  p.dp_clip = 0.25;
  p.dp_delta = 1e-6;
  Plan q = Plan::FromJson(p.ToJson());
  EXPECT_EQ(q.ToJson(), p.ToJson());
  EXPECT_EQ(q.ToJson()["dp_clip"], 0.25);
  EXPECT_FALSE(q.dp_adaptive_clip);
  EXPECT_DOUBLE_EQ(q.dp_delta, 1e-6);

  p.dp_adaptive_clip = true;
  p.dp_clip = 0.1;
  p.dp_target_quantile = 0.7;
  p.dp_clip_lr = 0.3;
  q = Plan::FromJson(p.ToJson());
  EXPECT_EQ(q.ToJson(), p.ToJson());
  EXPECT_EQ(q.ToJson()["dp_clip"], "adaptive:0.1");
  EXPECT_TRUE(q.dp_adaptive_clip);
  EXPECT_DOUBLE_EQ(q.dp_target_quantile, 0.7);
  EXPECT_DOUBLE_EQ(q.dp_clip_lr, 0.3);
}

TEST(PlanTest, PlansWithoutDifferentialPrivacyKeepTheirOldJson) {
  // A plan stored before the dp_* fields existed reads with DP off, and a
  // plan with DP off writes no dp_* key, so such runs still resume.
  const nlohmann::json old = Plan{}.ToJson();
  for (const auto& [key, value] : old.items()) EXPECT_FALSE(key.starts_with("dp_")) << key;
  const Plan p = Plan::FromJson(old);
  EXPECT_FALSE(p.dp());
  EXPECT_EQ(p.dp_clip, 1.0);
  EXPECT_EQ(p.dp_delta, 1e-5);
}

TEST(PlanTest, RejectsBadDifferentialPrivacyValuesWithTheFlag) {
  auto bad = [](auto mutate, const std::string& flag) {
    Plan p;
    p.dp_noise_multiplier = 1;
    mutate(p);
    try {
      p.Validate();
      ADD_FAILURE() << "accepted a bad " << flag;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  bad([](Plan& p) { p.dp_noise_multiplier = -1; }, "--dp-noise-multiplier");
  bad([](Plan& p) { p.dp_noise_multiplier = NAN; }, "--dp-noise-multiplier");
  bad([](Plan& p) { p.dp_clip = 0; }, "--dp-clip");
  bad([](Plan& p) { p.dp_delta = 1; }, "--dp-delta");
  bad([](Plan& p) { p.dp_delta = 0; }, "--dp-delta");
  bad(
      [](Plan& p) {
        p.dp_adaptive_clip = true;
        p.dp_target_quantile = 1;
      },
      "--dp-target-quantile");
  bad(
      [](Plan& p) {
        p.dp_adaptive_clip = true;
        p.dp_clip_lr = 0;
      },
      "--dp-clip-lr");
  // Off, the other fields are not looked at.
  Plan off;
  off.dp_clip = -5;
  EXPECT_NO_THROW(off.Validate());
}

TEST(PlanTest, ParsesDpClip) {
  EXPECT_EQ(ParseDpClip("0.5").clip, 0.5);
  EXPECT_FALSE(ParseDpClip("0.5").adaptive);
  EXPECT_TRUE(ParseDpClip("adaptive").adaptive);
  EXPECT_EQ(ParseDpClip("adaptive").clip, kDefaultAdaptiveInitialClip);
  EXPECT_EQ(ParseDpClip("adaptive:2").clip, 2.0);
  for (const char* bad : {"", "0", "-1", "adaptive:", "adaptive:0", "1x", "nan", "inf", "fixed"}) {
    try {
      ParseDpClip(bad);
      ADD_FAILURE() << "accepted --dp-clip " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--dp-clip"), std::string::npos) << e.what();
    }
  }
}

// Found by fuzz/plan_json_fuzz.cpp (fuzz/corpus/plan_json/batch-1e20.json):
// get<int> converted 1e20 with undefined behaviour. Integer fields now take
// JSON integers in range only, and name the field.
TEST(PlanTest, FromJsonRefusesIntegerFieldsThatAreNotIntegersInRange) {
  const auto parsed = nlohmann::json::parse(R"({
    "algorithm": "fedavg", "batch": 1e20, "l1": 0.0, "local_epochs": 1.0,
    "local_steps": 0, "lr": 0.05, "lr_schedule": "constant", "model": "mlp:784-128-10",
    "momentum": 0.9, "seed": 1, "server_lr": 1.0, "weight_decay": 0.0001})");
  try {
    Plan::FromJson(parsed);
    FAIL() << "batch 1e20 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch must be an integer"), std::string::npos)
        << e.what();
  }
  auto refused = [](const char* field, const nlohmann::json& value) {
    nlohmann::json j = Plan{}.ToJson();
    j[field] = value;
    EXPECT_THROW(Plan::FromJson(j), Error) << field << " = " << value.dump();
  };
  refused("batch", 2.5);            // was truncated to 2
  refused("batch", 4294967297ull);  // was wrapped to 1
  refused("batch", -1e300);         // undefined behaviour
  refused("local_steps", 1e30);     // undefined behaviour
  refused("local_steps", 18446744073709551615ull);
  refused("seed", -1);  // was wrapped to 2^64-1
  refused("seed", 1.5);
  refused("seed", "7");
  nlohmann::json j = Plan{}.ToJson();
  j["seed"] = 18446744073709551615ull;
  j["local_steps"] = 5;
  j["batch"] = 2147483647;
  const Plan p = Plan::FromJson(j);
  EXPECT_EQ(p.seed, 18446744073709551615ull);
  EXPECT_EQ(p.local_steps, 5);
  EXPECT_EQ(p.batch, 2147483647);
}

TEST(PlanTest, UpdateCodecRoundTripsDefaultsToFp32AndKeepsOldJson) {
  EXPECT_EQ(Plan{}.update_codec, "fp32");
  EXPECT_FALSE(Plan{}.ToJson().contains("update_codec")) << "fp32 plans keep their old JSON";
  for (const std::string codec : {"fp16", "int8", "topk:0.01"}) {
    Plan p;
    p.update_codec = codec;
    const nlohmann::json j = p.ToJson();
    EXPECT_EQ(j.at("update_codec"), codec);
    EXPECT_EQ(Plan::FromJson(j).update_codec, codec);
  }
  Plan p;
  p.update_codec = "topk:0.010";  // written in its shortest form
  EXPECT_EQ(p.ToJson().at("update_codec"), "topk:0.01");
  for (const std::string bad : {"fp8", "topk:0", "topk:2", ""}) {
    p.update_codec = bad;
    try {
      p.Validate();
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--update-codec"), std::string::npos) << e.what();
    }
  }
}

TEST(PlanTest, AsyncFieldsAreInTheJsonOnlyForAnAsyncPlanAndRoundTrip) {
  const nlohmann::json sync = Plan{}.ToJson();
  for (const char* key : {"mode", "async_buffer", "max_staleness", "staleness_weight"}) {
    EXPECT_FALSE(sync.contains(key)) << key << ": synchronous plans keep their old JSON";
  }
  EXPECT_FALSE(Plan::FromJson(sync).async());
  Plan p;
  p.mode = "async";
  p.async_buffer = 5;
  p.max_staleness = 7;
  p.staleness_weight = "hinge:10:4";
  const Plan q = Plan::FromJson(p.ToJson());
  EXPECT_TRUE(q.async());
  EXPECT_EQ(q.async_buffer, 5);
  EXPECT_EQ(q.max_staleness, 7);
  EXPECT_EQ(q.staleness_weight, "hinge:10:4");
  EXPECT_EQ(q.ToJson(), p.ToJson());
}

TEST(PlanTest, RejectsBadAsyncValuesWithTheFlag) {
  auto bad = [](auto mutate, const std::string& flag) {
    Plan p;
    p.mode = "async";
    mutate(p);
    try {
      p.Validate();
      ADD_FAILURE() << "accepted a bad value for " << flag;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  bad([](Plan& p) { p.mode = "fast"; }, "--async");
  bad([](Plan& p) { p.async_buffer = -1; }, "--buffer");
  bad([](Plan& p) { p.max_staleness = -1; }, "--max-staleness");
  bad([](Plan& p) { p.staleness_weight = "linear"; }, "--staleness-weight");
  bad([](Plan& p) { p.dp_noise_multiplier = 1; }, "--dp-noise-multiplier");
}

TEST(PlanTest, BroadcastCodecRoundTripsDefaultsToFp32AndKeepsOldJson) {
  EXPECT_EQ(Plan{}.broadcast_codec, "fp32");
  EXPECT_FALSE(Plan{}.ToJson().contains("broadcast_codec")) << "fp32 plans keep their old JSON";
  EXPECT_EQ(Plan::FromJson(Plan{}.ToJson()).broadcast_codec, "fp32");
  Plan p;
  p.broadcast_codec = "fp16";
  const nlohmann::json j = p.ToJson();
  EXPECT_EQ(j.at("broadcast_codec"), "fp16");
  EXPECT_EQ(Plan::FromJson(j).broadcast_codec, "fp16");
  EXPECT_EQ(Plan::FromJson(j).ToJson(), j);
  for (const std::string bad : {"int8", "topk:0.01", "FP16", "fp16 ", ""}) {
    nlohmann::json stored = j;
    stored["broadcast_codec"] = bad;
    try {
      Plan::FromJson(stored);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--broadcast-codec"), std::string::npos) << e.what();
    }
  }
  nlohmann::json mistyped = j;
  mistyped["broadcast_codec"] = 16;
  EXPECT_THROW(Plan::FromJson(mistyped), Error);
}

}  // namespace
}  // namespace fedsgd
