// FleetFixture: what the end-to-end tests share: a temporary directory,
// free loopback ports, the real fedsgd-coordinator and fedsgd-daemon
// binaries started as processes (their logs printed when a test fails),
// HTTP reads of the coordinator's API, and an SQLite integrity check.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "process.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::FreePort;
using testing::Process;

constexpr const char* kData = "/usr/share/datasets/fashion-mnist";
constexpr const char* kModel = "mlp:784-32-10";

class FleetFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kData))
      GTEST_SKIP() << kData << " is missing (scripts/install-deps.sh installs it)";
    dir_ = fs::temp_directory_path() /
           ("fedsgd_it_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    listen_ = FreePort();
    publish_ = FreePort();
    http_ = FreePort();
  }
  void TearDown() override {
    if (HasFailure()) {
      for (const auto& entry : fs::directory_iterator(dir_)) {
        if (entry.path().extension() == ".log") {
          std::ifstream in(entry.path());
          std::cerr << "---- " << entry.path().filename() << "\n" << in.rdbuf() << "\n";
        }
      }
    }
    fs::remove_all(dir_);
  }

  std::string db() const { return (dir_ / "run.db").string(); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::unique_ptr<Process> Coordinator(const std::string& tag, std::vector<std::string> extra) {
    std::vector<std::string> args = {FEDSGD_COORDINATOR_BIN,
                                     "--listen",
                                     "tcp://127.0.0.1:" + std::to_string(listen_),
                                     "--publish",
                                     "tcp://127.0.0.1:" + std::to_string(publish_),
                                     "--http",
                                     "127.0.0.1:" + std::to_string(http_),
                                     "--db",
                                     db(),
                                     "--model",
                                     kModel,
                                     "--local-steps",
                                     "60",
                                     "--batch",
                                     "32",
                                     "--lr",
                                     "0.1",
                                     "--heartbeat-ms",
                                     "200",
                                     "--eval-data",
                                     kData};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(args, Path(tag + ".out"), Path(tag + ".log"));
  }

  std::unique_ptr<Process> Daemon(int i, int n, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {FEDSGD_DAEMON_BIN,
                                     "--coordinator",
                                     "tcp://127.0.0.1:" + std::to_string(listen_),
                                     "--id",
                                     "dev" + std::to_string(i),
                                     "--data",
                                     kData,
                                     "--shard",
                                     std::to_string(i) + "/" + std::to_string(n),
                                     "--threads",
                                     "1",
                                     "--exit-when-done"};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(args, Path("dev" + std::to_string(i) + ".out"),
                                     Path("dev" + std::to_string(i) + ".log"));
  }

  nlohmann::json Get(const std::string& path) {
    httplib::Client client("127.0.0.1", http_);
    client.set_connection_timeout(1, 0);
    client.set_read_timeout(2, 0);
    auto res = client.Get(path.c_str());
    if (!res || res->status != 200) return nullptr;
    return nlohmann::json::parse(res->body, nullptr, false);
  }

  // The newest committed round, from /v1/status (0 while it is not up).
  std::uint64_t CommittedRound() {
    const nlohmann::json s = Get("/v1/status");
    return s.is_object() ? s.value("round", std::uint64_t{0}) : 0;
  }

  static bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (done()) return true;
      std::this_thread::sleep_for(50ms);
    }
    return done();
  }

  std::string IntegrityCheck() {
    sqlite3* handle = nullptr;
    if (sqlite3_open_v2(db().c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      sqlite3_close(handle);
      return "cannot open";
    }
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(handle, "PRAGMA integrity_check", -1, &st, nullptr);
    std::string verdict = sqlite3_step(st) == SQLITE_ROW
                              ? reinterpret_cast<const char*>(sqlite3_column_text(st, 0))
                              : "no answer";
    sqlite3_finalize(st);
    sqlite3_close(handle);
    return verdict;
  }

  fs::path dir_;
  int listen_ = 0, publish_ = 0, http_ = 0;
};

}  // namespace
}  // namespace fedsgd
