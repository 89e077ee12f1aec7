// HttpApi on cpp-httplib (see http_api.h and docs/api.md).
#include "http_api.h"

#include <httplib.h>

#include <charconv>
#include <cstring>

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

// A non-negative integer from text; false when it is not one.
bool ParseCount(const std::string& text, std::uint64_t& out) {
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && p == text.data() + text.size();
}

// A query parameter as a count, or `fallback` when absent.
bool QueryCount(const httplib::Request& req, const char* name, std::uint64_t fallback,
                std::uint64_t& out) {
  out = fallback;
  return !req.has_param(name) || ParseCount(req.get_param_value(name), out);
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

std::string NpyFile(const std::vector<float>& values) {
  static_assert(std::endian::native == std::endian::little, "the .npy header says '<f4'");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(values.size()) + ",), }";
  // magic (6) + version (2) + header length (2) + header + '\n': a multiple of 64.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  const std::size_t at = out.size();
  out.resize(at + values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(out.data() + at, values.data(), values.size() * sizeof(float));
  return out;
}

HttpApi::HttpApi(const StatusBoard& board, const CheckpointStore& store, std::int64_t run_id,
                 Architecture arch, std::string token)
    : board_(board),
      store_(store),
      run_id_(run_id),
      arch_(std::move(arch)),
      token_(std::move(token)),
      server_(std::make_unique<httplib::Server>()) {
  httplib::Server& s = *server_;
  // A slow client holds one HTTP worker for at most these, never the loop;
  // a few dozen workers keep the API up beside a handful of them.
  s.new_task_queue = [] { return new httplib::ThreadPool(32); };
  s.set_read_timeout(2, 0);
  s.set_write_timeout(5, 0);
  s.set_keep_alive_timeout(2);
  s.set_payload_max_length(64 * 1024);

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.method != "GET" && req.method != "HEAD") {
      JsonError(res, 405, "only GET and HEAD are supported");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!token_.empty() && req.path != "/healthz") {
      const std::string bearer = "Bearer " + token_;
      const bool ok = req.get_header_value("Authorization") == bearer ||
                      (req.has_param("token") && req.get_param_value("token") == token_);
      if (!ok) {
        res.set_header("WWW-Authenticate", "Bearer");
        JsonError(res, 401, "this endpoint needs Authorization: Bearer <token>");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kDashboardHtml, "text/html; charset=utf-8");
  });
  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    Json(res, {{"ok", true}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(board_.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.Get("/v1/status",
        [this](const httplib::Request&, httplib::Response& res) { Json(res, board_.status()); });
  s.Get("/v1/plan", [this](const httplib::Request&, httplib::Response& res) {
    Json(res, board_.status().value("plan", nlohmann::json::object()));
  });
  s.Get("/v1/devices",
        [this](const httplib::Request&, httplib::Response& res) { Json(res, board_.devices()); });
  s.Get(R"(/v1/devices/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    for (const auto& d : board_.devices()) {
      if (d.value("id", "") == id) return Json(res, d);
    }
    JsonError(res, 404, "no device '" + id + "'");
  });
  s.Get("/v1/rounds", [this](const httplib::Request& req, httplib::Response& res) {
    std::uint64_t since = 0, limit = 100;
    if (!QueryCount(req, "since", 0, since) || !QueryCount(req, "limit", 100, limit)) {
      return JsonError(res, 400, "since and limit must be non-negative integers");
    }
    limit = std::min<std::uint64_t>(limit, 1000);
    nlohmann::json rounds = nlohmann::json::array();
    try {
      for (const RoundRecord& r : store_.ListRounds(run_id_, since, limit))
        rounds.push_back(r.ToJson());
    } catch (const Error& e) {
      return JsonError(res, 500, e.what());
    }
    Json(res, rounds);
  });
  s.Get(R"(/v1/rounds/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::uint64_t n = 0;
    if (!ParseCount(req.matches[1], n)) return JsonError(res, 400, "a round is a number");
    try {
      const auto r = store_.GetRound(run_id_, n);
      if (!r) return JsonError(res, 404, "round " + std::to_string(n) + " is not committed");
      Json(res, r->ToJson());
    } catch (const Error& e) {
      JsonError(res, 500, e.what());
    }
  });
  s.Get("/v1/model", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string format = req.has_param("format") ? req.get_param_value("format") : "json";
    if (format != "json" && format != "npy") return JsonError(res, 400, "format is json or npy");
    try {
      const std::uint64_t latest = store_.LatestRound(run_id_);
      std::uint64_t round = latest;
      if (!QueryCount(req, "round", latest, round)) return JsonError(res, 400, "round is a number");
      const auto params = store_.LoadParams(run_id_, round);
      if (!params) return JsonError(res, 404, "no checkpoint for round " + std::to_string(round));
      if (format == "npy") {
        res.set_header("Content-Disposition", "attachment; filename=\"fedsgd-run" +
                                                  std::to_string(run_id_) + "-round" +
                                                  std::to_string(round) + ".npy\"");
        res.set_content(NpyFile(*params), "application/octet-stream");
        return;
      }
      nlohmann::json layers = nlohmann::json::array();
      for (const LayerLayout& l : arch_.Layout()) {
        layers.push_back({{"in", l.in},
                          {"out", l.out},
                          {"weight_offset", l.weight_offset},
                          {"bias_offset", l.bias_offset}});
      }
      Json(res, {{"run_id", run_id_},
                 {"model", arch_.ToString()},
                 {"model_version", round},
                 {"round", round},
                 {"parameters", params->size()},
                 {"layout", layers},
                 {"params", *params}});
    } catch (const Error& e) {
      JsonError(res, 500, e.what());
    }
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler already explained
    if (res.status == 404) return JsonError(res, 404, "no such endpoint: " + req.path);
    JsonError(res, res.status, res.status == 400 ? "bad request" : "error");
  });
}

HttpApi::~HttpApi() { Stop(); }

void HttpApi::Start(const std::string& address) {
  const auto [host, port] = ParseHostPort(address);
  if (port == 0) {
    port_ = server_->bind_to_any_port(host);
  } else {
    port_ = server_->bind_to_port(host, port) ? port : -1;
  }
  if (port_ <= 0)
    throw Error("cannot serve HTTP on " + address + " (address in use or not local?)");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void HttpApi::Stop() {
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

}  // namespace fedsgd
