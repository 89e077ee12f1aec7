// HttpApi on cpp-httplib (see http_api.h).
#include "http_api.h"

#include <httplib.h>

#include <charconv>

#include "checkpoint_store.h"
#include "fedsgd/error.h"

namespace fedsgd {
namespace {

void Json(httplib::Response& res, const nlohmann::json& body, int status = 200) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void JsonError(httplib::Response& res, int status, const std::string& message) {
  Json(res, {{"error", message}, {"status", status}}, status);
}

// A non-negative integer query parameter, or `fallback` when absent.
bool QueryNumber(const httplib::Request& req, const char* name, std::uint64_t fallback,
                 std::uint64_t& out) {
  out = fallback;
  if (!req.has_param(name)) return true;
  const std::string v = req.get_param_value(name);
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  return ec == std::errc() && p == v.data() + v.size();
}

}  // namespace

std::pair<std::string, int> ParseHostPort(const std::string& address) {
  const std::size_t colon = address.rfind(':');
  int port = -1;
  if (colon != std::string::npos && colon > 0) {
    const char* b = address.data() + colon + 1;
    const char* e = address.data() + address.size();
    const auto [p, ec] = std::from_chars(b, e, port);
    if (ec != std::errc() || p != e) port = -1;
  }
  if (port < 0 || port > 65535) {
    throw Error("invalid HTTP address '" + address + "' (expected HOST:PORT, e.g. 127.0.0.1:8080)");
  }
  return {address.substr(0, colon), port};
}

HttpApi::HttpApi(const StatusBoard& board, const CheckpointStore& store, std::int64_t run_id)
    : board_(board), store_(store), run_id_(run_id), server_(std::make_unique<httplib::Server>()) {
  httplib::Server& s = *server_;
  // A slow client holds one worker thread for at most these, never the loop.
  s.set_read_timeout(5, 0);
  s.set_write_timeout(5, 0);
  s.set_keep_alive_timeout(5);
  s.set_payload_max_length(64 * 1024);

  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    Json(res, {{"ok", true}});
  });
  s.Get("/v1/status", [this](const httplib::Request&, httplib::Response& res) {
    Json(res, board_.status());
  });
  s.Get("/v1/devices", [this](const httplib::Request&, httplib::Response& res) {
    Json(res, board_.devices());
  });
  s.Get("/v1/rounds", [this](const httplib::Request& req, httplib::Response& res) {
    std::uint64_t since = 0, limit = 100;
    if (!QueryNumber(req, "since", 0, since) || !QueryNumber(req, "limit", 100, limit)) {
      return JsonError(res, 400, "since and limit must be non-negative integers");
    }
    limit = std::min<std::uint64_t>(limit, 1000);
    nlohmann::json rounds = nlohmann::json::array();
    try {
      for (const RoundRecord& r : store_.ListRounds(run_id_, since, limit)) rounds.push_back(r.ToJson());
    } catch (const Error& e) {
      return JsonError(res, 500, e.what());
    }
    Json(res, rounds);
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404) return JsonError(res, 404, "no such endpoint: " + req.path);
    if (res.status == 405 || res.status == 400) {
      return JsonError(res, res.status, res.status == 405 ? "only GET and HEAD are supported" : "bad request");
    }
    JsonError(res, res.status, "error");
  });
  // Only GET and HEAD exist: refuse every other method with a JSON 405.
  const auto refuse = [](const httplib::Request&, httplib::Response& res) {
    JsonError(res, 405, "only GET and HEAD are supported");
  };
  s.Post(".*", refuse);
  s.Put(".*", refuse);
  s.Delete(".*", refuse);
  s.Patch(".*", refuse);
}

HttpApi::~HttpApi() { Stop(); }

void HttpApi::Start(const std::string& address) {
  const auto [host, port] = ParseHostPort(address);
  if (port == 0) {
    port_ = server_->bind_to_any_port(host);
  } else {
    port_ = server_->bind_to_port(host, port) ? port : -1;
  }
  if (port_ <= 0) throw Error("cannot serve HTTP on " + address + " (address in use or not local?)");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void HttpApi::Stop() {
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

}  // namespace fedsgd
