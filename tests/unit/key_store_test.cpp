#include "key_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fedsgd/curve_keys.h"
#include "fedsgd/error.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

class KeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedsgd_key_store_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text << "\n";
  }
  bool Mentions(const AuthorizedKeys& keys, const std::string& what) {
    for (const std::string& p : keys.problems) {
      if (p.find(what) != std::string::npos) return true;
    }
    return false;
  }

  fs::path dir_;
};

TEST_F(KeyStoreTest, ReadsOneKeyPerDevice) {
  const std::string a = curve::Generate().public_key, b = curve::Generate().public_key;
  Write("board-01.key", "# comment\n" + a);
  Write("board-02.key", b);
  Write(".hidden", "x");
  Write("board-03.key~", "editor backup");
  const AuthorizedKeys keys = ReadAuthorizedKeys(dir_.string());
  EXPECT_TRUE(keys.problems.empty()) << keys.problems.front();
  EXPECT_EQ(keys.id_by_key.at(a), "board-01");
  EXPECT_EQ(keys.id_by_key.at(b), "board-02");
  EXPECT_TRUE(keys.Authorized("board-02"));
  EXPECT_FALSE(keys.Authorized("board-03"));
}

TEST_F(KeyStoreTest, RefusesBadEntriesWithReasons) {
  const std::string shared = curve::Generate().public_key;
  Write("bad id!.key", curve::Generate().public_key);
  Write("notes.txt", "hello");
  Write("dev.key_secret", curve::Generate().secret_key);
  Write("garbage.key", "not a key");
  Write("twin1.key", shared);
  Write("twin2.key", shared);
  Write("good.key", curve::Generate().public_key);
  const AuthorizedKeys keys = ReadAuthorizedKeys(dir_.string());
  EXPECT_EQ(keys.key_by_id.size(), 1u);
  EXPECT_TRUE(keys.Authorized("good"));
  EXPECT_TRUE(Mentions(keys, "is not a device id"));
  EXPECT_TRUE(Mentions(keys, "not a <device-id>.key file"));
  EXPECT_TRUE(Mentions(keys, "secret key does not belong here"));
  EXPECT_TRUE(Mentions(keys, "Z85 characters"));
  EXPECT_TRUE(Mentions(keys, "several devices (twin1, twin2)"));
  EXPECT_FALSE(keys.Authorized("twin1"));
}

TEST_F(KeyStoreTest, ReloadSwapsSnapshotsAndKeepsOldOnes) {
  Write("a.key", curve::Generate().public_key);
  KeyStore store(dir_.string());
  const auto first = store.Snapshot();
  EXPECT_EQ(first->generation, 1u);
  fs::remove(dir_ / "a.key");
  Write("b.key", curve::Generate().public_key);
  const auto second = store.Reload();
  EXPECT_EQ(second->generation, 2u);
  EXPECT_TRUE(first->Authorized("a"));  // a reader's snapshot never changes under it
  EXPECT_FALSE(store.Snapshot()->Authorized("a"));
  EXPECT_TRUE(store.Snapshot()->Authorized("b"));
  fs::remove_all(dir_);
  EXPECT_THROW(store.Reload(), Error);
  EXPECT_TRUE(store.Snapshot()->Authorized("b"));  // a failed reload changes nothing
  EXPECT_THROW(KeyStore("/nonexistent/keys"), Error);
}

}  // namespace
}  // namespace fedsgd
