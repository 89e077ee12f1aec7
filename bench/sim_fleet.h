// The simulated devices of fedsgd_fleet_load (fleet_load.cpp): the
// options they run with, their shared counters, and a Fleet of them, each a
// DEALER socket speaking the real protocol (docs/protocol.md), driven by
// one or more threads of the process that holds it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "fedsgd/wire.h"

namespace fedsgd {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string coordinator;
  std::vector<std::size_t> devices{100, 1000};
  std::uint64_t rounds = 3;
  std::string clients_per_round = "0.1";
  std::string model = "mlp:784-128-10";
  double train_ms_min = 0;
  double train_ms_max = 200;
  double failure_rate = 0;
  int heartbeat_ms = 1000;
  double join_rate = 2000;
  int threads = 1;
  std::size_t upload_slots = 64;
  double round_timeout = 30;
  // > 0: a device told to come back after at least this many seconds
  // closes its connection until then (see --idle-disconnect).
  double idle_disconnect = 0;
  // Each connected device also subscribes to the broadcasts, as the daemon
  // does (a second connection on the coordinator); closed with the first.
  bool subscribe = false;
  bool json = false;
  std::vector<std::string> extra;
};

// Counters every device thread adds to.
struct Totals {
  std::atomic<std::uint64_t> heartbeats{0}, updates_sent{0}, accepted{0}, rejected{0},
      dropped_unsent{0}, failed{0}, fetches{0}, welcomes{0}, bad{0}, upload_waits{0},
      disconnects{0}, broadcasts{0};
  std::mutex mutex;
  std::map<std::string, std::uint64_t> rejected_by_reason;
};

// One simulated device: its socket and where it is in a round.
struct SimDevice {
  enum class State { kJoining, kIdle, kFetching, kTraining, kAsking };
  std::string id;
  std::unique_ptr<zmq::socket_t> socket;
  std::unique_ptr<zmq::socket_t> sub;  // --subscribe: the broadcasts
  std::string publish;                 // the welcome's publish endpoint
  State state = State::kJoining;
  double join_at = 0;
  double next_heartbeat = 0;
  int heartbeat_ms = 1000;
  std::uint64_t version = 0;
  bool has_model = false;          // a selection welcome comes without weights
  std::uint64_t round = 0;         // the round being worked on
  std::uint64_t last_trained = 0;  // newest round finished (sent or dropped)
  double train_done_at = 0;
  double next_ask = 0;
  bool fails = false;  // this round: trains and never sends
};

class Fleet {
 public:
  // Devices first .. last - 1 of the fleet.
  Fleet(const Options& o, std::size_t first, std::size_t last, std::size_t parameters,
        const std::string& endpoint, Totals& totals)
      : o_(o), parameters_(parameters), endpoint_(endpoint), totals_(totals) {
    context_.set(zmq::ctxopt::max_sockets, static_cast<int>(2 * (last - first) + 64));
    for (std::size_t i = first; i < last; ++i) {
      SimDevice d;
      d.id = "sim" + std::to_string(i);
      d.join_at = static_cast<double>(i) / o.join_rate;
      d.heartbeat_ms = o.heartbeat_ms;
      devices_.push_back(std::move(d));
    }
    // Every update's tensor: one frame of zeros, shared by reference.
    std::vector<float> zeros(parameters_, 0.0f);
    wire::Update u;
    u.payload = std::move(zeros);
    zero_frame_ = std::move(wire::Encode(std::move(u)).back());
  }

  void Run(const std::atomic<bool>& stop) {
    std::vector<std::thread> threads;
    for (int t = 0; t < o_.threads; ++t) {
      threads.emplace_back([this, t, &stop] { Loop(static_cast<std::size_t>(t), stop); });
    }
    for (std::thread& t : threads) t.join();
  }

 private:
  double Now() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  void Send(SimDevice& d, wire::Message m) {
    if (!wire::Send(*d.socket, std::move(m))) ++totals_.bad;
  }

  void Heartbeat(SimDevice& d, double now, const char* state) {
    Send(d, wire::Heartbeat{d.id, state, d.round, 0, 0, 0});
    ++totals_.heartbeats;
    d.next_heartbeat = now + d.heartbeat_ms / 1000.0;
  }

  void StartTraining(SimDevice& d, double now) {
    thread_local std::mt19937_64 rng(std::hash<std::thread::id>{}(std::this_thread::get_id()));
    std::uniform_real_distribution<double> ms(o_.train_ms_min, o_.train_ms_max);
    std::bernoulli_distribution fail(o_.failure_rate);
    d.state = SimDevice::State::kTraining;
    d.train_done_at = now + ms(rng) / 1000.0;
    d.fails = fail(rng);
  }

  void SendUpdate(SimDevice& d) {
    wire::Update u{d.id, d.round, d.version, 100, 0.1, "delta", 0.01, {}, std::nullopt};
    std::vector<zmq::message_t> frames = wire::Encode(std::move(u));
    frames.back().copy(zero_frame_);
    if (wire::SendFrames(*d.socket, std::move(frames))) {
      ++totals_.updates_sent;
    } else {
      ++totals_.bad;
    }
    d.last_trained = d.round;
    d.state = SimDevice::State::kIdle;
  }

  void OnMessage(SimDevice& d, std::vector<zmq::message_t>& frames, double now) {
    // A welcome without weights is legal with selection: bound, not fixed.
    wire::Limits limits;
    limits.max_params = parameters_;
    wire::DecodeResult r = wire::Decode(frames, limits);
    if (!r.ok()) {
      ++totals_.bad;
      return;
    }
    wire::Message& m = r.message();
    if (auto* w = std::get_if<wire::Welcome>(&m)) {
      ++totals_.welcomes;
      d.state = SimDevice::State::kIdle;
      d.version = w->model_version;
      d.has_model = w->params.size() == parameters_;
      d.heartbeat_ms = w->heartbeat_ms;
      d.next_heartbeat = now + 0.2;
      d.publish = w->publish_endpoint;
      Subscribe(d);
    } else if (auto* a = std::get_if<wire::Ack>(&m)) {
      if (a->heartbeat_ms) d.heartbeat_ms = a->heartbeat_ms;
      if (a->detail == "accepted") {
        ++totals_.accepted;
        return;
      }
      if (d.state == SimDevice::State::kAsking) {
        if (a->round != d.round || (a->selected && !*a->selected)) {
          ++totals_.dropped_unsent;  // the round closed without it
          d.last_trained = d.round;
          d.state = SimDevice::State::kIdle;
        } else if (a->upload && *a->upload) {
          SendUpdate(d);
        } else if (a->upload) {
          ++totals_.upload_waits;
          d.next_ask = now + a->retry_ms / 1000.0;
        }
        return;
      }
      if (d.state != SimDevice::State::kIdle) return;
      const bool invited = a->selected ? *a->selected : a->round > 0;
      if (!invited || a->round <= d.last_trained) {
        // Not wanted now and told to come back later: its connection need
        // not be held open until then (Tick reconnects for the heartbeat).
        if (o_.idle_disconnect > 0 && d.heartbeat_ms >= o_.idle_disconnect * 1000) {
          d.socket.reset();
          d.sub.reset();
          ++totals_.disconnects;
        }
      } else {
        d.round = a->round;
        if (a->model_version > d.version || !d.has_model) {
          Send(d, wire::FetchModel{d.id});
          ++totals_.fetches;
          d.state = SimDevice::State::kFetching;
        } else {
          StartTraining(d, now);
        }
      }
    } else if (auto* model = std::get_if<wire::Model>(&m)) {
      if (model->params.size() != parameters_) {
        ++totals_.bad;
        return;
      }
      d.version = model->model_version;
      d.has_model = true;
      if (d.state == SimDevice::State::kFetching) {
        if (model->round == d.round) {
          StartTraining(d, now);
        } else {
          d.state = SimDevice::State::kIdle;
        }
      }
    } else if (auto* reject = std::get_if<wire::Reject>(&m)) {
      ++totals_.rejected;
      {
        std::lock_guard<std::mutex> lock(totals_.mutex);
        ++totals_.rejected_by_reason[std::string(wire::ToString(reject->reason))];
      }
      if (reject->reason == wire::RejectReason::kUnknownDevice) {
        d.state = SimDevice::State::kJoining;
        d.join_at = now;
      } else if (d.state == SimDevice::State::kFetching) {
        d.state = SimDevice::State::kIdle;
      }
    }
  }

  void Connect(SimDevice& d) {
    if (d.socket) return;
    d.socket = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
    d.socket->set(zmq::sockopt::linger, 0);
    d.socket->connect(endpoint_);
    Subscribe(d);
  }

  void Subscribe(SimDevice& d) {
    if (!o_.subscribe || d.sub || d.publish.empty()) return;
    d.sub = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::sub);
    d.sub->set(zmq::sockopt::linger, 0);
    d.sub->set(zmq::sockopt::subscribe, "");
    d.sub->connect(d.publish);
  }

  void Tick(SimDevice& d, double now) {
    using State = SimDevice::State;
    if (d.state == State::kJoining) {
      if (now < d.join_at) return;
      Connect(d);
      Send(d, wire::Join{d.id, 1, 100, "fedsgd_fleet_load"});
      d.join_at = now + 30;  // again if no welcome comes (a busy coordinator is slow)
      return;
    }
    if (d.state == State::kTraining && now >= d.train_done_at) {
      if (d.fails) {
        ++totals_.failed;
        d.last_trained = d.round;
        d.state = State::kIdle;
      } else if (o_.clients_per_round != "0") {
        d.state = State::kAsking;
        d.next_ask = now;
      } else {
        SendUpdate(d);
      }
    }
    if (d.state == State::kAsking && now >= d.next_ask) {
      Heartbeat(d, now, "sending");
      d.next_ask = now + 3.0;  // the reply says sooner
      return;
    }
    if (now >= d.next_heartbeat) {
      Connect(d);  // again, after an idle disconnect
      Heartbeat(d, now, d.state == State::kTraining ? "training" : "idle");
    }
  }

  void Loop(std::size_t part, const std::atomic<bool>& stop) {
    std::vector<SimDevice*> mine;
    for (std::size_t i = part; i < devices_.size(); i += static_cast<std::size_t>(o_.threads)) {
      mine.push_back(&devices_[i]);
    }
    std::vector<zmq::pollitem_t> items;
    std::vector<SimDevice*> polled;  // items[i]'s device; its sub if i >= the dealers
    double last_tick = -1;
    while (!stop.load()) {
      items.clear();
      polled.clear();
      for (SimDevice* d : mine) {
        if (!d->socket) continue;
        items.push_back({d->socket->handle(), 0, ZMQ_POLLIN, 0});
        polled.push_back(d);
      }
      const std::size_t dealers = items.size();
      for (SimDevice* d : mine) {
        if (!d->sub) continue;
        items.push_back({d->sub->handle(), 0, ZMQ_POLLIN, 0});
        polled.push_back(d);
      }
      if (items.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      } else {
        wire::Poll(items, std::chrono::milliseconds(5));
      }
      double now = Now();
      for (std::size_t i = dealers; i < items.size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        // Read and dropped: the devices fetch the model when invited.
        while (polled[i]->sub) {
          if (!wire::ReceiveFrames(*polled[i]->sub, zmq::recv_flags::dontwait)) break;
          ++totals_.broadcasts;
        }
      }
      for (std::size_t i = 0; i < dealers; ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        // OnMessage may close the socket (an idle disconnect).
        while (polled[i]->socket) {
          auto frames = wire::ReceiveFrames(*polled[i]->socket, zmq::recv_flags::dontwait);
          if (!frames) break;
          OnMessage(*polled[i], *frames, now);
        }
      }
      now = Now();
      if (now - last_tick < 0.002) continue;
      last_tick = now;
      for (SimDevice* d : mine) Tick(*d, now);
    }
  }

  const Options& o_;
  std::size_t parameters_;
  std::string endpoint_;
  Totals& totals_;
  zmq::context_t context_{1};
  std::vector<SimDevice> devices_;
  zmq::message_t zero_frame_;
  Clock::time_point start_ = Clock::now();
};

}  // namespace fedsgd
