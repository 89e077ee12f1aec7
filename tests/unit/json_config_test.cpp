#include "fedsgd/json_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace fedsgd {
namespace {

class JsonConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("fedsgd_json_config_" + std::to_string(::getpid()) + ".json");
    AddJsonConfig(app_);
    app_.add_option("--coordinator", coordinator_);
    app_.add_option("--threads", threads_);
    app_.add_flag("--verbose", verbose_);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  void Write(const std::string& text) { std::ofstream(path_) << text; }
  void Parse(std::vector<std::string> args) {
    args.insert(args.begin(), "prog");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    app_.parse(static_cast<int>(argv.size()), argv.data());
  }

  std::filesystem::path path_;
  CLI::App app_;
  std::string coordinator_;
  int threads_ = 0;
  bool verbose_ = false;
};

TEST_F(JsonConfigTest, ReadsValuesAndFlags) {
  Write(R"({"coordinator": "tcp://10.0.0.2:7070", "threads": 3, "verbose": true})");
  Parse({"--config", path_.string()});
  EXPECT_EQ(coordinator_, "tcp://10.0.0.2:7070");
  EXPECT_EQ(threads_, 3);
  EXPECT_TRUE(verbose_);
}

TEST_F(JsonConfigTest, CommandLineWins) {
  Write(R"({"coordinator": "tcp://10.0.0.2:7070", "threads": 3})");
  Parse({"--config", path_.string(), "--threads", "1"});
  EXPECT_EQ(threads_, 1);
  EXPECT_EQ(coordinator_, "tcp://10.0.0.2:7070");
}

TEST_F(JsonConfigTest, UnknownKeyIsAnError) {
  Write(R"({"coordinatr": "tcp://x:1"})");
  EXPECT_THROW(Parse({"--config", path_.string()}), CLI::ParseError);
}

TEST_F(JsonConfigTest, MalformedJsonIsAnError) {
  Write(R"({"threads": )");
  EXPECT_THROW(Parse({"--config", path_.string()}), CLI::ParseError);
  Write(R"([1, 2])");
  EXPECT_THROW(Parse({"--config", path_.string()}), CLI::ParseError);
  Write(R"({"threads": {"nested": 1}})");
  EXPECT_THROW(Parse({"--config", path_.string()}), CLI::ParseError);
}

TEST_F(JsonConfigTest, MissingFileIsAnError) {
  EXPECT_THROW(Parse({"--config", "/nonexistent/fedsgd.json"}), CLI::ParseError);
}

}  // namespace
}  // namespace fedsgd
