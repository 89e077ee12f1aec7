// ApplySocketLimits: every option lands on the socket, and a frame over
// ZMQ_MAXMSGSIZE never reaches the application.
#include "fedsgd/socket_options.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>

#include "fedsgd/wire.h"

namespace fedsgd {
namespace {

TEST(SocketOptionsTest, SetsEveryLimit) {
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::router);
  SocketLimits limits;
  limits.max_frame_bytes = MaxFrameBytes(1000);
  limits.send_hwm = 4;
  limits.receive_hwm = 5;
  ApplySocketLimits(s, limits);
  EXPECT_EQ(s.get(zmq::sockopt::maxmsgsize), 64 * 1024 + 64 * 1024);
  EXPECT_EQ(s.get(zmq::sockopt::handshake_ivl), limits.handshake_ms);
  EXPECT_EQ(s.get(zmq::sockopt::heartbeat_ivl), 0) << "no ZMTP pings by default";
  EXPECT_EQ(s.get(zmq::sockopt::tcp_keepalive), 1);
  EXPECT_EQ(s.get(zmq::sockopt::tcp_keepalive_idle), 30);
  EXPECT_EQ(s.get(zmq::sockopt::tcp_keepalive_intvl), 5);
  EXPECT_EQ(s.get(zmq::sockopt::tcp_keepalive_cnt), 3);
  EXPECT_EQ(s.get(zmq::sockopt::sndhwm), 4);
  EXPECT_EQ(s.get(zmq::sockopt::rcvhwm), 5);
  EXPECT_EQ(MaxFrameBytes(1'000'000), 4'000'000 + 64 * 1024);

  zmq::socket_t pinging(ctx, zmq::socket_type::dealer);
  limits.heartbeat_interval_ms = 5000;
  ApplySocketLimits(pinging, limits);
  EXPECT_EQ(pinging.get(zmq::sockopt::heartbeat_ivl), 5000);
  EXPECT_EQ(pinging.get(zmq::sockopt::heartbeat_timeout), limits.heartbeat_timeout_ms);
}

TEST(SocketOptionsTest, ClientsAcceptTheLargestTensorTheProtocolAllows) {
  // A daemon or gateway does not know the model's size before its welcome.
  const SocketLimits limits = ClientReceiveLimits();
  EXPECT_EQ(limits.max_frame_bytes, MaxFrameBytes(wire::Limits{}.max_params));
  EXPECT_GE(limits.max_frame_bytes,
            static_cast<std::int64_t>(wire::Limits{}.max_params * sizeof(float)));
}

TEST(SocketOptionsTest, AFrameOverTheLimitIsDroppedByLibzmq) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  SocketLimits limits;
  limits.max_frame_bytes = 100'000;
  ApplySocketLimits(router, limits);
  router.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  dealer.connect(router.get(zmq::sockopt::last_endpoint));
  zmq::message_t big(std::string(100'001, 'x'));
  ASSERT_TRUE(dealer.send(big, zmq::send_flags::none));
  std::vector<zmq::pollitem_t> items = {{router.handle(), 0, ZMQ_POLLIN, 0}};
  wire::Poll(items, std::chrono::milliseconds(500));
  EXPECT_FALSE(items[0].revents & ZMQ_POLLIN);
}

}  // namespace
}  // namespace fedsgd
