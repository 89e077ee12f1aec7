// HttpConnectionGuard (see http_connection_guard.h).
#include "http_connection_guard.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <thread>

namespace fedsgd {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point After(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Milliseconds left until `deadline` (0 when past).
int MillisecondsUntil(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// True when `sock` has something to read before `deadline`.
bool WaitReadable(int sock, Clock::time_point deadline) {
  pollfd p{sock, POLLIN, 0};
  for (;;) {
    const int r = ::poll(&p, 1, MillisecondsUntil(deadline));
    if (r > 0) return true;
    if (r == 0 || errno != EINTR) return false;
  }
}

std::string Address(const sockaddr_storage& a, int& port) {
  char text[INET6_ADDRSTRLEN] = "";
  port = 0;
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    ::inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    port = ntohs(in.sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    port = ntohs(in6.sin6_port);
  }
  return text;
}

std::string PeerAddress(int sock, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getpeername(sock, reinterpret_cast<sockaddr*>(&a), &len) != 0) return "";
  return Address(a, port);
}

// A request's bytes, read with one deadline for the whole request (set
// before each request), over TCP or TLS.
class DeadlineStream : public httplib::Stream {
 public:
  DeadlineStream(int sock, SSL* ssl, double write_seconds, std::atomic<std::uint64_t>& timed_out)
      : sock_(sock), ssl_(ssl), write_seconds_(write_seconds), timed_out_(timed_out) {}

  void set_deadline(Clock::time_point deadline) { deadline_ = deadline; }
  // A read ran past the deadline: cpp-httplib may still answer 400, but the
  // connection must end then (the client may go on trickling).
  bool expired() const { return expired_; }

  bool is_readable() const override {
    return (ssl_ && SSL_pending(ssl_) > 0) || WaitReadable(sock_, deadline_);
  }
  bool is_writable() const override {
    pollfd p{sock_, POLLOUT, 0};
    return ::poll(&p, 1, static_cast<int>(write_seconds_ * 1000)) > 0;
  }
  ssize_t read(char* ptr, size_t size) override {
    // Past the deadline even when bytes are waiting: a trickle must not
    // keep a request alive.
    if (Clock::now() >= deadline_ || !is_readable()) {
      if (!expired_) ++timed_out_;
      expired_ = true;
      return -1;
    }
    if (ssl_) {
      const int n = SSL_read(ssl_, ptr, static_cast<int>(std::min<size_t>(size, 1 << 30)));
      return n > 0 ? n : -1;
    }
    for (;;) {
      const ssize_t n = ::recv(sock_, ptr, size, 0);
      if (n >= 0 || errno != EINTR) return n;
    }
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    if (ssl_) {
      const int n = SSL_write(ssl_, ptr, static_cast<int>(std::min<size_t>(size, 1 << 30)));
      return n > 0 ? n : -1;
    }
    for (;;) {
      const ssize_t n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
      if (n >= 0 || errno != EINTR) return n;
    }
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = PeerAddress(sock_, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    port = 0;
    ip.clear();
    if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&a), &len) == 0) ip = Address(a, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  int sock_;
  SSL* ssl_;
  double write_seconds_;
  std::atomic<std::uint64_t>& timed_out_;
  Clock::time_point deadline_ = Clock::now();
  bool expired_ = false;
};

// TLS handshake with a deadline: the socket is non-blocking meanwhile, so a
// client sending its ClientHello a byte at a time cannot stretch it.
bool AcceptTls(int sock, SSL* ssl, Clock::time_point deadline) {
  const int flags = ::fcntl(sock, F_GETFL, 0);
  ::fcntl(sock, F_SETFL, flags | O_NONBLOCK);
  bool ok = false;
  for (;;) {
    const int r = SSL_accept(ssl);
    if (r == 1) {
      ok = true;
      break;
    }
    const int error = SSL_get_error(ssl, r);
    pollfd p{sock, 0, 0};
    if (error == SSL_ERROR_WANT_READ) {
      p.events = POLLIN;
    } else if (error == SSL_ERROR_WANT_WRITE) {
      p.events = POLLOUT;
    } else {
      break;
    }
    if (::poll(&p, 1, MillisecondsUntil(deadline)) <= 0) break;
  }
  ::fcntl(sock, F_SETFL, flags);
  ERR_clear_error();  // a failed handshake leaves errors on this thread's queue
  return ok;
}

// Tells process_and_close_socket that the TaskQueue had no thread left for
// this connection: refuse it without reading.
thread_local bool t_no_thread_left = false;

class ThreadPerConnection : public httplib::TaskQueue {
 public:
  explicit ThreadPerConnection(std::size_t max_threads) : max_threads_(max_threads) {}

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard lock(mutex_);
      if (running_ < max_threads_) {
        ++running_;
        std::thread([this, fn = std::move(fn)] {
          fn();
          std::lock_guard done(mutex_);
          --running_;
          finished_.notify_all();
        }).detach();
        return;
      }
    }
    t_no_thread_left = true;
    fn();  // closes the socket at once (see t_no_thread_left)
    t_no_thread_left = false;
  }
  void shutdown() override {
    std::unique_lock lock(mutex_);
    finished_.wait(lock, [this] { return running_ == 0; });
  }

 private:
  const std::size_t max_threads_;
  std::mutex mutex_;
  std::condition_variable finished_;
  std::size_t running_ = 0;
};

void CloseSocket(int sock) {
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

}  // namespace

httplib::TaskQueue* HttpConnectionGuard::NewTaskQueue() {
  // A few more threads than connections: a thread about to end still counts.
  return new ThreadPerConnection(limits_.max_connections + 16);
}

HttpConnectionGuard::Stats HttpConnectionGuard::stats() const {
  Stats s;
  {
    std::lock_guard lock(mutex_);
    s.open = open_.size();
  }
  s.refused = refused_.load();
  s.timed_out = timed_out_.load();
  return s;
}

void HttpConnectionGuard::CloseAll() {
  std::lock_guard lock(mutex_);
  for (const int sock : open_) ::shutdown(sock, SHUT_RDWR);
}

void HttpConnectionGuard::IgnoreRanges(httplib::Request& req) {
  req.ranges.clear();
  req.headers.erase("Range");
}

bool HttpConnectionGuard::Admit(int sock, std::string& address) {
  int port = 0;
  address = PeerAddress(sock, port);
  std::lock_guard lock(mutex_);
  if (t_no_thread_left || open_.size() >= limits_.max_connections ||
      per_address_[address] >= limits_.max_per_address) {
    if (per_address_[address] == 0) per_address_.erase(address);
    ++refused_;
    return false;
  }
  ++per_address_[address];
  open_.insert(sock);
  return true;
}

void HttpConnectionGuard::Release(int sock, const std::string& address) {
  std::lock_guard lock(mutex_);
  open_.erase(sock);
  if (--per_address_[address] == 0) per_address_.erase(address);
}

void HttpConnectionGuard::Serve(int sock, void* ssl_ctx, const std::function<bool()>& running,
                                const RequestProcessor& process) {
  std::string address;
  if (!Admit(sock, address)) {
    CloseSocket(sock);
    return;
  }
  SSL* ssl = nullptr;
  bool serving = true;
  if (ssl_ctx) {
    ssl = SSL_new(static_cast<SSL_CTX*>(ssl_ctx));
    serving =
        ssl && SSL_set_fd(ssl, sock) == 1 && AcceptTls(sock, ssl, After(limits_.request_seconds));
    if (!serving && ssl) ++timed_out_;
  }
  DeadlineStream stream(sock, ssl, limits_.request_seconds, timed_out_);
  bool clean = serving;
  for (std::size_t n = 0; serving && n < limits_.max_requests_per_connection && running(); ++n) {
    // Wait for the next request (the first one within request_seconds).
    const double wait = n == 0 ? limits_.request_seconds : limits_.idle_seconds;
    if (!(ssl && SSL_pending(ssl) > 0) && !WaitReadable(sock, After(wait))) break;
    stream.set_deadline(After(limits_.request_seconds));
    bool closed = false;
    const bool last = n + 1 == limits_.max_requests_per_connection;
    clean = process(stream, last, closed);
    serving = clean && !closed && !stream.expired();
  }
  if (ssl) {
    if (clean) SSL_shutdown(ssl);
    SSL_free(ssl);
    ERR_clear_error();
  }
  Release(sock, address);
  CloseSocket(sock);
}

GuardedHttpServer::GuardedHttpServer(HttpConnectionGuard& guard) : guard_(guard) {
  new_task_queue = [&guard] { return guard.NewTaskQueue(); };
}

bool GuardedHttpServer::process_and_close_socket(socket_t sock) {
  guard_.Serve(
      sock, nullptr, [this] { return is_running(); },
      [this](httplib::Stream& stream, bool close_connection, bool& connection_closed) {
        return process_request(stream, close_connection, connection_closed,
                               HttpConnectionGuard::IgnoreRanges);
      });
  return true;
}

GuardedHttpsServer::GuardedHttpsServer(HttpConnectionGuard& guard, const std::string& cert_file,
                                       const std::string& key_file)
    : httplib::SSLServer(cert_file.c_str(), key_file.c_str()), guard_(guard) {
  new_task_queue = [&guard] { return guard.NewTaskQueue(); };
}

bool GuardedHttpsServer::process_and_close_socket(socket_t sock) {
  guard_.Serve(
      sock, ssl_context(), [this] { return is_running(); },
      [this](httplib::Stream& stream, bool close_connection, bool& connection_closed) {
        return process_request(stream, close_connection, connection_closed,
                               HttpConnectionGuard::IgnoreRanges);
      });
  return true;
}

}  // namespace fedsgd
