// HttpApi on cpp-httplib (see http_api.h and docs/api.md).
#include "http_api.h"

#include <httplib.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>
#include <fstream>

#include "checkpoint_store.h"
#include "fedsgd/error.h"
#include "fedsgd/npy.h"

namespace fedsgd {
namespace {

void Json(httplib::Response& res, const nlohmann::json& body, int status = 200) {
  res.status = status;
  // replace: a path or id with invalid UTF-8 must not make dump() throw.
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
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

// A method token as RFC 9110 allows it (letters only here): 405 for an
// unknown one, 400 for a request line that is not HTTP at all.
bool LooksLikeMethod(const std::string& method) {
  if (method.empty() || method.size() > 32) return false;
  for (const char c : method) {
    if (c < 'A' || c > 'Z') return false;
  }
  return true;
}

// SO_REUSEADDR (restart while old connections linger in TIME_WAIT) but not
// cpp-httplib's default SO_REUSEPORT, which lets a second server share it.
void ReuseAddressOnly(socket_t sock) {
  const int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return std::string(" (") + text + ")";
}

}  // namespace

bool IsLoopbackHost(const std::string& host) {
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  return h == "localhost" || h == "::1" || h.starts_with("127.");
}

void CheckTlsFiles(const HttpTls& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty())
    throw Error("--http-cert and --http-key go together: give both PEM files or neither");
  if (tls.cert_file.empty()) return;
  for (const auto& [flag, file] :
       {std::pair{"--http-cert", tls.cert_file}, {"--http-key", tls.key_file}}) {
    if (!std::ifstream(file)) throw Error(std::string(flag) + " " + file + ": cannot be read");
  }
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()),
                                                        &SSL_CTX_free);
  if (!ctx) throw Error("OpenSSL cannot create a TLS context" + OpenSslError());
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert_file.c_str()) != 1)
    throw Error("--http-cert " + tls.cert_file + ": not a PEM certificate" + OpenSslError());
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw Error("--http-key " + tls.key_file + ": not a PEM private key for --http-cert " +
                tls.cert_file + OpenSslError());
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    throw Error("--http-key " + tls.key_file + " does not match --http-cert " + tls.cert_file +
                OpenSslError());
}

bool TokenMatches(const std::string& presented, const std::string& token) {
  // Digests have one length, so neither the length nor the first differing
  // byte of the token shows in the time taken.
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(presented.data()), presented.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), b);
  return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

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

HttpApi::HttpApi(const StatusBoard& board, const CheckpointStore& store, std::int64_t run_id,
                 Architecture arch, std::string token, HttpTls tls, HttpConnectionLimits limits)
    : board_(board),
      store_(store),
      run_id_(run_id),
      arch_(std::move(arch)),
      token_(std::move(token)),
      guard_(limits) {
  CheckTlsFiles(tls);
  if (tls.cert_file.empty()) {
    server_ = std::make_unique<GuardedHttpServer>(guard_);
  } else {
    server_ = std::make_unique<GuardedHttpsServer>(guard_, tls.cert_file, tls.key_file);
    if (!server_->is_valid())
      throw Error("cannot serve HTTPS with --http-cert " + tls.cert_file + " and --http-key " +
                  tls.key_file + OpenSslError());
  }
  httplib::Server& s = *server_;
  // The guard bounds how long a request may take to arrive; these bound
  // each socket operation as a last resort (cpp-httplib sets them on accept).
  const auto whole = static_cast<time_t>(limits.request_seconds + 1);
  s.set_read_timeout(whole, 0);
  s.set_write_timeout(5, 0);
  s.set_payload_max_length(64 * 1024);
  s.set_socket_options(ReuseAddressOnly);
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
        std::string what = "internal error";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          what += std::string(": ") + e.what();
        } catch (...) {
        }
        JsonError(res, 500, what);
      });

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.method != "GET" && req.method != "HEAD") {
      res.set_header("Allow", "GET, HEAD");
      JsonError(res, 405, "only GET and HEAD are supported");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!token_.empty() && req.path != "/healthz") {
      const std::string bearer = "Bearer " + token_;
      const bool ok =
          TokenMatches(req.get_header_value("Authorization"), bearer) ||
          (req.has_param("token") && TokenMatches(req.get_param_value("token"), token_));
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
    const HttpConnectionGuard::Stats c = guard_.stats();
    res.set_content(board_.metrics() +
                        "# HELP fedsgd_http_connections_open HTTP connections being served\n"
                        "# TYPE fedsgd_http_connections_open gauge\n"
                        "fedsgd_http_connections_open " +
                        std::to_string(c.open) +
                        "\n# HELP fedsgd_http_connections_refused_total HTTP connections closed at "
                        "once (over a limit)\n"
                        "# TYPE fedsgd_http_connections_refused_total counter\n"
                        "fedsgd_http_connections_refused_total " +
                        std::to_string(c.refused) +
                        "\n# HELP fedsgd_http_requests_timed_out_total HTTP requests or TLS "
                        "handshakes that came too slowly\n"
                        "# TYPE fedsgd_http_requests_timed_out_total counter\n"
                        "fedsgd_http_requests_timed_out_total " +
                        std::to_string(c.timed_out) + "\n",
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  s.Get("/v1/status",
        [this](const httplib::Request&, httplib::Response& res) { Json(res, board_.status()); });
  s.Get("/v1/plan", [this](const httplib::Request&, httplib::Response& res) {
    Json(res, board_.status().value("plan", nlohmann::json::object()));
  });
  s.Get("/v1/devices", [this](const httplib::Request& req, httplib::Response& res) {
    std::uint64_t offset = 0, limit = 100;
    if (!QueryCount(req, "offset", 0, offset) || !QueryCount(req, "limit", 100, limit) ||
        limit == 0 || limit > 1000) {
      return JsonError(res, 400, "offset is a non-negative integer, limit one in 1..1000");
    }
    const nlohmann::json all = board_.devices();
    nlohmann::json page = nlohmann::json::array();
    for (std::uint64_t i = offset; i < all.size() && page.size() < limit; ++i)
      page.push_back(all[static_cast<std::size_t>(i)]);
    res.set_header("X-Total-Count", std::to_string(all.size()));
    Json(res, page);
  });
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
        res.set_content(EncodeNpy(*params), "application/octet-stream");
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
  // Runs outside cpp-httplib's exception handling: it must not throw.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler already explained
    try {
      if (res.status == 404) return JsonError(res, 404, "no such endpoint: " + req.path);
      // cpp-httplib answers 400 to a method it does not know (FOO).
      if (res.status == 400 && req.method != "GET" && req.method != "HEAD" &&
          LooksLikeMethod(req.method)) {
        res.set_header("Allow", "GET, HEAD");
        return JsonError(res, 405, "only GET and HEAD are supported");
      }
      JsonError(res, res.status, res.status == 400 ? "bad request" : "error");
    } catch (...) {
      res.set_content(R"({"error":"error"})", "application/json");
    }
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
  if (auto* plain = dynamic_cast<GuardedHttpServer*>(server_.get())) plain->WidenBacklog();
  if (auto* tls = dynamic_cast<GuardedHttpsServer*>(server_.get())) tls->WidenBacklog();
  listen_returned_ = false;
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_ = true;
  });
  // stop() does nothing to a server that has not started listening yet: an
  // early Stop() would then wait forever for the accept loop.
  while (!server_->is_running() && !listen_returned_)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void HttpApi::Stop() {
  if (thread_.joinable()) {
    server_->stop();
    guard_.CloseAll();
    thread_.join();
  }
}

}  // namespace fedsgd
