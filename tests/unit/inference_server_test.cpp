// The daemon's inference endpoint: request parsing and answers
// (daemon/inference_protocol.h), the model slot (daemon/model_slot.h) and
// the server over a real Unix socket (daemon/inference_server.h).
#include "inference_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "../integration/unix_line_client.h"
#include "fedsgd/error.h"
#include "fedsgd/model.h"
#include "fedsgd/network.h"
#include "inference_protocol.h"
#include "model_slot.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;
using testing::UnixLineClient;

TEST(InferenceProtocolTest, ClassifiesLines) {
  EXPECT_EQ(ClassifyRequest(""), RequestKind::kBlank);
  EXPECT_EQ(ClassifyRequest(" \t\r"), RequestKind::kBlank);
  EXPECT_EQ(ClassifyRequest("model"), RequestKind::kModel);
  EXPECT_EQ(ClassifyRequest(" model\r"), RequestKind::kModel);
  EXPECT_EQ(ClassifyRequest("models"), RequestKind::kUnknownCommand);
  EXPECT_EQ(ClassifyRequest("nan"), RequestKind::kUnknownCommand);
  EXPECT_EQ(ClassifyRequest("nan,1"), RequestKind::kSample);
  EXPECT_EQ(ClassifyRequest("0.5,1,2"), RequestKind::kSample);
  EXPECT_EQ(ClassifyRequest("GET / HTTP/1.1"), RequestKind::kSample);  // then a 400
}

TEST(InferenceProtocolTest, ParsesExactlyTheModelsInputs) {
  float x[3] = {};
  EXPECT_EQ(ParseSample(" 1, -2.5 ,+3e2\r", 3, x), std::nullopt);
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], -2.5f);
  EXPECT_EQ(x[2], 300.0f);
  auto error = [&](std::string_view line) { return ParseSample(line, 3, x).value_or("ok"); };
  EXPECT_EQ(error("1,2"), "the row has 2 values, the model takes 3");
  EXPECT_EQ(error("1,2,3,4"), "the row has 4 values, the model takes 3");
  EXPECT_EQ(error("1,2,3,"), "the row has 4 values, the model takes 3");
  EXPECT_EQ(error("1,,3"), "value 1 ('') is not a number");
  EXPECT_EQ(error("1,x,3"), "value 1 ('x') is not a number");
  EXPECT_EQ(error("1,2 3,3"), "value 1 ('2 3') is not a number");
  EXPECT_EQ(error("1,0x10,3"), "value 1 ('0x10') is not a number");
  EXPECT_EQ(error("1,2,nan"), "value 2 ('nan') is not finite or out of float32 range");
  EXPECT_EQ(error("-inf,2,3"), "value 0 ('-inf') is not finite or out of float32 range");
  EXPECT_EQ(error("1,1e39,3"), "value 1 ('1e39') is not finite or out of float32 range");
  EXPECT_EQ(error(std::string(100, '7') + "x,2,3"),
            "value 0 ('777777777777777777777777...') is not a number");
}

TEST(InferenceProtocolTest, AnswersHaveThePredictCommandsShape) {
  const float softmax[3] = {0.2f, 0.7f, 0.1f};
  ServedModel m{Architecture::Parse("softmax:4-3"), {}, "run7", 12, "coordinator"};
  const nlohmann::json a = nlohmann::json::parse(SampleAnswer(5, m, softmax));
  EXPECT_EQ(a["index"], 5);
  EXPECT_EQ(a["class"], 1);
  EXPECT_EQ(a["probabilities"].size(), 3u);
  EXPECT_EQ(a["model_version"], 12);
  const float p = 0.25f;
  EXPECT_EQ(PredictionJson(Architecture::Parse("logistic:4"), &p),
            nlohmann::json::parse(R"({"class": 0, "probabilities": [0.75, 0.25]})"));
  EXPECT_EQ(PredictionJson(Architecture::Parse("linear:4"), &p),
            nlohmann::json::parse(R"({"prediction": 0.25})"));
  const nlohmann::json model = nlohmann::json::parse(ModelAnswer(0, m));
  EXPECT_EQ(model["model"], "softmax:4-3");
  EXPECT_EQ(model["run_id"], "run7");
  EXPECT_EQ(model["inputs"], 4);
  EXPECT_EQ(model["classes"], 3);
  const nlohmann::json e = nlohmann::json::parse(ErrorAnswer(2, 400, "bad \xff byte"));
  EXPECT_EQ(e["status"], 400);
  EXPECT_EQ(e["index"], 2);
}

std::shared_ptr<const ServedModel> MakeModel(const std::string& arch, std::uint64_t version,
                                             std::uint64_t seed) {
  auto m = std::make_shared<ServedModel>();
  Model created = Model::Create(Architecture::Parse(arch), seed);
  m->arch = created.arch;
  m->params = ShareParams(std::move(created.params));
  m->run_id = "1";
  m->model_version = version;
  m->source = "coordinator";
  return m;
}

TEST(ModelSlotTest, ReadersKeepTheModelTheyHoldWhileANewerOneIsPublished) {
  ModelSlot slot;
  EXPECT_EQ(slot.Current(), nullptr);
  slot.Publish(MakeModel("softmax:4-3", 1, 1));
  const std::shared_ptr<const ServedModel> held = slot.Current();
  slot.Publish(MakeModel("softmax:4-3", 2, 2));
  EXPECT_EQ(held->model_version, 1u);
  EXPECT_EQ(slot.Current()->model_version, 2u);
  // Concurrent publishers and readers (TSan checks the hand-over).
  std::vector<std::jthread> threads;
  threads.emplace_back([&] {
    for (std::uint64_t v = 3; v < 200; ++v) slot.Publish(MakeModel("softmax:4-3", v, v));
  });
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      std::uint64_t last = 0;
      for (int i = 0; i < 2000; ++i) {
        const auto m = slot.Current();
        ASSERT_GE(m->model_version, last);
        ASSERT_EQ(m->params->size(), m->arch.ParameterCount());
        last = m->model_version;
      }
    });
  }
}

class InferenceServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fedsgd_infer_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "inference.sock").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string Row(const std::vector<float>& x) {
    std::string line;
    for (float v : x) line += (line.empty() ? "" : ",") + std::to_string(v);
    return line + "\n";
  }

  fs::path dir_;
  std::string path_;
  ModelSlot slot_;
};

TEST_F(InferenceServerTest, AnswersWithTheNewestModelAndRejectsMalformedLines) {
  InferenceServer server(path_, slot_);
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  UnixLineClient c(path_);
  ASSERT_TRUE(c.connected());
  // No model yet.
  ASSERT_TRUE(c.Send("1,2,3,4\nmodel\n"));
  EXPECT_EQ(c.Json()["status"], 503);
  EXPECT_EQ(c.Json()["status"], 503);

  const auto v1 = MakeModel("mlp:4-5-3", 1, 1);
  slot_.Publish(v1);
  const std::vector<float> x = {0.5f, -1.0f, 2.0f, 0.25f};
  std::vector<float> expected(3);
  Workspace ws(v1->arch, 1);
  Predict(v1->arch, v1->params->data(), x.data(), 1, expected.data(), ws);
  // A good row, every kind of bad line, then a good row again: one answer
  // each, in order, and the connection stays usable.
  ASSERT_TRUE(c.Send(Row(x) + "1,2,3\n1,2,x,4\n1,2,inf,4\n\nfrobnicate\nmodel\n" + Row(x)));
  nlohmann::json a = c.Json();
  EXPECT_EQ(a["index"], 2);
  EXPECT_EQ(a["model_version"], 1);
  ASSERT_EQ(a["probabilities"].size(), 3u);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(a["probabilities"][k].get<float>(), expected[k], 1e-6);
  for (int i = 3; i <= 6; ++i) {
    const nlohmann::json e = c.Json();
    EXPECT_EQ(e["index"], i);
    EXPECT_EQ(e["status"], 400) << e;
  }
  const nlohmann::json m = c.Json();
  EXPECT_EQ(m["index"], 7);
  EXPECT_EQ(m["model"], "mlp:4-5-3");
  EXPECT_EQ(m["model_version"], 1);
  EXPECT_EQ(c.Json()["probabilities"], a["probabilities"]);

  // A newer model: the next request is answered by it.
  const auto v2 = MakeModel("mlp:4-5-3", 2, 99);
  slot_.Publish(v2);
  ASSERT_TRUE(c.Send(Row(x)));
  const nlohmann::json b = c.Json();
  EXPECT_EQ(b["model_version"], 2);
  EXPECT_NE(b["probabilities"], a["probabilities"]);
  // Another architecture (a new run): its own input width.
  slot_.Publish(MakeModel("softmax:2-2", 1, 3));
  ASSERT_TRUE(c.Send(Row(x) + "0.5,0.5\n"));
  EXPECT_EQ(c.Json()["status"], 400);
  EXPECT_EQ(c.Json()["probabilities"].size(), 2u);
  EXPECT_EQ(server.predictions(), 4u);
}

TEST_F(InferenceServerTest, ManySamplesInBatchesForAClientThatReadsLate) {
  // A tiny output bound, so the server stops and resumes many times.
  InferenceServerLimits limits;
  limits.max_pending_output = 256;
  limits.max_batch = 7;
  InferenceServer server(path_, slot_, limits);
  const auto model = MakeModel("mlp:4-5-3", 3, 1);
  slot_.Publish(model);
  UnixLineClient c(path_);
  ASSERT_TRUE(c.connected());
  constexpr int kSamples = 3000;
  std::string rows;
  std::vector<float> inputs;
  for (int i = 0; i < kSamples; ++i) {
    const float f = static_cast<float>(i);
    const std::vector<float> x = {f * 0.01f, 1.0f - f * 0.002f, -0.5f, static_cast<float>(i % 7)};
    inputs.insert(inputs.end(), x.begin(), x.end());
    rows += Row(x);
  }
  // Everything is written before anything is read (and the input closed):
  // the server must answer all of it, then close.
  std::jthread writer([&] {
    c.Send(rows);
    c.CloseInput();
  });
  std::vector<float> expected(static_cast<std::size_t>(kSamples) * 3);
  Workspace ws(model->arch, kSamples);
  // x as Predict wants it, after the same decimal round trip as the rows.
  std::vector<float> parsed(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) parsed[i] = std::stof(std::to_string(inputs[i]));
  Predict(model->arch, model->params->data(), parsed.data(), kSamples, expected.data(), ws);
  for (int i = 0; i < kSamples; ++i) {
    const nlohmann::json a = c.Json();
    ASSERT_EQ(a["index"], i) << a;
    for (int k = 0; k < 3; ++k) {
      ASSERT_NEAR(a["probabilities"][k].get<float>(), expected[i * 3 + k], 1e-6) << i;
    }
  }
  EXPECT_EQ(c.Line(), "") << "closed after the last answer";
  EXPECT_EQ(server.predictions(), static_cast<std::uint64_t>(kSamples));
}

TEST_F(InferenceServerTest, BoundsLinesAndConnections) {
  InferenceServerLimits limits;
  limits.max_line_bytes = 1000;
  limits.max_connections = 1;
  InferenceServer server(path_, slot_, limits);
  slot_.Publish(MakeModel("softmax:4-3", 1, 1));
  UnixLineClient first(path_);
  ASSERT_TRUE(first.Send("model\n"));
  EXPECT_EQ(first.Json()["model"], "softmax:4-3");  // the first is served before the second
  UnixLineClient second(path_);
  const nlohmann::json busy = second.Json();
  EXPECT_EQ(busy["status"], 503) << busy;
  EXPECT_EQ(second.Line(), "");
  // A line past the bound (with no newline yet): 413, then closed.
  ASSERT_TRUE(first.Send(std::string(1500, '1')));
  EXPECT_EQ(first.Json()["status"], 413);
  EXPECT_EQ(first.Line(), "");
  // The slot is free again.
  UnixLineClient third(path_);
  ASSERT_TRUE(third.Send("1,2,3,4\n"));
  EXPECT_EQ(third.Json()["class"].is_number(), true);
}

TEST_F(InferenceServerTest, ReplacesOnlyAStaleSocketAndRemovesItsOwn) {
  {
    std::ofstream(path_) << "not a socket";
    EXPECT_THROW({ InferenceServer s(path_, slot_); }, Error);
    fs::remove(path_);
  }
  {
    // A socket file nobody accepts on, as a killed daemon leaves it.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a), 0);
    ::close(fd);
  }
  {
    InferenceServer server(path_, slot_);
    EXPECT_THROW({ InferenceServer s(path_, slot_); }, Error) << "in use";
    UnixLineClient c(path_);
    EXPECT_TRUE(c.connected());
  }
  EXPECT_FALSE(fs::exists(path_));
  EXPECT_THROW({ InferenceServer s((dir_ / "missing" / "x.sock").string(), slot_); }, Error);
  EXPECT_THROW({ InferenceServer s(std::string(200, 'a'), slot_); }, Error);
}

}  // namespace
}  // namespace fedsgd
