#include "zap_handler.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <zmq.hpp>

#include "fedsgd/curve_keys.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

// Speaks ZAP 1.0 (ZeroMQ RFC 27) to the handler over inproc, as libzmq does.
class ZapHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedsgd_zap_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    known_ = curve::Generate();
    std::ofstream(dir_ / "board-01.key") << known_.public_key << "\n";
    store_ = std::make_unique<KeyStore>(dir_.string());
    handler_ = std::make_unique<ZapHandler>(context_, *store_);
  }
  void TearDown() override {
    handler_.reset();
    fs::remove_all(dir_);
  }
  // Returns {status code, user id}.
  std::pair<std::string, std::string> Ask(const std::string& domain, const std::string& mechanism,
                                          const std::string& public_z85) {
    zmq::socket_t req(context_, zmq::socket_type::req);
    req.set(zmq::sockopt::linger, 0);
    req.set(zmq::sockopt::rcvtimeo, 5000);
    req.connect("inproc://zeromq.zap.01");
    std::uint8_t key[32] = {};
    if (!public_z85.empty()) zmq_z85_decode(key, public_z85.c_str());
    const std::vector<std::string> frames = {"1.0", "7", domain, "127.0.0.1", "", mechanism};
    for (const std::string& f : frames) req.send(zmq::buffer(f), zmq::send_flags::sndmore);
    req.send(zmq::buffer(key, 32), zmq::send_flags::none);
    std::vector<std::string> reply;
    zmq::message_t m;
    do {
      if (!req.recv(m)) return {"timeout", ""};
      reply.push_back(m.to_string());
    } while (m.more());
    EXPECT_EQ(reply.size(), 6u);
    EXPECT_EQ(reply[0], "1.0");
    EXPECT_EQ(reply[1], "7");
    return {reply[2], reply[4]};
  }
  bool Logged(const std::string& what) {
    for (const std::string& line : handler_->TakeLog()) {
      if (line.find(what) != std::string::npos) return true;
    }
    return false;
  }

  fs::path dir_;
  curve::KeyPair known_;
  zmq::context_t context_;
  std::unique_ptr<KeyStore> store_;
  std::unique_ptr<ZapHandler> handler_;
};

TEST_F(ZapHandlerTest, AdmitsListedKeyAsItsDeviceId) {
  EXPECT_EQ(Ask("fedsgd", "CURVE", known_.public_key),
            (std::pair<std::string, std::string>{"200", "board-01"}));
  EXPECT_EQ(handler_->admitted(), 1u);
}

TEST_F(ZapHandlerTest, RefusesUnknownKeyAndSaysWhich) {
  const std::string stranger = curve::Generate().public_key;
  EXPECT_EQ(Ask("fedsgd", "CURVE", stranger).first, "400");
  EXPECT_TRUE(Logged("unknown key " + stranger.substr(0, 8)));
  EXPECT_EQ(handler_->refused(), 1u);
}

TEST_F(ZapHandlerTest, RefusesOtherDomainsAndMechanisms) {
  EXPECT_EQ(Ask("other", "CURVE", known_.public_key).first, "400");
  EXPECT_EQ(Ask("fedsgd", "PLAIN", known_.public_key).first, "400");
  EXPECT_EQ(handler_->refused(), 2u);
}

TEST_F(ZapHandlerTest, ReloadRevokesOnTheHandlerThread) {
  fs::remove(dir_ / "board-01.key");
  handler_->RequestReload();
  for (int i = 0; i < 100 && store_->Snapshot()->generation < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(store_->Snapshot()->generation, 2u);
  EXPECT_EQ(Ask("fedsgd", "CURVE", known_.public_key).first, "400");
  EXPECT_TRUE(Logged("reloaded"));
}

}  // namespace
}  // namespace fedsgd
