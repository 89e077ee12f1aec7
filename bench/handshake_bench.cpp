// What CURVE costs a connection: a new DEALER connects to a ROUTER on
// loopback, sends one small request and waits for the reply, N times,
// plain ZMTP against CURVE with the coordinator's ZAP handler (a keys
// directory holding the client's key, as --authorized-keys). Prints the
// median and 90th percentile per connection (connect + handshake + first
// round trip), and the cost of one 407 KB model (MLP 784-128-10) each way
// once connected, so the handshake can be set against a round's traffic.
//
//   build/bench/fedsgd_handshake_bench [CONNECTIONS]   (default 200)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "fedsgd/curve_keys.h"
#include "fedsgd/curve_socket.h"
#include "key_store.h"
#include "zap_handler.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Figures {
  double median_ms = 0, p90_ms = 0, model_ms = 0;
};

// The server answers every message with its payload, on this thread.
Figures Measure(int connections, bool curve, const fs::path& keys_dir) {
  zmq::context_t context;
  fedsgd::curve::KeyPair server_keys, client_keys;
  std::unique_ptr<fedsgd::KeyStore> store;
  std::unique_ptr<fedsgd::ZapHandler> zap;
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  if (curve) {
    server_keys = fedsgd::curve::Generate();
    client_keys = fedsgd::curve::Generate();
    fs::create_directories(keys_dir);
    fedsgd::curve::WriteKeyPair((keys_dir / "bench").string(), client_keys);
    fs::remove(fedsgd::curve::SecretPath((keys_dir / "bench").string()));
    store = std::make_unique<fedsgd::KeyStore>(keys_dir.string());
    zap = std::make_unique<fedsgd::ZapHandler>(context, *store);
    fedsgd::curve::MakeServer(router, server_keys, fedsgd::kZapDomain);
  }
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);

  auto serve = [&](int messages) {
    for (int i = 0; i < messages; ++i) {
      zmq::message_t id, body;
      (void)router.recv(id);
      (void)router.recv(body);
      router.send(id, zmq::send_flags::sndmore);
      router.send(body, zmq::send_flags::none);
    }
  };
  auto client = [&] {
    zmq::socket_t dealer(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    if (curve) fedsgd::curve::MakeClient(dealer, client_keys, server_keys.public_key);
    return dealer;
  };

  std::vector<double> times;
  for (int i = 0; i < connections; ++i) {
    const auto t0 = Clock::now();
    zmq::socket_t dealer = client();
    dealer.connect(endpoint);
    dealer.send(zmq::buffer(std::string("ping")), zmq::send_flags::none);
    serve(1);
    zmq::message_t reply;
    (void)dealer.recv(reply);
    times.push_back(Ms(Clock::now() - t0));
  }
  std::sort(times.begin(), times.end());
  Figures f;
  f.median_ms = times[times.size() / 2];
  f.p90_ms = times[times.size() * 9 / 10];

  // One connection, then models of 101,770 floats there and back.
  zmq::socket_t dealer = client();
  dealer.connect(endpoint);
  const std::vector<float> model(101770, 0.5f);
  constexpr int kModels = 50;
  const auto t0 = Clock::now();
  for (int i = 0; i < kModels; ++i) {
    dealer.send(zmq::buffer(model), zmq::send_flags::none);
    serve(1);
    zmq::message_t reply;
    (void)dealer.recv(reply);
  }
  f.model_ms = Ms(Clock::now() - t0) / kModels;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const int connections = argc > 1 ? std::max(10, std::atoi(argv[1])) : 200;
  const fs::path dir =
      fs::temp_directory_path() / ("fedsgd_handshake_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const Figures plain = Measure(connections, false, dir);
  const Figures curve = Measure(connections, true, dir);
  fs::remove_all(dir);
  std::printf("%d connections each, loopback; per connection: connect + handshake + first reply\n",
              connections);
  std::printf("%-22s %12s %12s %22s\n", "", "median ms", "p90 ms", "407 KB model both ways");
  std::printf("%-22s %12.3f %12.3f %19.3f ms\n", "plain ZMTP", plain.median_ms, plain.p90_ms,
              plain.model_ms);
  std::printf("%-22s %12.3f %12.3f %19.3f ms\n", "CURVE + ZAP", curve.median_ms, curve.p90_ms,
              curve.model_ms);
  std::printf("CURVE adds %.3f ms per connection and %.3f ms per model round trip\n",
              curve.median_ms - plain.median_ms, curve.model_ms - plain.model_ms);
  return 0;
}
