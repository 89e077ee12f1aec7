// ConnectionMonitor: counts every disconnect however many wait unread. With
// libzmq's default queue of 1000 + 1000 events, the I/O thread blocked on the
// 2001st: connections stopped being served, and the destructor deadlocked
// (seen at the end of a 10,000-device run).
#include "connection_monitor.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <zmq.hpp>

namespace fedsgd {
namespace {

TEST(ConnectionMonitorTest, CountsMoreDisconnectsThanAQueueHoldsWhileUnread) {
  zmq::context_t context(1);
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  constexpr int kPeers = 2500;
  {
    ConnectionMonitor monitor(context, router, "test");
    for (int i = 0; i < kPeers; ++i) {
      zmq::socket_t dealer(context, zmq::socket_type::dealer);
      dealer.set(zmq::sockopt::linger, 0);
      dealer.connect(endpoint);
      dealer.send(zmq::str_buffer("hello"), zmq::send_flags::none);
      // Served: an I/O thread blocked on the monitor would serve no one.
      zmq::message_t id, body;
      router.set(zmq::sockopt::rcvtimeo, 10000);
      ASSERT_TRUE(router.recv(id)) << "peer " << i << " was not served";
      ASSERT_TRUE(router.recv(body));
    }
    // Every one of them counted, once the events are read.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (monitor.disconnected() < kPeers && std::chrono::steady_clock::now() < deadline) {
      monitor.Poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(monitor.disconnected(), static_cast<std::uint64_t>(kPeers));
    EXPECT_EQ(monitor.handshakes_failed(), 0u);
  }  // and the destructor returns
}

}  // namespace
}  // namespace fedsgd
