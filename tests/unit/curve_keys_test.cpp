#include "fedsgd/curve_keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fedsgd/curve_socket.h"
#include "fedsgd/error.h"

namespace fedsgd::curve {
namespace {

namespace fs = std::filesystem;

class CurveKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedsgd_curve_keys_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  void Write(const std::string& name, const std::string& text, mode_t mode) {
    std::ofstream(Path(name)) << text;
    ::chmod(Path(name).c_str(), mode);
  }
  static std::string ErrorOf(const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(CurveKeysTest, RoundTripAndModes) {
  ASSERT_TRUE(Available());
  const KeyPair keys = Generate();
  EXPECT_EQ(keys.public_key.size(), kZ85KeyLength);
  EXPECT_EQ(PublicFromSecret(keys.secret_key, "test"), keys.public_key);
  WriteKeyPair(Path("dev"), keys);
  EXPECT_EQ(fs::status(Path("dev.key_secret")).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  const KeyPair loaded = LoadSecretKey(Path("dev.key_secret"));
  EXPECT_EQ(loaded.secret_key, keys.secret_key);
  EXPECT_EQ(loaded.public_key, keys.public_key);
  EXPECT_EQ(LoadPublicKey(Path("dev.key")), keys.public_key);
  // Never overwritten.
  EXPECT_NE(ErrorOf([&] { WriteKeyPair(Path("dev"), Generate()); }).find("exists"),
            std::string::npos);
  EXPECT_EQ(LoadPublicKey(Path("dev.key")), keys.public_key);
}

TEST_F(CurveKeysTest, SecretReadableByOthersIsRefused) {
  const KeyPair keys = Generate();
  Write("open.key_secret", keys.secret_key + "\n", 0640);
  const std::string error = ErrorOf([&] { LoadSecretKey(Path("open.key_secret")); });
  EXPECT_NE(error.find("chmod 600"), std::string::npos) << error;
  EXPECT_NE(error.find(Path("open.key_secret")), std::string::npos) << error;
  EXPECT_NE(error.find("0640"), std::string::npos) << error;
  ::chmod(Path("open.key_secret").c_str(), 0600);
  EXPECT_EQ(LoadSecretKey(Path("open.key_secret")).public_key, keys.public_key);
}

TEST_F(CurveKeysTest, BadZ85IsRefusedWithReason) {
  EXPECT_NE(ErrorOf([] { CheckZ85Key("short", "k"); }).find("40 Z85 characters, this is 5"),
            std::string::npos);
  std::string bad(40, 'a');
  bad[7] = ',';
  EXPECT_NE(ErrorOf([&] { CheckZ85Key(bad, "k"); }).find("character 8"), std::string::npos);
  Write("two.key", Generate().public_key + "\n" + Generate().public_key + "\n", 0644);
  EXPECT_NE(ErrorOf([&] { LoadPublicKey(Path("two.key")); }).find("more than one key"),
            std::string::npos);
  Write("empty.key", "# nothing\n", 0644);
  EXPECT_NE(ErrorOf([&] { LoadPublicKey(Path("empty.key")); }).find("no key"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadSecretKey(Path("missing")); }).find("keygen"), std::string::npos);
}

TEST(CurveSocketTest, LoopbackEndpoints) {
  for (const char* yes : {"tcp://127.0.0.1:7070", "tcp://127.1.2.3:*", "tcp://localhost:1",
                          "tcp://[::1]:7070", "ipc:///tmp/x", "inproc://x"}) {
    EXPECT_TRUE(IsLoopbackEndpoint(yes)) << yes;
  }
  for (const char* no : {"tcp://0.0.0.0:7070", "tcp://*:7070", "tcp://192.168.1.2:7070",
                         "tcp://127.example.org:7070", "tcp://eth0:7070", "tcp://[::]:7070"}) {
    EXPECT_FALSE(IsLoopbackEndpoint(no)) << no;
  }
}

}  // namespace
}  // namespace fedsgd::curve
