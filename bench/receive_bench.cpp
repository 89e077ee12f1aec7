// The coordinator's receive path for one float32 update of the MLP
// 784-128-10 (101,770 parameters, 407,080 bytes), in GB/s of tensor, set
// against memcpy of the same size measured in the same run (issue 11:
// receive + validate + accumulate >= 5 GB/s, no allocation per update):
//
//   memcpy                  memcpy of the tensor's bytes (the yardstick)
//   decode (old)            wire::Decode into Update::payload, + Add to the mean
//   decode+validate         wire::Decode with a wire::TensorBuffer, alone
//   decode+validate+add     the same + WeightedMeanAggregator::Add
//   inproc / tcp            DEALER -> ROUTER through real zmq sockets: the
//                           coordinator's loop (ReceiveBounded into a reused
//                           BoundedFrames, Decode with a TensorBuffer, Add),
//                           with a sender thread on the other core
//   tcp, raw socket         the same bytes through a plain TCP socket on
//                           loopback, read into one buffer: what the kernel
//                           alone allows, the ceiling of any TCP receive here
//
// Each row cycles through 16 different updates (6.5 MB, more than L2) and
// reports the median and best of 7 repetitions. Heap allocations are counted
// on the receiving thread only: this program replaces malloc and operator
// new (forwarding to glibc), so libzmq's and libstdc++'s calls count too.
//
//   build/bench/fedsgd_receive_bench [--updates N] [--json]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "aggregator.h"
#include "fedsgd/wire.h"

// Allocation counting. glibc lets a program replace malloc when it defines
// malloc, free, calloc and realloc; these forward to glibc's own.
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void __libc_free(void*);
}

namespace {
thread_local long t_mallocs = 0;  // every malloc, calloc, realloc of this thread
thread_local long t_news = 0;     // operator new (which also counts as a malloc)
}  // namespace

extern "C" {
void* malloc(std::size_t size) {
  ++t_mallocs;
  return __libc_malloc(size);
}
void* calloc(std::size_t n, std::size_t size) {
  ++t_mallocs;
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t size) {
  ++t_mallocs;
  return __libc_realloc(p, size);
}
void free(void* p) { __libc_free(p); }
}

void* operator new(std::size_t size) {
  ++t_news;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
// GCC cannot see that this operator new above is malloc's.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

using Clock = std::chrono::steady_clock;
namespace wire = fedsgd::wire;

constexpr std::size_t kParameters = 101770;  // MLP 784-128-10
constexpr std::size_t kTensorBytes = kParameters * sizeof(float);
constexpr int kDistinct = 16;
constexpr int kRepetitions = 7;

struct Row {
  std::string path;
  double median_gbps = 0, best_gbps = 0, us_per_update = 0;
  double news_per_update = 0, mallocs_per_update = 0;
  double borrowed = 0;  // fraction of updates whose tensor was viewed in its frame
};

// One repetition's figures.
struct Run {
  double seconds = 0;
  long news = 0, mallocs = 0;
  int borrowed = 0;
};

Row Summarise(std::string path, std::vector<Run> runs, int updates) {
  std::sort(runs.begin(), runs.end(),
            [](const Run& a, const Run& b) { return a.seconds < b.seconds; });
  const double bytes = static_cast<double>(kTensorBytes) * updates;
  const Run& median = runs[runs.size() / 2];
  Row r;
  r.path = std::move(path);
  r.median_gbps = bytes / median.seconds / 1e9;
  r.best_gbps = bytes / runs.front().seconds / 1e9;
  r.us_per_update = median.seconds / updates * 1e6;
  r.news_per_update = static_cast<double>(median.news) / updates;
  r.mallocs_per_update = static_cast<double>(median.mallocs) / updates;
  r.borrowed = static_cast<double>(median.borrowed) / updates;
  return r;
}

// Times body(i) for i in [0, updates), counting this thread's allocations.
template <typename Body>
Run Time(int updates, Body&& body) {
  const long news = t_news, mallocs = t_mallocs;
  const auto t0 = Clock::now();
  int borrowed = 0;
  for (int i = 0; i < updates; ++i) borrowed += body(i);
  Run run;
  run.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  run.news = t_news - news;
  run.mallocs = t_mallocs - mallocs;
  run.borrowed = borrowed;
  return run;
}

std::vector<std::vector<float>> Tensors() {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0, 0.01f);
  std::vector<std::vector<float>> t(kDistinct, std::vector<float>(kParameters));
  for (auto& row : t)
    for (float& x : row) x = normal(rng);
  return t;
}

wire::Update MakeUpdate(std::vector<float> payload) {
  wire::Update u;
  u.device = "device-0001";
  u.round = 1;
  u.model_version = 0;
  u.samples = 600;
  u.loss = 0.5;
  u.kind = "delta";
  u.payload = std::move(payload);
  return u;
}

wire::Limits UpdateLimits() {
  wire::Limits limits{kParameters};
  limits.update_encoding = wire::TensorEncoding::kFp32;
  return limits;
}

Row Memcpy(const std::vector<std::vector<float>>& tensors, int updates) {
  std::vector<float> out(kParameters);
  std::vector<Run> runs;
  for (int rep = 0; rep < kRepetitions; ++rep) {
    runs.push_back(Time(updates, [&](int i) {
      std::memcpy(out.data(), tensors[i % kDistinct].data(), kTensorBytes);
      asm volatile("" : : "r"(out.data()) : "memory");
      return 0;
    }));
  }
  return Summarise("memcpy", std::move(runs), updates);
}

// Decode + Add on prebuilt messages: `buffered` with a TensorBuffer,
// otherwise into Update::payload as before; `add` false: decode only.
Row Decode(std::vector<std::vector<zmq::message_t>>& messages, int updates, bool buffered,
           bool add) {
  const wire::Limits limits = UpdateLimits();
  wire::TensorBuffer tensor;
  fedsgd::WeightedMeanAggregator mean;
  mean.Begin(kParameters);
  std::vector<Run> runs;
  for (int rep = 0; rep < kRepetitions + 1; ++rep) {  // the first warms up
    Run run = Time(updates, [&](int i) {
      wire::DecodeResult r = buffered ? wire::Decode(messages[i % kDistinct], limits, tensor)
                                      : wire::Decode(messages[i % kDistinct], limits);
      if (!r.ok()) std::abort();
      const auto& u = std::get<wire::Update>(r.message());
      if (add) mean.Add(buffered ? tensor.values() : std::span<const float>(u.payload), 600);
      return buffered && tensor.borrowed() ? 1 : 0;
    });
    if (rep > 0) runs.push_back(run);
  }
  const char* name = !buffered ? "decode (old path) + add"
                     : add     ? "decode+validate+add"
                               : "decode+validate";
  return Summarise(name, std::move(runs), updates);
}

// The coordinator's loop over a ROUTER, fed by a DEALER on another thread.
Row Sockets(const std::vector<std::vector<float>>& tensors, const std::string& endpoint,
            int updates) {
  zmq::context_t context(1);
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::rcvhwm, 0);
  router.bind(endpoint);
  const std::string connect_to = router.get(zmq::sockopt::last_endpoint);
  // Each update's frames, shared with zmq::message_t::copy (no copy of
  // the tensor on the sending side).
  std::vector<std::vector<zmq::message_t>> messages;
  for (const auto& t : tensors) messages.push_back(wire::Encode(MakeUpdate(t)));

  const wire::Limits limits = UpdateLimits();
  wire::BoundedFrames request;
  wire::TensorBuffer tensor;
  fedsgd::WeightedMeanAggregator mean;
  mean.Begin(kParameters);
  std::vector<Run> runs;
  for (int rep = 0; rep < kRepetitions + 1; ++rep) {
    std::atomic<bool> failed{false};
    std::thread sender([&] {
      zmq::socket_t dealer(context, zmq::socket_type::dealer);
      dealer.set(zmq::sockopt::sndhwm, 0);
      dealer.connect(connect_to);
      for (int i = 0; i < updates; ++i) {
        auto& m = messages[i % kDistinct];
        zmq::message_t header, values;
        header.copy(m[0]);
        values.copy(m[1]);
        if (!dealer.send(header, zmq::send_flags::sndmore) ||
            !dealer.send(values, zmq::send_flags::none))
          failed = true;
      }
      // Linger until everything is delivered (the context's default).
    });
    Run run = Time(updates, [&](int) {
      if (!wire::ReceiveBounded(router, 1 + wire::kMaxFrames, request)) std::abort();
      auto& frames = request.frames;
      frames.erase(frames.begin());  // the routing id
      wire::DecodeResult r = wire::Decode(frames, limits, tensor);
      if (!r.ok()) std::abort();
      mean.Add(tensor.values(), 600);
      const int borrowed = tensor.borrowed() ? 1 : 0;
      frames.clear();
      return borrowed;
    });
    sender.join();
    if (failed) std::abort();
    if (rep > 0) runs.push_back(run);
  }
  return Summarise(endpoint.substr(0, endpoint.find(':')) + " socket: receive+decode+add",
                   std::move(runs), updates);
}

// The kernel's ceiling: kTensorBytes per update through a TCP socket on
// loopback, a sender thread writing, this thread reading into one buffer.
Row RawTcp(const std::vector<std::vector<float>>& tensors, int updates) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::perror("raw tcp");
    std::abort();
  }
  std::vector<char> in(kTensorBytes);
  std::vector<Run> runs;
  for (int rep = 0; rep < kRepetitions + 1; ++rep) {
    std::thread sender([&] {
      const int s = socket(AF_INET, SOCK_STREAM, 0);
      if (s < 0 || connect(s, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        std::abort();
      }
      for (int i = 0; i < updates; ++i) {
        const char* p = reinterpret_cast<const char*>(tensors[i % kDistinct].data());
        for (std::size_t sent = 0; sent < kTensorBytes;) {
          const ssize_t n = send(s, p + sent, kTensorBytes - sent, 0);
          if (n <= 0) std::abort();
          sent += static_cast<std::size_t>(n);
        }
      }
      close(s);
    });
    const int peer = accept(listener, nullptr, nullptr);
    if (peer < 0) std::abort();
    Run run = Time(updates, [&](int) {
      for (std::size_t got = 0; got < kTensorBytes;) {
        const ssize_t n = recv(peer, in.data() + got, kTensorBytes - got, 0);
        if (n <= 0) std::abort();
        got += static_cast<std::size_t>(n);
      }
      asm volatile("" : : "r"(in.data()) : "memory");
      return 0;
    });
    sender.join();
    close(peer);
    if (rep > 0) runs.push_back(run);
  }
  close(listener);
  return Summarise("tcp, raw socket: receive only", std::move(runs), updates);
}

}  // namespace

int main(int argc, char** argv) {
  int updates = 1000;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if (arg == "--updates" && i + 1 < argc) {
      updates = std::max(kDistinct, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--updates N] [--json]\n", argv[0]);
      return 2;
    }
  }
  const auto tensors = Tensors();
  std::vector<std::vector<zmq::message_t>> messages;
  for (const auto& t : tensors) messages.push_back(wire::Encode(MakeUpdate(t)));

  std::vector<Row> rows;
  rows.push_back(Memcpy(tensors, updates));
  rows.push_back(Decode(messages, updates, /*buffered=*/false, /*add=*/true));
  rows.push_back(Decode(messages, updates, /*buffered=*/true, /*add=*/false));
  rows.push_back(Decode(messages, updates, /*buffered=*/true, /*add=*/true));
  rows.push_back(Sockets(tensors, "inproc://receive-bench", updates));
  rows.push_back(Sockets(tensors, "tcp://127.0.0.1:*", updates));
  rows.push_back(RawTcp(tensors, updates));
  rows.push_back(Memcpy(tensors, updates));  // again: the machine is shared
  rows.back().path = "memcpy (again, at the end)";

  if (json) {
    nlohmann::json out = {{"parameters", kParameters},
                          {"tensor_bytes", kTensorBytes},
                          {"updates", updates},
                          {"repetitions", kRepetitions},
                          {"rows", nlohmann::json::array()}};
    for (const Row& r : rows) {
      out["rows"].push_back({{"path", r.path},
                             {"median_gbps", r.median_gbps},
                             {"best_gbps", r.best_gbps},
                             {"us_per_update", r.us_per_update},
                             {"operator_new_per_update", r.news_per_update},
                             {"malloc_per_update", r.mallocs_per_update},
                             {"borrowed_fraction", r.borrowed}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf(
      "receive path of one fp32 update: %zu parameters (%zu bytes), %d updates x %d "
      "repetitions per row\n\n",
      kParameters, kTensorBytes, updates, kRepetitions);
  std::printf("%-38s %9s %9s %9s %8s %8s %8s\n", "path", "GB/s med", "GB/s best", "us/update",
              "new/upd", "malloc/u", "borrowed");
  for (const Row& r : rows) {
    std::printf("%-38s %9.2f %9.2f %9.1f %8.2f %8.2f %8.2f\n", r.path.c_str(), r.median_gbps,
                r.best_gbps, r.us_per_update, r.news_per_update, r.mallocs_per_update, r.borrowed);
  }
  std::printf(
      "\nnew/upd, malloc/u: heap allocations on the receiving thread per update "
      "(malloc includes operator new's).\n");
  return 0;
}
