// HttpApi against a StatusBoard and a real (temporary) CheckpointStore:
// every endpoint, errors as JSON with the right codes, HEAD, the bearer
// token, the .npy format, idle clients that cannot block others, invalid
// UTF-8 paths, unknown methods, Range abuse, paging, a busy port, HTTPS.
#include "http_api.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint_store.h"
#include "coordinator_options.h"
#include "fedsgd/error.h"

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
    r.devices = {{"dev0", 10, 0.5, 1.0, std::nullopt, std::nullopt}};
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
    return Client();
  }
  httplib::Client Client() {
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

// Sends `request` on a fresh connection and returns everything the server
// wrote back until it closed or 5 s passed.
// One request on a fresh connection from `source` (any 127.x address works on
// Linux loopback), the whole reply; empty when the server closed unanswered.
std::string RawExchange(int port, const std::string& request, const char* source = "127.0.0.1") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    shutdown(fd, SHUT_WR);  // no further request: the server closes after its answer
    char buf[4096];
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;)
      reply.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  return reply;
}

TEST_F(HttpApiTest, InvalidUtf8InThePathAnswersJsonNotACrash) {
  httplib::Client c = Start();
  for (const char* path : {"/%ff", "/v1/devices/%ff", "/v1/rounds/%ff%fe", "/%c3%28?x=%ff"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_TRUE(r->status == 404 || r->status == 400) << path << ": " << r->status;
    EXPECT_EQ(Body(r)["status"], r->status) << path;
  }
  EXPECT_EQ(c.Get("/healthz")->status, 200);  // still serving
}

TEST_F(HttpApiTest, UnknownMethodsAre405) {
  Start();
  for (const char* method : {"FOO", "POST", "DELETE", "OPTIONS", "PATCH"}) {
    const std::string reply = RawExchange(
        api_->port(), std::string(method) + " / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 405")) << method << ": " << reply.substr(0, 40);
    EXPECT_NE(reply.find("Allow: GET, HEAD"), std::string::npos) << method;
    EXPECT_NE(reply.find("\"status\":405"), std::string::npos) << method;
  }
  // Not HTTP at all stays 400.
  EXPECT_TRUE(RawExchange(api_->port(), "foo bar\r\n\r\n").starts_with("HTTP/1.1 400"));
}

TEST_F(HttpApiTest, RangeRequestsCannotAmplifyAResponse) {
  httplib::Client c = Start();
  const std::size_t whole = c.Get("/v1/model?format=npy")->body.size();
  std::string ranges = "bytes=0-";
  for (int i = 0; i < 1500; ++i) ranges += ",0-";  // ~4.5 KB, under the header limit
  const std::string reply = RawExchange(api_->port(),
                                        "GET /v1/model?format=npy HTTP/1.1\r\n"
                                        "Host: x\r\nConnection: close\r\nRange: " +
                                            ranges + "\r\n\r\n");
  EXPECT_TRUE(reply.starts_with("HTTP/1.1 200")) << reply.substr(0, 40);
  EXPECT_LE(reply.size(), whole + 1024) << "Range must not multiply the body";
  EXPECT_GE(reply.size(), whole);
}

TEST_F(HttpApiTest, DevicesArePaged) {
  nlohmann::json devices = nlohmann::json::array();
  for (int i = 0; i < 250; ++i) devices.push_back({{"id", "dev" + std::to_string(i)}});
  board_.Publish({{"run_id", run_}}, devices, "");
  httplib::Client c = Start();
  auto first = c.Get("/v1/devices");
  EXPECT_EQ(Body(first).size(), 100u);  // the default page
  EXPECT_EQ(first->get_header_value("X-Total-Count"), "250");
  auto page = Body(c.Get("/v1/devices?offset=240&limit=20"));
  ASSERT_EQ(page.size(), 10u);
  EXPECT_EQ(page[0]["id"], "dev240");
  EXPECT_EQ(Body(c.Get("/v1/devices?offset=999")).size(), 0u);
  EXPECT_EQ(Body(c.Get("/v1/devices?limit=1000")).size(), 250u);
  for (const char* bad : {"?limit=0", "?limit=1001", "?offset=-1", "?offset=x", "?limit=1e3"})
    EXPECT_EQ(c.Get(std::string("/v1/devices") + bad)->status, 400) << bad;
}

TEST_F(HttpApiTest, ABusyPortIsRefused) {
  Start();
  HttpApi second(board_, *store_, run_, Architecture::Parse("softmax:2-2"), "");
  EXPECT_THROW(second.Start("127.0.0.1:" + std::to_string(api_->port())), Error);
}

TEST_F(HttpApiTest, SlowRequestsAreClosedAndConnectionsPerAddressBounded) {
  HttpConnectionLimits limits;
  limits.max_per_address = 4;
  // Long enough that a loaded machine counts the four before they expire.
  limits.request_seconds = 6;
  api_ = std::make_unique<HttpApi>(board_, *store_, run_, Architecture::Parse("softmax:2-2"), "",
                                   HttpTls{}, limits);
  api_->Start("127.0.0.1:0");
  // Four connections from 127.0.0.1 that never finish their request.
  std::vector<int> slow;
  for (int i = 0; i < 4; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(api_->port()));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_GT(send(fd, "GET / HTTP/1.1\r\n", 16, 0), 0);
    slow.push_back(fd);
  }
  // Wait until the server has taken all four in (seen from another address,
  // which the per-address limit does not touch): on a loaded machine their
  // threads may start late.
  const auto open_connections = [&] {
    const std::string metrics =
        RawExchange(api_->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.2");
    const std::string key = "\nfedsgd_http_connections_open ";
    const auto at = metrics.find(key);
    return at == std::string::npos ? -1 : std::atoi(metrics.c_str() + at + key.size());
  };
  for (int i = 0; i < 200 && open_connections() < 5; ++i)  // 4 slow + the /metrics one
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // A fifth from the same address is then closed unanswered.
  bool refused = false;
  for (int i = 0; i < 20 && !refused; ++i) {
    refused = RawExchange(api_->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").empty();
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(refused);
  // Within a few seconds the server closes the slow ones (read returns 0).
  for (const int fd : slow) {
    timeval tv{20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    ssize_t n = 0;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
    }
    EXPECT_EQ(n, 0) << "the server must close a request that takes too long";
    close(fd);
  }
  EXPECT_EQ(Client().Get("/healthz")->status, 200);
  const std::string metrics = Client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("fedsgd_http_connections_refused_total"), std::string::npos);
  EXPECT_EQ(metrics.find("fedsgd_http_requests_timed_out_total 0\n"), std::string::npos);
}

TEST(HttpApiHelpers, TokenMatchesOnlyTheToken) {
  EXPECT_TRUE(TokenMatches("s3cret", "s3cret"));
  EXPECT_FALSE(TokenMatches("s3cre", "s3cret"));
  EXPECT_FALSE(TokenMatches("s3cret2", "s3cret"));
  EXPECT_FALSE(TokenMatches("", "s3cret"));
  EXPECT_FALSE(TokenMatches("S3cret", "s3cret"));
}

TEST(HttpApiHelpers, LoopbackHosts) {
  for (const char* h : {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"})
    EXPECT_TRUE(IsLoopbackHost(h)) << h;
  for (const char* h : {"", "0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "example.org"})
    EXPECT_FALSE(IsLoopbackHost(h)) << h;
}

TEST(HttpApiHelpers, NonLoopbackHttpNeedsATokenOrInsecure) {
  CoordinatorOptions o;
  o.db = (fs::temp_directory_path() / "fedsgd_http_options_unused.db").string();
  o.http = "0.0.0.0:8080";
  try {
    o.Check();
    ADD_FAILURE() << "a non-loopback --http without a token was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--http-token"), std::string::npos) << e.what();
  }
  o.insecure = true;
  EXPECT_NO_THROW(o.Check());
  o.insecure = false;
  o.http_token = "t";
  EXPECT_NO_THROW(o.Check());
  o.http = "127.0.0.1:8080";
  o.http_token.clear();
  EXPECT_NO_THROW(o.Check());
  o.http_cert = "/nonexistent.pem";
  EXPECT_THROW(o.Check(), Error);  // --http-key missing
  o.http_key = "/nonexistent.key";
  EXPECT_THROW(o.Check(), Error);  // unreadable
}

class HttpsTest : public HttpApiTest {
 protected:
  // A self-signed certificate for 127.0.0.1 made with the openssl tool.
  static void MakeCertificate(const std::string& dir, const std::string& name) {
    const std::string cmd =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
        " -keyout " +
        dir + "/" + name + ".key -out " + dir + "/" + name + ".pem >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
};

TEST_F(HttpsTest, ServesHttpsWithACertificateAndRefusesBadFiles) {
  const fs::path dir = fs::temp_directory_path() / ("fedsgd_tls_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  MakeCertificate(dir.string(), "a");
  MakeCertificate(dir.string(), "b");
  const std::string cert = (dir / "a.pem").string(), key = (dir / "a.key").string();
  const auto arch = Architecture::Parse("softmax:2-2");
  // A key that is not the certificate's, a missing file, half a pair.
  EXPECT_THROW(HttpApi(board_, *store_, run_, arch, "", HttpTls{cert, (dir / "b.key").string()}),
               Error);
  EXPECT_THROW(HttpApi(board_, *store_, run_, arch, "", HttpTls{cert, (dir / "x.key").string()}),
               Error);
  EXPECT_THROW(HttpApi(board_, *store_, run_, arch, "", HttpTls{cert, ""}), Error);
  EXPECT_THROW(HttpApi(board_, *store_, run_, arch, "", HttpTls{key, key}), Error);

  api_ = std::make_unique<HttpApi>(board_, *store_, run_, arch, "tok", HttpTls{cert, key});
  api_->Start("127.0.0.1:0");
  httplib::SSLClient tls("127.0.0.1", api_->port());
  tls.set_ca_cert_path(cert.c_str());
  tls.enable_server_certificate_verification(true);
  tls.set_read_timeout(5, 0);
  auto r = tls.Get("/healthz");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Body(r)["ok"], true);
  tls.set_bearer_token_auth("tok");
  EXPECT_EQ(tls.Get("/v1/status")->status, 200);
  // Plain HTTP to the HTTPS port gets no answer.
  httplib::Client plain("127.0.0.1", api_->port());
  plain.set_read_timeout(5, 0);
  auto p = plain.Get("/healthz");
  EXPECT_TRUE(!p || p->status != 200);
  api_.reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedsgd
