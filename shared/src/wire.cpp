// Encoding and validation of protocol messages (see wire.h). The socket
// helpers (Send, ReceiveFrames, Poll, CheckEndpoint) are in wire_socket.cpp,
// the tensor frames of each encoding in *_frame.cpp (tensor_frames.h).
//
// Decode trusts nothing a peer sent: the header is first walked by a SAX
// probe that bounds nesting depth, declared lengths and checks UTF-8, and
// only then parsed into a json value and read field by field; the tensor is
// checked for size and finiteness before the Message is handed out.
#include "fedsgd/wire.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "tensor_frames.h"

namespace fedsgd::wire {
namespace {

using nlohmann::json;

static_assert(std::variant_size_v<Message> == 8, "update KindName and Encode/Decode");

constexpr std::size_t kMaxHeaderBytes = 64 * 1024;
constexpr std::size_t kMaxString = 256;
constexpr std::size_t kMaxDeviceId = 64;
// nlohmann's CBOR reader recurses once per nesting level: 64 KiB of nested
// arrays overflows a 4 MiB stack. Our headers are at most a few levels deep
// (the plan's map of maps).
constexpr std::size_t kMaxDepth = 32;

constexpr std::string_view kReasonNames[kRejectReasonCount] = {
    "malformed",         "bad_version",      "unknown_kind", "bad_field",
    "wrong_size",        "non_finite",       "oversize",     "unknown_device",
    "stale_round",       "round_closed",     "duplicate",    "not_selected",
    "identity_mismatch", "too_many_devices", "rate_limited", "samples_exceeded"};

constexpr std::string_view kKindNames[] = {"join",  "welcome", "heartbeat", "fetch_model",
                                           "model", "update",  "ack",       "reject"};

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
// nlohmann's CBOR reader does not check, and json::dump throws on invalid
// UTF-8, so a peer's bad string would surface later as an exception in the
// coordinator's HTTP API.
bool ValidUtf8(std::string_view s) {
  static constexpr std::uint32_t kMinCodePoint[] = {0, 0, 0x80, 0x800, 0x10000};
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 1;
    std::uint32_t cp = c;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07u;
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if (cp < kMinCodePoint[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// A peer's text made fit for a log line or a Reject detail.
std::string Printable(std::string_view s, std::size_t max_len = 32) {
  std::string out(s.substr(0, max_len));
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

// Walks a CBOR header without building anything, refusing what would make
// the real parse dangerous (deep nesting) or the result unusable (invalid
// UTF-8), and declared lengths the header cannot hold.
class HeaderProbe : public nlohmann::json_sax<json> {
 public:
  explicit HeaderProbe(std::size_t bytes) : bytes_(bytes) {}
  const char* problem() const { return problem_; }

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t& s) override { return Text(s); }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t elements) override { return Open(elements); }
  bool key(string_t& s) override { return Text(s); }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t elements) override { return Open(elements); }
  bool end_array() override { return Close(); }
  bool parse_error(std::size_t, const std::string&, const json::exception&) override {
    return Fail("the header is not valid CBOR");
  }

 private:
  bool Fail(const char* why) {
    if (!problem_) problem_ = why;
    return false;
  }
  bool Text(const string_t& s) { return ValidUtf8(s) || Fail("a header string is not UTF-8"); }
  bool Open(std::size_t elements) {
    // Every element takes at least one byte; -1 means indefinite length.
    if (elements != static_cast<std::size_t>(-1) && elements > bytes_) {
      return Fail("a header map or array declares more elements than it holds");
    }
    return ++depth_ <= kMaxDepth || Fail("the header nests too deeply");
  }
  bool Close() {
    --depth_;
    return true;
  }

  std::size_t bytes_;
  std::size_t depth_ = 0;
  const char* problem_ = nullptr;
};

// Reads the header's fields; the first problem is kept in `error` and later
// reads return defaults, so a message is built in one expression and
// checked once.
struct Reader {
  const json& h;
  std::string error;

  void Fail(std::string why) {
    if (error.empty()) error = std::move(why);
  }
  const json* Field(const char* key) {
    const auto it = h.find(key);
    if (it == h.end()) {
      Fail(std::string("missing field '") + key + "'");
      return nullptr;
    }
    return &*it;
  }
  std::string String(const char* key, std::size_t max_len = kMaxString) {
    const json* f = Field(key);
    if (!f) return {};
    if (!f->is_string()) return Fail(std::string("field '") + key + "' must be a string"), "";
    const auto& s = f->get_ref<const std::string&>();
    if (s.size() > max_len) return Fail(std::string("field '") + key + "' is too long"), "";
    // No control characters: these strings end up in log lines.
    for (const char c : s) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return Fail(std::string("field '") + key + "' holds a control character"), "";
      }
    }
    return s;
  }
  std::string Device() {
    std::string id = String("device", kMaxDeviceId);
    if (error.empty() && !ValidDeviceId(id)) {
      Fail("device id must be 1-64 characters of A-Z a-z 0-9 . _ -");
    }
    return id;
  }
  std::string OneOf(const char* key, std::initializer_list<std::string_view> allowed) {
    std::string s = String(key, 16);
    if (!error.empty()) return s;
    for (const std::string_view a : allowed) {
      if (s == a) return s;
    }
    std::string names;
    for (const std::string_view a : allowed)
      names += (names.empty() ? "" : " or ") + std::string(a);
    Fail(std::string("field '") + key + "' must be " + names);
    return s;
  }
  std::uint64_t Uint(const char* key, std::uint64_t lo = 0,
                     std::uint64_t hi = std::numeric_limits<std::uint64_t>::max()) {
    const json* f = Field(key);
    if (!f) return lo;
    if (!f->is_number_unsigned()) {
      Fail(std::string("field '") + key + "' must be a non-negative integer");
      return lo;
    }
    const auto v = f->get<std::uint64_t>();
    if (v < lo || v > hi) {
      Fail(std::string("field '") + key + "' must be in " + std::to_string(lo) + ".." +
           std::to_string(hi));
      return lo;
    }
    return v;
  }
  int Int(const char* key, int lo, int hi) {
    return static_cast<int>(
        Uint(key, static_cast<std::uint64_t>(lo), static_cast<std::uint64_t>(hi)));
  }
  double Double(const char* key, double lo = -std::numeric_limits<double>::max(),
                double hi = std::numeric_limits<double>::max()) {
    const json* f = Field(key);
    if (!f) return 0;
    if (!f->is_number()) return Fail(std::string("field '") + key + "' must be a number"), 0.0;
    const double v = f->get<double>();
    if (!std::isfinite(v)) return Fail(std::string("field '") + key + "' is not finite"), 0.0;
    if (v < lo || v > hi) return Fail(std::string("field '") + key + "' is out of range"), 0.0;
    return v;
  }
  bool Bool(const char* key) {
    const json* f = Field(key);
    if (!f) return false;
    if (!f->is_boolean()) return Fail(std::string("field '") + key + "' must be a boolean"), false;
    return f->get<bool>();
  }
};

zmq::message_t HeaderFrame(const json& header) {
  const std::vector<std::uint8_t> bytes = json::to_cbor(header);
  return zmq::message_t(bytes.data(), bytes.size());
}

// A byte vector as a frame, handed to zmq without a copy (see Fp32Frame).
zmq::message_t BytesFrame(std::vector<std::uint8_t>&& bytes) {
  if (bytes.empty()) return zmq::message_t();
  auto* owned = new std::vector<std::uint8_t>(std::move(bytes));
  return zmq::message_t(
      owned->data(), owned->size(),
      [](void*, void* hint) { delete static_cast<std::vector<std::uint8_t>*>(hint); }, owned);
}

// A compressed tensor's dense count bounded by the limits, then its frame
// decoded by its encoding.
std::optional<DecodeError> ReadEncodedTensor(const zmq::message_t& frame,
                                             const EncodedTensor& encoded, const Limits& limits,
                                             std::vector<float>& out) {
  if (encoded.count > limits.max_params) {
    return DecodeError{RejectReason::kOversize, "tensor of " + std::to_string(encoded.count) +
                                                    " values exceeds the limit of " +
                                                    std::to_string(limits.max_params)};
  }
  if (limits.expected_params != 0 && encoded.count != limits.expected_params) {
    return DecodeError{RejectReason::kWrongSize, "tensor has " + std::to_string(encoded.count) +
                                                     " values, the model has " +
                                                     std::to_string(limits.expected_params)};
  }
  switch (encoded.encoding) {
    case TensorEncoding::kFp16:
      return tensor_frames::DecodeFp16(frame, encoded.count, out);
    case TensorEncoding::kInt8:
      return tensor_frames::DecodeInt8(frame, encoded.count, encoded.block, out);
    case TensorEncoding::kTopK:
      return tensor_frames::DecodeTopK(frame, encoded.count, out);
    case TensorEncoding::kFp32:
      break;
  }
  return tensor_frames::DecodeFp32(frame, limits, out);
}

std::vector<float>* Tensor(Message& m) {
  if (auto* w = std::get_if<Welcome>(&m)) return &w->params;
  if (auto* o = std::get_if<Model>(&m)) return &o->params;
  if (auto* u = std::get_if<Update>(&m)) return &u->payload;
  return nullptr;
}

// The message a well-formed header describes, or why it is not one.
std::variant<Message, DecodeError> ReadHeader(const json& h) {
  auto fail = [](RejectReason reason, std::string detail) {
    return DecodeError{reason, std::move(detail)};
  };
  const auto v = h.find("v");
  if (v == h.end() || !v->is_number_unsigned() || v->get<std::uint64_t>() != kProtocolVersion) {
    return fail(RejectReason::kBadVersion,
                "protocol version must be " + std::to_string(kProtocolVersion));
  }
  Reader r{h, {}};
  const std::string kind = r.String("kind", 32);
  if (!r.error.empty()) return fail(RejectReason::kBadField, r.error);

  Message message;
  if (kind == "join") {
    message = Join{r.Device(), r.Int("threads", 1, 4096), r.Uint("samples"), r.String("software")};
  } else if (kind == "welcome") {
    Welcome w;
    w.device = r.Device();
    w.run_id = r.String("run_id");
    if (const json* plan = r.Field("plan")) {
      if (plan->is_object()) {
        w.plan = *plan;
      } else {
        r.Fail("field 'plan' must be a map");
      }
    }
    w.model_version = r.Uint("model_version");
    w.round = r.Uint("round");
    w.publish_endpoint = r.String("publish_endpoint");
    w.heartbeat_ms = r.Int("heartbeat_ms", 10, 3600 * 1000);
    message = std::move(w);
  } else if (kind == "heartbeat") {
    message = Heartbeat{r.Device(),       r.OneOf("state", {"idle", "training", "sending"}),
                        r.Uint("round"),  r.Double("samples_per_second", 0),
                        r.Double("loss"), r.Double("progress", 0, 1)};
  } else if (kind == "fetch_model") {
    message = FetchModel{r.Device()};
  } else if (kind == "model") {
    message =
        Model{r.String("run_id"), r.Uint("model_version"), r.Uint("round"), r.Bool("final"), {}};
  } else if (kind == "update") {
    Update u{r.Device(),
             r.Uint("round"),
             r.Uint("model_version"),
             r.Uint("samples", 1),
             r.Double("loss"),
             r.OneOf("update_kind", {"delta", "gradient"}),
             r.Double("train_seconds", 0),
             {},
             std::nullopt};
    // Federated evaluation: all three fields or none.
    if (h.contains("eval_loss") || h.contains("eval_accuracy") || h.contains("eval_samples")) {
      u.evaluation = HeldOutEvaluation{r.Double("eval_loss", 0), r.Double("eval_accuracy", 0, 1),
                                       r.Uint("eval_samples", 1, kMaxHeldOutSamples)};
    }
    // A compressed tensor (update_codec.h); no "encoding" means fp32.
    if (h.contains("encoding")) {
      const std::string encoding = r.OneOf("encoding", {"fp32", "fp16", "int8", "topk"});
      for (const auto e : {TensorEncoding::kFp32, TensorEncoding::kFp16, TensorEncoding::kInt8,
                           TensorEncoding::kTopK}) {
        if (encoding == ToString(e)) u.encoded.encoding = e;
      }
      if (u.encoded.encoding != TensorEncoding::kFp32) u.encoded.count = r.Uint("count");
      if (u.encoded.encoding == TensorEncoding::kInt8) {
        u.encoded.block = static_cast<std::uint32_t>(r.Uint("block", 1, kMaxInt8Block));
      }
    }
    message = std::move(u);
  } else if (kind == "ack") {
    message = Ack{r.Uint("round"), r.Uint("model_version"), r.String("detail")};
  } else if (kind == "reject") {
    const std::string name = r.String("reason", 32);
    const auto reason = ParseRejectReason(name);
    if (r.error.empty() && !reason) r.Fail("unknown reject reason '" + Printable(name) + "'");
    message = Reject{reason.value_or(RejectReason::kMalformed), r.String("detail")};
  } else {
    return fail(RejectReason::kUnknownKind, "unknown message kind '" + Printable(kind) + "'");
  }
  if (!r.error.empty()) return fail(RejectReason::kBadField, kind + ": " + r.error);
  return message;
}

}  // namespace

std::string_view ToString(RejectReason reason) {
  const auto i = static_cast<int>(reason);
  return i >= 0 && i < kRejectReasonCount ? kReasonNames[i] : "unknown";
}

std::optional<RejectReason> ParseRejectReason(std::string_view name) {
  for (int i = 0; i < kRejectReasonCount; ++i) {
    if (kReasonNames[i] == name) return static_cast<RejectReason>(i);
  }
  return std::nullopt;
}

std::string_view KindName(const Message& message) { return kKindNames[message.index()]; }

bool ValidDeviceId(std::string_view id) {
  return !id.empty() && id.size() <= kMaxDeviceId &&
         id.find_first_not_of(
             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
             std::string_view::npos;
}

std::vector<zmq::message_t> Encode(Message message) {
  json h{{"v", kProtocolVersion}, {"kind", KindName(message)}};
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
        } else if constexpr (std::is_same_v<T, Update>) {
          h["device"] = m.device;
          h["round"] = m.round;
          h["model_version"] = m.model_version;
          h["samples"] = m.samples;
          h["loss"] = m.loss;
          h["update_kind"] = m.kind;
          h["train_seconds"] = m.train_seconds;
          if (m.evaluation) {
            h["eval_loss"] = m.evaluation->loss;
            h["eval_accuracy"] = m.evaluation->accuracy;
            h["eval_samples"] = m.evaluation->samples;
          }
          if (m.encoded.encoding != TensorEncoding::kFp32) {
            h["encoding"] = ToString(m.encoded.encoding);
            h["count"] = m.encoded.count;
            if (m.encoded.encoding == TensorEncoding::kInt8) h["block"] = m.encoded.block;
          }
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
  frames.reserve(2);
  frames.push_back(HeaderFrame(h));
  auto* update = std::get_if<Update>(&message);
  if (update && update->encoded.encoding != TensorEncoding::kFp32) {
    frames.push_back(BytesFrame(std::move(update->encoded.bytes)));
  } else if (std::vector<float>* tensor = Tensor(message)) {
    frames.push_back(tensor_frames::Fp32Frame(std::move(*tensor)));
  }
  return frames;
}

DecodeResult Decode(std::vector<zmq::message_t>& frames, const Limits& limits) {
  auto fail = [](RejectReason reason, std::string detail) {
    return DecodeResult{DecodeError{reason, std::move(detail)}};
  };
  if (frames.empty() || frames.size() > 2) {
    return fail(RejectReason::kMalformed,
                "expected 1 or 2 frames, got " + std::to_string(frames.size()));
  }
  const std::size_t header_bytes = frames[0].size();
  if (header_bytes > kMaxHeaderBytes) {
    return fail(RejectReason::kOversize,
                "header of " + std::to_string(header_bytes) + " bytes exceeds 64 KiB");
  }
  const auto* first = static_cast<const std::uint8_t*>(frames[0].data());
  const auto* last = first + header_bytes;
  json h;
  try {
    HeaderProbe probe(header_bytes);
    if (!json::sax_parse(first, last, &probe, json::input_format_t::cbor, /*strict=*/true)) {
      return fail(RejectReason::kMalformed,
                  probe.problem() ? probe.problem() : "the header is not valid CBOR");
    }
    h = json::from_cbor(first, last, /*strict=*/true, /*allow_exceptions=*/false);
  } catch (const std::exception&) {
    // The probe should have caught everything; this is the last line, so
    // that no peer's bytes can ever throw out of Decode.
    return fail(RejectReason::kMalformed, "the header is not valid CBOR");
  }
  if (h.is_discarded()) return fail(RejectReason::kMalformed, "the header is not valid CBOR");
  if (!h.is_object()) return fail(RejectReason::kMalformed, "the header is not a CBOR map");

  auto header = ReadHeader(h);
  if (auto* error = std::get_if<DecodeError>(&header)) return DecodeResult{std::move(*error)};
  Message& message = std::get<Message>(header);

  std::vector<float>* tensor = Tensor(message);
  if (frames.size() != (tensor ? 2u : 1u)) {
    return fail(RejectReason::kMalformed,
                std::string(KindName(message)) +
                    (tensor ? " needs a tensor frame after its header" : " takes no tensor frame"));
  }
  if (tensor) {
    auto* update = std::get_if<Update>(&message);
    const TensorEncoding encoding = update ? update->encoded.encoding : TensorEncoding::kFp32;
    if (update && limits.update_encoding && encoding != *limits.update_encoding) {
      return fail(RejectReason::kBadField, "update encoded as " + std::string(ToString(encoding)) +
                                               ", the plan's is " +
                                               std::string(ToString(*limits.update_encoding)));
    }
    auto error = encoding == TensorEncoding::kFp32
                     ? tensor_frames::DecodeFp32(frames[1], limits, *tensor)
                     : ReadEncodedTensor(frames[1], update->encoded, limits, *tensor);
    if (error) return DecodeResult{std::move(*error)};
  }
  return DecodeResult{std::move(message)};
}

}  // namespace fedsgd::wire
