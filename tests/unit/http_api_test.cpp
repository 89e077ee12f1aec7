// HttpApi against a StatusBoard and a real (temporary) CheckpointStore:
// every endpoint, errors as JSON with the right codes, HEAD, the bearer
// token, the .npy format, and idle clients that cannot block others.
#include "http_api.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "checkpoint_store.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

class HttpApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (fs::temp_directory_path() /
             ("fedsgd_http_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".db"))
                .string();
    auto writer = CheckpointStore::Open(path_);
    run_ = writer->StartRun({{"model", "softmax:2-2"}}, {0, 1, 2, 3, 4, 5}, false).run_id;
    RoundRecord r;
    r.run_id = run_;
    r.round = 1;
    r.devices = {{"dev0", 10, 0.5, 1.0, std::nullopt}};
    r.test_accuracy = 0.75;
    writer->CommitRound(r, std::vector<float>{1.5f, 2, 3, 4, 5, 6});
    store_ = CheckpointStore::Open(path_, /*read_only=*/true);
    board_.Publish({{"run_id", run_}, {"round", 1}, {"plan", {{"model", "softmax:2-2"}}}},
                   nlohmann::json::array({{{"id", "dev0"}, {"state", "idle"}}}),
                   "# TYPE fedsgd_round gauge\nfedsgd_round 1\n");
  }
  void TearDown() override {
    api_.reset();
    store_.reset();
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path_ + suffix);
  }
  httplib::Client Start(const std::string& token = "") {
    api_ =
        std::make_unique<HttpApi>(board_, *store_, run_, Architecture::Parse("softmax:2-2"), token);
    api_->Start("127.0.0.1:0");
    httplib::Client c("127.0.0.1", api_->port());
    c.set_read_timeout(5, 0);
    return c;
  }
  static nlohmann::json Body(const httplib::Result& r) {
    return nlohmann::json::parse(r->body, nullptr, false);
  }

  std::string path_;
  std::int64_t run_ = 0;
  StatusBoard board_;
  std::unique_ptr<CheckpointStore> store_;
  std::unique_ptr<HttpApi> api_;
};

TEST_F(HttpApiTest, ServesEveryEndpoint) {
  httplib::Client c = Start();
  EXPECT_EQ(Body(c.Get("/healthz"))["ok"], true);
  EXPECT_EQ(Body(c.Get("/v1/status"))["round"], 1);
  EXPECT_EQ(Body(c.Get("/v1/plan"))["model"], "softmax:2-2");
  EXPECT_EQ(Body(c.Get("/v1/devices"))[0]["id"], "dev0");
  EXPECT_EQ(Body(c.Get("/v1/devices/dev0"))["state"], "idle");
  const auto rounds = Body(c.Get("/v1/rounds?since=0&limit=10"));
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0]["test_accuracy"], 0.75);
  EXPECT_EQ(Body(c.Get("/v1/rounds/1"))["devices"][0]["device"], "dev0");
  const auto model = Body(c.Get("/v1/model"));
  EXPECT_EQ(model["model_version"], 1);
  EXPECT_EQ(model["params"][0], 1.5);
  EXPECT_EQ(model["layout"][0]["out"], 2);
  EXPECT_EQ(Body(c.Get("/v1/model?round=0"))["params"][0], 0.0);
  auto metrics = c.Get("/metrics");
  EXPECT_NE(metrics->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  EXPECT_NE(metrics->body.find("fedsgd_round 1"), std::string::npos);
  auto page = c.Get("/");
  EXPECT_NE(page->body.find("<svg id=\"accuracy-chart\""), std::string::npos);
  EXPECT_EQ(page->body.find("http://"), page->body.find("http://www.w3.org/2000/svg"))
      << "the dashboard must not load anything from elsewhere";
}

TEST_F(HttpApiTest, ErrorsAreJsonWithTheRightStatus) {
  httplib::Client c = Start();
  auto expect = [&](const httplib::Result& r, int status) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, status);
    EXPECT_EQ(Body(r)["status"], status);
    EXPECT_FALSE(Body(r)["error"].get<std::string>().empty());
  };
  expect(c.Get("/nope"), 404);
  expect(c.Get("/v1/devices/ghost"), 404);
  expect(c.Get("/v1/rounds/7"), 404);
  expect(c.Get("/v1/rounds/x"), 400);
  expect(c.Get("/v1/rounds?limit=-1"), 400);
  expect(c.Get("/v1/model?round=9"), 404);
  expect(c.Get("/v1/model?format=csv"), 400);
  expect(c.Post("/v1/status", "{}", "application/json"), 405);
  expect(c.Delete("/v1/status"), 405);
  expect(c.Put("/v1/model", "x", "text/plain"), 405);
  auto head = c.Head("/v1/status");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_TRUE(head->body.empty());
}

TEST_F(HttpApiTest, TokenGuardsEverythingButHealthz) {
  httplib::Client c = Start("s3cret");
  EXPECT_EQ(c.Get("/healthz")->status, 200);
  EXPECT_EQ(c.Get("/v1/status")->status, 401);
  EXPECT_EQ(c.Get("/")->status, 401);
  EXPECT_EQ(c.Get("/v1/status?token=wrong")->status, 401);
  EXPECT_EQ(c.Get("/v1/status?token=s3cret")->status, 200);
  c.set_bearer_token_auth("s3cret");
  EXPECT_EQ(c.Get("/v1/status")->status, 200);
  EXPECT_EQ(c.Get("/metrics")->status, 200);
}

TEST_F(HttpApiTest, ModelAsNpy) {
  httplib::Client c = Start();
  auto r = c.Get("/v1/model?format=npy");
  ASSERT_TRUE(r);
  const std::string& b = r->body;
  ASSERT_GE(b.size(), 10u);
  EXPECT_EQ(b.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::size_t header =
      static_cast<unsigned char>(b[8]) | (static_cast<unsigned char>(b[9]) << 8);
  EXPECT_EQ((10 + header) % 64, 0u);
  EXPECT_NE(b.find("'descr': '<f4'"), std::string::npos);
  EXPECT_NE(b.find("'shape': (6,)"), std::string::npos);
  ASSERT_EQ(b.size(), 10 + header + 6 * sizeof(float));
  float first = 0;
  std::memcpy(&first, b.data() + 10 + header, sizeof first);
  EXPECT_EQ(first, 1.5f);
  EXPECT_NE(r->get_header_value("Content-Disposition").find("round1.npy"), std::string::npos);
}

TEST_F(HttpApiTest, IdleConnectionsDoNotBlockOtherClients) {
  httplib::Client c = Start();
  std::vector<int> idle;
  for (int i = 0; i < 6; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(api_->port()));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const char* partial = "GET /v1/status HTTP/1.1\r\nHost: x\r\n";  // never finished
    ASSERT_GT(send(fd, partial, std::strlen(partial), 0), 0);
    idle.push_back(fd);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c.Get("/v1/status");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  for (int fd : idle) close(fd);
}

}  // namespace
}  // namespace fedsgd
