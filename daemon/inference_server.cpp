// InferenceServer (see inference_server.h and docs/inference.md).
#include "inference_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "inference_protocol.h"

namespace fedsgd {
namespace {

std::string SystemError(const std::string& what) { return what + ": " + std::strerror(errno); }

sockaddr_un Address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof address.sun_path) {
    throw Error("inference socket path '" + path + "' must be 1-" +
                std::to_string(sizeof address.sun_path - 1) + " bytes (a Unix socket's limit)");
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

// True when some process accepts connections on the socket at `address`.
bool Served(const sockaddr_un& address) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool served =
      ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return served;
}

}  // namespace

struct InferenceServer::Connection {
  int fd = -1;
  std::string in;   // received, not yet answered
  std::string out;  // answers not yet sent, from out[sent]
  std::size_t sent = 0;
  std::uint64_t index = 0;    // of the next non-blank request line
  bool input_closed = false;  // the peer sent EOF: answer the rest, then close
  bool closing = false;       // answer no more: send what is left, then close
  bool dead = false;          // a send or receive failed: close now
  std::size_t pending() const { return out.size() - sent; }
};

InferenceServer::InferenceServer(std::string path, const ModelSlot& slot,
                                 InferenceServerLimits limits)
    : path_(std::move(path)), slot_(slot), limits_(limits) {
  limits_.max_batch = std::max(1, limits_.max_batch);
  limits_.max_connections = std::max(1, limits_.max_connections);
  const sockaddr_un address = Address(path_);
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) throw Error(path_ + " exists and is not a socket; not replacing it");
    if (Served(address)) throw Error("inference socket " + path_ + " is in use by another process");
    ::unlink(path_.c_str());  // stale: left by a process that is gone
  }
  auto fail = [&](const std::string& what) {
    const std::string message = SystemError(what);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    throw Error(message);
  };
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("cannot create a Unix socket");
  if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    fail("cannot create inference socket " + path_);
  }
  // Before listen(): nobody can connect while the mode is the umask's.
  if (::chmod(path_.c_str(), 0660) != 0 || ::lstat(path_.c_str(), &st) != 0) {
    ::unlink(path_.c_str());
    fail("cannot set the mode of inference socket " + path_);
  }
  inode_ = st.st_ino;
  if (::listen(listen_fd_, 64) != 0) {
    ::unlink(path_.c_str());
    fail("cannot listen on inference socket " + path_);
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    ::unlink(path_.c_str());
    fail("eventfd");
  }
  thread_ = std::thread(&InferenceServer::Loop, this);
}

InferenceServer::~InferenceServer() {
  const std::uint64_t one = 1;
  while (::write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
  thread_.join();
  ::close(wake_fd_);
  ::close(listen_fd_);
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_ino == inode_) ::unlink(path_.c_str());
}

void InferenceServer::Loop() {
  std::vector<std::unique_ptr<Connection>> connections;
  // Scratch for one batch, sized for the model last served (allocated when
  // the first sample arrives, again when the architecture changes).
  std::optional<Workspace> workspace;
  std::optional<Architecture> workspace_arch;
  int batch = 0;
  std::vector<float> x, outputs;
  std::vector<std::uint64_t> indices;
  std::vector<char> chunk;

  auto receive = [&](Connection& c) {
    if (chunk.empty()) chunk.resize(64 * 1024);
    while (c.in.size() <= limits_.max_line_bytes) {
      const ssize_t n = ::recv(c.fd, chunk.data(), chunk.size(), MSG_DONTWAIT);
      if (n > 0) {
        c.in.append(chunk.data(), static_cast<std::size_t>(n));
      } else if (n == 0) {
        c.input_closed = true;
        return;
      } else if (errno == EINTR) {
        continue;
      } else {
        c.dead = errno != EAGAIN && errno != EWOULDBLOCK;
        return;
      }
    }
  };

  auto send = [&](Connection& c) {
    while (c.pending() > 0) {
      const ssize_t n =
          ::send(c.fd, c.out.data() + c.sent, c.pending(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        c.sent += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        c.dead = n < 0 && errno != EAGAIN && errno != EWOULDBLOCK;
        break;
      }
    }
    if (c.sent == c.out.size()) {
      c.out.clear();
      c.sent = 0;
    } else if (c.sent > 64 * 1024) {
      c.out.erase(0, c.sent);
      c.sent = 0;
    }
  };

  // Answers the complete lines of c.in (and, after EOF, the last one) until
  // its answers wait to be sent. Returns whether it consumed anything.
  auto answer = [&](Connection& c) {
    std::shared_ptr<const ServedModel> model;  // one model for this pass
    bool fetched = false;
    int batched = 0;
    auto predict = [&] {
      if (batched == 0) return;
      const int k = model->arch.output_size();
      Predict(model->arch, model->params->data(), x.data(), batched, outputs.data(), *workspace);
      for (int j = 0; j < batched; ++j) {
        c.out += SampleAnswer(indices[j], *model, outputs.data() + static_cast<std::size_t>(j) * k);
      }
      predictions_ += static_cast<std::uint64_t>(batched);
      batched = 0;
    };
    auto fail = [&](std::uint64_t index, int status, std::string_view message) {
      predict();  // answers stay in request order
      c.out += ErrorAnswer(index, status, message);
      ++errors_;
    };
    std::size_t pos = 0;
    while (!c.closing && c.pending() < limits_.max_pending_output) {
      const std::size_t newline = c.in.find('\n', pos);
      const std::size_t end = newline == std::string::npos ? c.in.size() : newline;
      if (end - pos > limits_.max_line_bytes) {
        fail(c.index++, 413,
             "request line longer than " + std::to_string(limits_.max_line_bytes) +
                 " bytes; closing the connection");
        c.closing = true;
        break;
      }
      if (newline == std::string::npos && (!c.input_closed || pos == c.in.size())) break;
      const std::string_view line = std::string_view(c.in).substr(pos, end - pos);
      pos = newline == std::string::npos ? c.in.size() : newline + 1;
      const RequestKind kind = ClassifyRequest(line);
      if (kind == RequestKind::kBlank) continue;
      if (!fetched) {
        model = slot_.Current();
        fetched = true;
        if (model && (!workspace_arch || !(*workspace_arch == model->arch))) {
          batch = std::max(1, std::min(limits_.max_batch, InferenceBatch(model->arch)));
          workspace.reset();
          workspace.emplace(model->arch, batch);
          workspace_arch = model->arch;
          x.assign(static_cast<std::size_t>(batch) * model->arch.input_size(), 0.0f);
          outputs.assign(static_cast<std::size_t>(batch) * model->arch.output_size(), 0.0f);
          indices.assign(static_cast<std::size_t>(batch), 0);
        }
      }
      const std::uint64_t index = c.index++;
      if (!model && (kind == RequestKind::kSample || kind == RequestKind::kModel)) {
        fail(index, 503,
             "no model yet: the daemon has not received one from its coordinator and found "
             "none saved in its --state-dir");
      } else if (kind == RequestKind::kSample) {
        const int inputs = model->arch.input_size();
        float* row = x.data() + static_cast<std::size_t>(batched) * inputs;
        if (std::optional<std::string> error = ParseSample(line, inputs, row)) {
          fail(index, 400, *error + " (model " + model->arch.ToString() + ")");
        } else {
          indices[batched++] = index;
          if (batched == batch) predict();
        }
      } else if (kind == RequestKind::kModel) {
        predict();
        c.out += ModelAnswer(index, *model);
      } else {
        const std::string_view word = line.substr(0, std::min<std::size_t>(line.size(), 24));
        fail(index, 400, "unknown command '" + std::string(word) + "' (commands: model)");
      }
    }
    predict();
    c.in.erase(0, pos);
    return pos > 0;
  };

  auto accept = [&] {
    while (true) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        return;  // EAGAIN, or out of descriptors: the next poll tries again
      }
      ++connections_;
      if (static_cast<int>(connections.size()) >= limits_.max_connections) {
        const std::string busy = ErrorAnswer(
            0, 503,
            "too many connections (at most " + std::to_string(limits_.max_connections) + ")");
        (void)::send(fd, busy.data(), busy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        ++errors_;
        ::close(fd);
        continue;
      }
      auto c = std::make_unique<Connection>();
      c->fd = fd;
      connections.push_back(std::move(c));
    }
  };

  std::vector<pollfd> fds;
  while (true) {
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& c : connections) {
      short events = 0;
      const bool reading = !c->closing && !c->input_closed &&
                           c->in.size() <= limits_.max_line_bytes &&
                           c->pending() < limits_.max_pending_output;
      if (reading) events |= POLLIN;
      if (c->pending() > 0) events |= POLLOUT;
      fds.push_back({c->fd, events, 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents != 0) break;
    const std::size_t polled = fds.size() - 2;  // connections accepted below are not
    for (std::size_t i = 0; i < polled; ++i) {
      Connection& c = *connections[i];
      const short revents = fds[i + 2].revents;
      if (revents == 0) continue;
      if ((fds[i + 2].events & POLLIN) && (revents & (POLLIN | POLLHUP | POLLERR))) receive(c);
      // Answer and send until the answers wait for the client or every
      // complete line is answered.
      for (;;) {
        while (!c.dead) {
          send(c);
          if (c.pending() >= limits_.max_pending_output || !answer(c)) break;
        }
        if (!c.dead) send(c);
        // The client may have read meanwhile and this send emptied the
        // queue: answer on, or with its input closed (or full) and nothing
        // to send, nothing would wake this connection again.
        if (c.dead || c.pending() >= limits_.max_pending_output || !answer(c)) break;
      }
      const bool done = c.pending() == 0 && (c.closing || (c.input_closed && c.in.empty()));
      if (c.dead || done || ((revents & (POLLERR | POLLNVAL)) && !(revents & POLLIN))) {
        ::close(c.fd);
        c.fd = -1;
      }
    }
    std::erase_if(connections, [](const auto& c) { return c->fd < 0; });
    if (fds[1].revents & POLLIN) accept();
  }
  for (const auto& c : connections) ::close(c->fd);
}

}  // namespace fedsgd
