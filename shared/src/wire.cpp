// Encoding and validation of protocol messages (see wire.h).
#include "fedsgd/wire.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <iterator>
#include <zmq_addon.hpp>

#include "fedsgd/error.h"

namespace fedsgd::wire {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxHeaderBytes = 64 * 1024;
constexpr std::size_t kMaxString = 256;
constexpr std::size_t kMaxDeviceId = 64;

constexpr std::string_view kReasonNames[kRejectReasonCount] = {
    "malformed", "bad_version",    "unknown_kind", "bad_field",    "wrong_size", "non_finite",
    "oversize",  "unknown_device", "stale_round",  "round_closed", "duplicate",  "not_selected"};

// Field readers: each returns an error text for the field or "" when fine.
struct Reader {
  const json& h;
  std::string error;

  const json* Field(const char* key) {
    auto it = h.find(key);
    if (it == h.end()) {
      Fail(std::string("missing field '") + key + "'");
      return nullptr;
    }
    return &*it;
  }
  void Fail(std::string why) {
    if (error.empty()) error = std::move(why);
  }
  std::string String(const char* key, std::size_t max_len = kMaxString) {
    const json* f = Field(key);
    if (!f) return {};
    if (!f->is_string()) return Fail(std::string("field '") + key + "' must be a string"), "";
    std::string s = f->get<std::string>();
    if (s.size() > max_len) Fail(std::string("field '") + key + "' is too long");
    return s;
  }
  std::string Device(const char* key = "device") {
    std::string id = String(key, kMaxDeviceId);
    if (!error.empty()) return id;
    if (!ValidDeviceId(id)) Fail("device id must be 1-64 characters of A-Z a-z 0-9 . _ -");
    return id;
  }
  std::uint64_t Uint(const char* key) {
    const json* f = Field(key);
    if (!f) return 0;
    if (f->is_number_unsigned()) return f->get<std::uint64_t>();
    Fail(std::string("field '") + key + "' must be a non-negative integer");
    return 0;
  }
  int Int(const char* key, int lo, int hi) {
    const std::uint64_t v = Uint(key);
    if (error.empty() &&
        (v < static_cast<std::uint64_t>(lo) || v > static_cast<std::uint64_t>(hi))) {
      Fail(std::string("field '") + key + "' is out of range");
    }
    return static_cast<int>(v);
  }
  double Double(const char* key) {
    const json* f = Field(key);
    if (!f) return 0;
    if (!f->is_number()) return Fail(std::string("field '") + key + "' must be a number"), 0.0;
    const double v = f->get<double>();
    if (!std::isfinite(v)) Fail(std::string("field '") + key + "' is not finite");
    return v;
  }
  bool Bool(const char* key) {
    const json* f = Field(key);
    if (!f) return false;
    if (!f->is_boolean()) return Fail(std::string("field '") + key + "' must be a boolean"), false;
    return f->get<bool>();
  }
};

// std::byteswap is C++23.
constexpr std::uint32_t Swap32(std::uint32_t x) {
  return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24);
}

json Header(std::string_view kind) { return json{{"v", kProtocolVersion}, {"kind", kind}}; }

zmq::message_t HeaderFrame(const json& header) {
  const std::vector<std::uint8_t> bytes = json::to_cbor(header);
  return zmq::message_t(bytes.data(), bytes.size());
}

zmq::message_t TensorFrame(std::vector<float>&& values) {
  if (values.empty()) return zmq::message_t();
  if constexpr (std::endian::native == std::endian::little) {
    // Hand the buffer to zmq without a copy; zmq frees it once sent.
    auto* owned = new std::vector<float>(std::move(values));
    return zmq::message_t(
        owned->data(), owned->size() * sizeof(float),
        [](void*, void* hint) { delete static_cast<std::vector<float>*>(hint); }, owned);
  } else {
    zmq::message_t frame(values.size() * sizeof(float));
    auto* out = static_cast<std::uint32_t*>(frame.data());
    for (std::size_t i = 0; i < values.size(); ++i) {
      out[i] = Swap32(std::bit_cast<std::uint32_t>(values[i]));
    }
    return frame;
  }
}

std::optional<DecodeError> ReadTensor(const zmq::message_t& frame, const Limits& limits,
                                      std::vector<float>& out) {
  const std::size_t bytes = frame.size();
  if (bytes % sizeof(float) != 0) {
    return DecodeError{RejectReason::kWrongSize,
                       "tensor frame of " + std::to_string(bytes) + " bytes is not whole floats"};
  }
  const std::size_t count = bytes / sizeof(float);
  if (count > limits.max_params) {
    return DecodeError{RejectReason::kOversize,
                       "tensor of " + std::to_string(count) + " floats exceeds the limit"};
  }
  if (limits.expected_params != 0 && count != limits.expected_params) {
    return DecodeError{RejectReason::kWrongSize, "tensor has " + std::to_string(count) +
                                                     " floats, the model has " +
                                                     std::to_string(limits.expected_params)};
  }
  out.resize(count);
  if (count > 0) std::memcpy(out.data(), frame.data(), bytes);
  if constexpr (std::endian::native != std::endian::little) {
    for (float& v : out) v = std::bit_cast<float>(Swap32(std::bit_cast<std::uint32_t>(v)));
  }
  // x - x is 0 for finite x and NaN for NaN/Inf: one vectorisable pass.
  float probe = 0.0f;
  for (float v : out) probe += v - v;
  if (probe != 0.0f) {
    std::size_t at = 0;
    while (at < count && std::isfinite(out[at])) ++at;
    return DecodeError{RejectReason::kNonFinite,
                       "tensor value " + std::to_string(at) + " is not finite"};
  }
  return std::nullopt;
}

bool HasTensor(const Message& m) {
  return std::holds_alternative<Welcome>(m) || std::holds_alternative<Model>(m) ||
         std::holds_alternative<Update>(m);
}

}  // namespace

std::string_view ToString(RejectReason reason) { return kReasonNames[static_cast<int>(reason)]; }

std::optional<RejectReason> ParseRejectReason(std::string_view name) {
  for (int i = 0; i < kRejectReasonCount; ++i) {
    if (kReasonNames[i] == name) return static_cast<RejectReason>(i);
  }
  return std::nullopt;
}

std::string_view KindName(const Message& message) {
  static constexpr std::string_view kNames[] = {"join",  "welcome", "heartbeat", "fetch_model",
                                                "model", "update",  "ack",       "reject"};
  return kNames[message.index()];
}

std::vector<zmq::message_t> Encode(Message message) {
  json h = Header(KindName(message));
  std::vector<float> tensor;
  std::visit(
      [&](auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Join>) {
          h["device"] = m.device;
          h["threads"] = m.threads;
          h["samples"] = m.samples;
          h["software"] = m.software;
        } else if constexpr (std::is_same_v<T, Welcome>) {
          h["device"] = m.device;
          h["run_id"] = m.run_id;
          h["plan"] = m.plan;
          h["model_version"] = m.model_version;
          h["round"] = m.round;
          h["publish_endpoint"] = m.publish_endpoint;
          h["heartbeat_ms"] = m.heartbeat_ms;
          tensor = std::move(m.params);
        } else if constexpr (std::is_same_v<T, Heartbeat>) {
          h["device"] = m.device;
          h["state"] = m.state;
          h["round"] = m.round;
          h["samples_per_second"] = m.samples_per_second;
          h["loss"] = m.loss;
          h["progress"] = m.progress;
        } else if constexpr (std::is_same_v<T, FetchModel>) {
          h["device"] = m.device;
        } else if constexpr (std::is_same_v<T, Model>) {
          h["run_id"] = m.run_id;
          h["model_version"] = m.model_version;
          h["round"] = m.round;
          h["final"] = m.final;
          tensor = std::move(m.params);
        } else if constexpr (std::is_same_v<T, Update>) {
          h["device"] = m.device;
          h["round"] = m.round;
          h["model_version"] = m.model_version;
          h["samples"] = m.samples;
          h["loss"] = m.loss;
          h["update_kind"] = m.kind;
          h["train_seconds"] = m.train_seconds;
          tensor = std::move(m.payload);
        } else if constexpr (std::is_same_v<T, Ack>) {
          h["round"] = m.round;
          h["model_version"] = m.model_version;
          h["detail"] = m.detail;
        } else if constexpr (std::is_same_v<T, Reject>) {
          h["reason"] = ToString(m.reason);
          h["detail"] = m.detail;
        }
      },
      message);
  std::vector<zmq::message_t> frames;
  frames.push_back(HeaderFrame(h));
  if (HasTensor(message)) frames.push_back(TensorFrame(std::move(tensor)));
  return frames;
}

DecodeResult Decode(std::vector<zmq::message_t>& frames, const Limits& limits) {
  auto fail = [](RejectReason r, std::string detail) {
    return DecodeResult{DecodeError{r, std::move(detail)}};
  };
  if (frames.empty() || frames.size() > 2) {
    return fail(RejectReason::kMalformed,
                "expected 1 or 2 frames, got " + std::to_string(frames.size()));
  }
  if (frames[0].size() > kMaxHeaderBytes) return fail(RejectReason::kOversize, "header too large");
  const auto* bytes = static_cast<const std::uint8_t*>(frames[0].data());
  json h;
  try {
    // allow_exceptions=false is not enough: a huge declared length still
    // throws out_of_range (found by the fuzz test).
    h = json::from_cbor(bytes, bytes + frames[0].size(), /*strict=*/true,
                        /*allow_exceptions=*/false);
  } catch (const json::exception&) {
    return fail(RejectReason::kMalformed, "the header is not valid CBOR");
  } catch (const std::bad_alloc&) {
    return fail(RejectReason::kMalformed, "the header is not valid CBOR");
  }
  if (h.is_discarded() || !h.is_object()) {
    return fail(RejectReason::kMalformed, "the header is not a CBOR map");
  }
  const auto v = h.find("v");
  if (v == h.end() || !v->is_number_unsigned() || v->get<std::uint64_t>() != kProtocolVersion) {
    return fail(RejectReason::kBadVersion,
                "protocol version must be " + std::to_string(kProtocolVersion));
  }
  const auto k = h.find("kind");
  if (k == h.end() || !k->is_string()) return fail(RejectReason::kBadField, "missing field 'kind'");
  const std::string kind = k->get<std::string>();

  Reader r{h, {}};
  Message message;
  if (kind == "join") {
    message = Join{r.Device(), r.Int("threads", 1, 4096), r.Uint("samples"), r.String("software")};
  } else if (kind == "welcome") {
    Welcome w;
    w.device = r.Device();
    w.run_id = r.String("run_id");
    const json* plan = r.Field("plan");
    if (plan && !plan->is_object()) r.Fail("field 'plan' must be a map");
    if (plan) w.plan = *plan;
    w.model_version = r.Uint("model_version");
    w.round = r.Uint("round");
    w.publish_endpoint = r.String("publish_endpoint");
    w.heartbeat_ms = r.Int("heartbeat_ms", 10, 3600 * 1000);
    message = std::move(w);
  } else if (kind == "heartbeat") {
    Heartbeat b{r.Device(),       r.String("state", 16),
                r.Uint("round"),  r.Double("samples_per_second"),
                r.Double("loss"), r.Double("progress")};
    if (r.error.empty() && b.state != "idle" && b.state != "training" && b.state != "sending") {
      r.Fail("field 'state' must be idle, training or sending");
    }
    message = std::move(b);
  } else if (kind == "fetch_model") {
    message = FetchModel{r.Device()};
  } else if (kind == "model") {
    message =
        Model{r.String("run_id"), r.Uint("model_version"), r.Uint("round"), r.Bool("final"), {}};
  } else if (kind == "update") {
    Update u;
    u.device = r.Device();
    u.round = r.Uint("round");
    u.model_version = r.Uint("model_version");
    u.samples = r.Uint("samples");
    u.loss = r.Double("loss");
    u.kind = r.String("update_kind", 16);
    u.train_seconds = r.Double("train_seconds");
    if (r.error.empty() && u.kind != "delta" && u.kind != "gradient") {
      r.Fail("field 'update_kind' must be delta or gradient");
    }
    if (r.error.empty() && u.samples == 0) r.Fail("field 'samples' must be at least 1");
    message = std::move(u);
  } else if (kind == "ack") {
    message = Ack{r.Uint("round"), r.Uint("model_version"), r.String("detail")};
  } else if (kind == "reject") {
    const std::string name = r.String("reason", 32);
    const auto reason = ParseRejectReason(name);
    if (r.error.empty() && !reason) r.Fail("unknown reject reason '" + name + "'");
    message = Reject{reason.value_or(RejectReason::kMalformed), r.String("detail")};
  } else {
    return fail(RejectReason::kUnknownKind, "unknown message kind '" + kind.substr(0, 32) + "'");
  }
  if (!r.error.empty()) return fail(RejectReason::kBadField, kind + ": " + r.error);

  const bool tensor = HasTensor(message);
  if (frames.size() != (tensor ? 2u : 1u)) {
    return fail(RejectReason::kMalformed,
                kind + (tensor ? " needs a tensor frame" : " takes no tensor frame"));
  }
  if (tensor) {
    std::vector<float>* out = nullptr;
    if (auto* w = std::get_if<Welcome>(&message)) out = &w->params;
    if (auto* m = std::get_if<Model>(&message)) out = &m->params;
    if (auto* u = std::get_if<Update>(&message)) out = &u->payload;
    if (auto err = ReadTensor(frames[1], limits, *out)) return DecodeResult{std::move(*err)};
  }
  return DecodeResult{std::move(message)};
}

bool Send(zmq::socket_t& socket, Message message, const zmq::message_t* routing_id) {
  std::vector<zmq::message_t> frames = Encode(std::move(message));
  if (routing_id) {
    zmq::message_t id(routing_id->data(), routing_id->size());
    if (!socket.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
  }
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    try {
      if (!socket.send(frames[i], flags | zmq::send_flags::dontwait)) return false;
    } catch (const zmq::error_t& e) {
      if (e.num() == EHOSTUNREACH) return false;  // ROUTER_MANDATORY: peer gone
      throw;
    }
  }
  return true;
}

void Poll(std::vector<zmq::pollitem_t>& items, std::chrono::milliseconds timeout) {
  try {
    zmq::poll(items.data(), items.size(), timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
  }
}

bool ValidDeviceId(std::string_view id) {
  return !id.empty() && id.size() <= kMaxDeviceId &&
         id.find_first_not_of(
             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
             std::string_view::npos;
}

void CheckEndpoint(const std::string& endpoint, bool for_bind) {
  auto bad = [&](const std::string& why) {
    throw Error("invalid ZeroMQ endpoint '" + endpoint + "': " + why +
                " (expected tcp://HOST:PORT, ipc://PATH or inproc://NAME)");
  };
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) {
    if (endpoint.size() <= endpoint.find("//") + 2) bad("empty path");
    return;
  }
  if (endpoint.rfind("tcp://", 0) != 0) bad("unknown transport");
  const std::string rest = endpoint.substr(6);
  const std::size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) bad("no HOST:PORT");
  const std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (host == "*" && !for_bind) bad("'*' is only for binding; name the host to connect to");
  int p = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  const bool wildcard_port = for_bind && port == "*";
  if (!wildcard_port &&
      (ec != std::errc() || end != port.data() + port.size() || p < 1 || p > 65535)) {
    bad("port must be 1-65535");
  }
}

std::optional<std::vector<zmq::message_t>> ReceiveFrames(zmq::socket_t& socket,
                                                         zmq::recv_flags flags) {
  std::vector<zmq::message_t> frames;
  try {
    if (!zmq::recv_multipart(socket, std::back_inserter(frames), flags)) return std::nullopt;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::nullopt;  // a signal: the caller checks its stop flag
    throw;
  }
  return frames;
}

}  // namespace fedsgd::wire
