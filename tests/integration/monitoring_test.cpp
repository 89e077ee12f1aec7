// Watching a running federation over HTTP (docs/api.md) with the real
// binaries: /v1/status, /v1/devices, /v1/rounds, /metrics, the model as
// JSON and .npy, the dashboard, and slow or idle HTTP clients that must not
// hold up the rounds.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "checkpoint_store.h"
#include "fedsgd/model.h"
#include "fleet_fixture.h"

namespace fedsgd {
namespace {

using namespace std::chrono_literals;

class MonitoringTest : public FleetFixture {};

// Runs a shell command; its exit status and what it printed.
std::pair<int, std::string> Shell(const std::string& command) {
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {-1, ""};
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::size_t Count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST_F(MonitoringTest, MetricsModelDownloadAndDashboard) {
  auto coordinator = Coordinator("coordinator", {"--rounds", "100000", "--min-devices", "2"});
  auto d0 = Daemon(0, 2), d1 = Daemon(1, 2);
  ASSERT_TRUE(WaitFor([&] { return CommittedRound() >= 3; }, 60s)) << coordinator->Stderr();
  const std::string base = "http://127.0.0.1:" + std::to_string(http_);

  // Slow and idle HTTP clients (connections that never finish a request)
  // must not hold up the rounds.
  std::vector<int> idle;
  for (int i = 0; i < 16; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(http_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      ::send(fd, "GET /v1/status HTTP/1.1\r\n", 25, 0);
      idle.push_back(fd);
    }
  }
  // Count rounds in the database, not over HTTP, which the hung clients may
  // be keeping busy.
  auto progress = CheckpointStore::Open(db(), /*read_only=*/true);
  // Rounds go on while the clients hang: two more commit (no bound on how
  // fast: a sanitizer build on a busy machine takes seconds a round).
  const std::uint64_t before = progress->LatestRound(1);
  EXPECT_TRUE(WaitFor([&] { return progress->LatestRound(1) >= before + 2; }, 60s))
      << "rounds stalled while HTTP clients hung: " << before << " -> " << progress->LatestRound(1);
  for (int fd : idle) close(fd);
  EXPECT_TRUE(WaitFor([&] { return Get("/healthz").is_object(); }, 10s))
      << "HTTP did not recover after the hung clients left";

  // Prometheus text format, checked by Prometheus's own tool.
  httplib::Client client("127.0.0.1", http_);
  const auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  std::ofstream(Path("metrics.txt")) << metrics->body;
  if (fs::exists("/usr/bin/promtool")) {
    const auto [rc, out] = Shell("promtool check metrics < " + Path("metrics.txt"));
    EXPECT_EQ(rc, 0) << out;
  } else {
    ADD_FAILURE() << "promtool is missing: scripts/install-deps.sh installs package prometheus";
  }
  EXPECT_NE(metrics->body.find("fedsgd_round_duration_seconds_count"), std::string::npos);
  EXPECT_NE(metrics->body.find("fedsgd_devices_online 2"), std::string::npos);
  EXPECT_NE(metrics->body.find("fedsgd_federated_accuracy_median "), std::string::npos);

  // The model as .npy, read by numpy itself.
  const std::string npy = Path("model.npy");
  const auto download = client.Get("/v1/model?format=npy&round=2");
  ASSERT_TRUE(download && download->status == 200);
  std::ofstream(npy, std::ios::binary) << download->body;
  const auto [np_rc, np_out] = Shell("/usr/bin/python3 -c \"import numpy; a = numpy.load('" + npy +
                                     "'); print(a.dtype, a.shape[0])\"");
  EXPECT_EQ(np_rc, 0) << np_out;
  EXPECT_NE(np_out.find("float32 " + std::to_string(Architecture::Parse(kModel).ParameterCount())),
            std::string::npos)
      << np_out;
  auto store = CheckpointStore::Open(db(), /*read_only=*/true);
  std::string bytes;
  {
    std::ifstream in(npy, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto params = *store->LoadParams(1, 2);
  ASSERT_GE(bytes.size(), params.size() * 4);
  EXPECT_EQ(std::memcmp(bytes.data() + bytes.size() - params.size() * 4, params.data(),
                        params.size() * 4),
            0);

  // The dashboard in a real browser: after its scripts ran, the DOM has a
  // point per committed round and a row per device.
  if (!fs::exists("/usr/bin/chromium")) {
    ADD_FAILURE() << "chromium is missing: scripts/install-deps.sh installs it";
    return;
  }
  const std::string flags =
      "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
      "--disable-background-networking --disable-component-update --disable-sync "
      "--virtual-time-budget=5000 --window-size=1280,900 ";
  const auto [dom_rc, dom] =
      Shell("timeout 90 /usr/bin/chromium " + flags + "--user-data-dir=" + Path("chrome1") +
            " --dump-dom " + base + "/");
  ASSERT_EQ(dom_rc, 0) << dom.substr(0, 2000);
  EXPECT_NE(dom.find("data-loaded=\"true\""), std::string::npos)
      << "the page's script did not finish";
  EXPECT_GE(Count(dom, "class=\"point test_accuracy\""), 3u);
  EXPECT_GE(Count(dom, "class=\"time-point test_accuracy\""), 3u) << "accuracy against time";
  EXPECT_EQ(Count(dom, "<tr class=\"device\""), 2u);
  EXPECT_NE(dom.find("data-id=\"dev0\""), std::string::npos);
  const std::string shot = std::string(FEDSGD_TEST_ARTIFACTS_DIR) + "/dashboard.png";
  const auto [shot_rc, shot_out] =
      Shell("timeout 90 /usr/bin/chromium " + flags + "--user-data-dir=" + Path("chrome2") +
            " --screenshot=" + shot + " " + base + "/");
  EXPECT_EQ(shot_rc, 0) << shot_out;
  EXPECT_TRUE(fs::exists(shot) && fs::file_size(shot) > 10000) << "no screenshot at " << shot;
  std::cerr << "dashboard screenshot: " << shot << "\n";

  coordinator->Signal(SIGTERM);
  EXPECT_EQ(coordinator->Wait(5s), 0);
}

}  // namespace
}  // namespace fedsgd
