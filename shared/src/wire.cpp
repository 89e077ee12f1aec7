// Encoding and validation of protocol messages (see wire.h). The socket
// helpers (Send, ReceiveFrames, Poll, CheckEndpoint) are in wire_socket.cpp,
// the tensor frames of each encoding in *_frame.cpp (tensor_frames.h).
//
// Decode trusts nothing a peer sent: the header is first walked by a SAX
// probe that bounds nesting depth, declared lengths and checks UTF-8, and
// only then parsed into a json value and read field by field (both in
// header_reader.h); the tensor is checked for size and finiteness before
// the Message is handed out. A plain Update header, the receive path's
// commonest, is read first without allocating (update_header.h), which only
// ever accepts what the general path would accept the same way.
#include "fedsgd/wire.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "header_reader.h"
#include "tensor_frames.h"
#include "update_header.h"

namespace fedsgd::wire {
namespace {

using nlohmann::json;
using namespace header_reader;

static_assert(std::variant_size_v<Message> == 8, "update KindName and Encode/Decode");

constexpr std::string_view kReasonNames[kRejectReasonCount] = {
    "malformed",         "bad_version",      "unknown_kind", "bad_field",
    "wrong_size",        "non_finite",       "oversize",     "unknown_device",
    "stale_round",       "round_closed",     "duplicate",    "not_selected",
    "identity_mismatch", "too_many_devices", "rate_limited", "samples_exceeded"};

constexpr std::string_view kKindNames[] = {"join",  "welcome", "heartbeat", "fetch_model",
                                           "model", "update",  "ack",       "reject"};

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

// How the message's tensor travels; nullptr for a message without one.
EncodedTensor* Encoded(Message& m) {
  if (auto* w = std::get_if<Welcome>(&m)) return &w->encoded;
  if (auto* o = std::get_if<Model>(&m)) return &o->encoded;
  if (auto* u = std::get_if<Update>(&m)) return &u->encoded;
  return nullptr;
}

// A tensor's "encoding" and the fields it needs (update_codec.h); no
// "encoding" means fp32. Updates may take every encoding, weights (Welcome,
// Model: broadcast_codec.h) fp32 or fp16.
EncodedTensor ReadEncoding(Reader& r, const json& h, bool weights) {
  EncodedTensor t;
  if (!h.contains("encoding")) return t;
  const std::string encoding = weights ? r.OneOf("encoding", {"fp32", "fp16"})
                                       : r.OneOf("encoding", {"fp32", "fp16", "int8", "topk"});
  for (const auto e : {TensorEncoding::kFp32, TensorEncoding::kFp16, TensorEncoding::kInt8,
                       TensorEncoding::kTopK}) {
    if (encoding == ToString(e)) t.encoding = e;
  }
  if (t.encoding != TensorEncoding::kFp32) t.count = r.Uint("count");
  if (t.encoding == TensorEncoding::kInt8) {
    t.block = static_cast<std::uint32_t>(r.Uint("block", 1, kMaxInt8Block));
  }
  return t;
}

void WriteEncoding(const EncodedTensor& t, json& h) {
  if (t.encoding == TensorEncoding::kFp32) return;
  h["encoding"] = ToString(t.encoding);
  h["count"] = t.count;
  if (t.encoding == TensorEncoding::kInt8) h["block"] = t.block;
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
    Join j{r.Device(), r.Int("threads", 1, 4096), r.Uint("samples"), r.String("software")};
    if (h.contains("boards")) j.boards = r.Uint("boards", 0, kMaxBoards);
    message = std::move(j);
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
    w.encoded = ReadEncoding(r, h, /*weights=*/true);
    message = std::move(w);
  } else if (kind == "heartbeat") {
    Heartbeat b{r.Device(),       r.OneOf("state", {"idle", "training", "sending"}),
                r.Uint("round"),  r.Double("samples_per_second", 0),
                r.Double("loss"), r.Double("progress", 0, 1)};
    if (h.contains("boards")) b.boards = r.Uint("boards", 0, kMaxBoards);
    message = std::move(b);
  } else if (kind == "fetch_model") {
    message = FetchModel{r.Device()};
  } else if (kind == "model") {
    message = Model{r.String("run_id"),
                    r.Uint("model_version"),
                    r.Uint("round"),
                    r.Bool("final"),
                    {},
                    ReadEncoding(r, h, /*weights=*/true)};
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
    // Personalisation: both fields or none, on the evaluation's samples.
    if (h.contains("personal_loss") || h.contains("personal_accuracy")) {
      if (!u.evaluation) {
        r.Fail("personal_loss and personal_accuracy need the eval_ fields");
      } else {
        u.personal = HeldOutEvaluation{r.Double("personal_loss", 0),
                                       r.Double("personal_accuracy", 0, 1), u.evaluation->samples};
      }
    }
    u.encoded = ReadEncoding(r, h, /*weights=*/false);
    message = std::move(u);
  } else if (kind == "ack") {
    Ack a{r.Uint("round"), r.Uint("model_version"), r.String("detail")};
    if (h.contains("selected")) a.selected = r.Bool("selected");
    if (h.contains("heartbeat_ms")) a.heartbeat_ms = r.Int("heartbeat_ms", 10, kMaxIntervalMs);
    if (h.contains("upload")) {
      a.upload = r.Bool("upload");
      if (!*a.upload) a.retry_ms = r.Int("retry_ms", 10, kMaxIntervalMs);
    }
    message = std::move(a);
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

// The message a header frame (at most kMaxHeaderBytes) describes, or why it
// is not one: a plain Update header by the allocation-free reader
// (update_header.h), anything else, and anything it refuses, by the probe,
// a json value and ReadHeader.
std::variant<Message, DecodeError> ParseHeader(const zmq::message_t& frame) {
  auto fail = [](RejectReason reason, std::string detail) {
    return DecodeError{reason, std::move(detail)};
  };
  const std::size_t header_bytes = frame.size();
  const auto* first = static_cast<const std::uint8_t*>(frame.data());
  const auto* last = first + header_bytes;
  if (Update plain; update_header::ReadPlainUpdate({first, header_bytes}, plain)) {
    return Message(std::move(plain));
  }
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
  return ReadHeader(h);
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
          if (m.boards) h["boards"] = *m.boards;
        } else if constexpr (std::is_same_v<T, Welcome>) {
          h["device"] = m.device;
          h["run_id"] = m.run_id;
          h["plan"] = m.plan;
          h["model_version"] = m.model_version;
          h["round"] = m.round;
          h["publish_endpoint"] = m.publish_endpoint;
          h["heartbeat_ms"] = m.heartbeat_ms;
          WriteEncoding(m.encoded, h);
        } else if constexpr (std::is_same_v<T, Heartbeat>) {
          h["device"] = m.device;
          h["state"] = m.state;
          h["round"] = m.round;
          h["samples_per_second"] = m.samples_per_second;
          h["loss"] = m.loss;
          h["progress"] = m.progress;
          if (m.boards) h["boards"] = *m.boards;
        } else if constexpr (std::is_same_v<T, FetchModel>) {
          h["device"] = m.device;
        } else if constexpr (std::is_same_v<T, Model>) {
          h["run_id"] = m.run_id;
          h["model_version"] = m.model_version;
          h["round"] = m.round;
          h["final"] = m.final;
          WriteEncoding(m.encoded, h);
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
            if (m.personal) {
              h["personal_loss"] = m.personal->loss;
              h["personal_accuracy"] = m.personal->accuracy;
            }
          }
          WriteEncoding(m.encoded, h);
        } else if constexpr (std::is_same_v<T, Ack>) {
          h["round"] = m.round;
          h["model_version"] = m.model_version;
          h["detail"] = m.detail;
          if (m.selected) h["selected"] = *m.selected;
          if (m.heartbeat_ms) h["heartbeat_ms"] = m.heartbeat_ms;
          if (m.upload) {
            h["upload"] = *m.upload;
            if (!*m.upload) h["retry_ms"] = m.retry_ms;
          }
        } else if constexpr (std::is_same_v<T, Reject>) {
          h["reason"] = ToString(m.reason);
          h["detail"] = m.detail;
        }
      },
      message);
  std::vector<zmq::message_t> frames;
  frames.reserve(2);
  frames.push_back(HeaderFrame(h));
  EncodedTensor* encoded = Encoded(message);
  if (encoded && encoded->encoding != TensorEncoding::kFp32) {
    frames.push_back(BytesFrame(std::move(encoded->bytes)));
  } else if (std::vector<float>* tensor = Tensor(message)) {
    frames.push_back(tensor_frames::Fp32Frame(std::move(*tensor)));
  }
  return frames;
}

std::optional<DecodeError> DecodeTensor(const EncodedTensor& tensor, std::vector<float>& out,
                                        const Limits& limits) {
  const zmq::message_t frame(tensor.bytes.data(), tensor.bytes.size());
  if (tensor.encoding == TensorEncoding::kFp32)
    return tensor_frames::DecodeFp32(frame, limits, out);
  return ReadEncodedTensor(frame, tensor, limits, out);
}

struct TensorBufferAccess {
  static void Clear(TensorBuffer& b) {
    b.values_ = {};
    b.borrowed_ = false;
  }
  // Update's tensor into the buffer: borrowed when fp32 allows, else in the
  // storage.
  static std::optional<DecodeError> Read(TensorBuffer& b, const zmq::message_t& frame,
                                         const EncodedTensor& encoded, const Limits& limits) {
    std::optional<DecodeError> error;
    if (encoded.encoding == TensorEncoding::kFp32) {
      error = tensor_frames::ViewFp32(frame, limits, b.storage_, b.values_);
      b.borrowed_ = !error && !b.values_.empty() && b.values_.data() != b.storage_.data();
    } else {
      error = ReadEncodedTensor(frame, encoded, limits, b.storage_);
      if (!error) b.values_ = b.storage_;
    }
    if (error) Clear(b);
    return error;
  }
};

namespace {

// Decode's body; `buffer` (may be null) receives an Update's tensor.
DecodeResult DecodeMessage(std::vector<zmq::message_t>& frames, const Limits& limits,
                           TensorBuffer* buffer) {
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
  auto header = ParseHeader(frames[0]);
  if (auto* error = std::get_if<DecodeError>(&header)) return DecodeResult{std::move(*error)};
  Message& message = std::get<Message>(header);

  std::vector<float>* tensor = Tensor(message);
  if (frames.size() != (tensor ? 2u : 1u)) {
    return fail(RejectReason::kMalformed,
                std::string(KindName(message)) +
                    (tensor ? " needs a tensor frame after its header" : " takes no tensor frame"));
  }
  if (tensor) {
    const EncodedTensor& encoded = *Encoded(message);
    const TensorEncoding encoding = encoded.encoding;
    // A Welcome carries the plan its encoding is checked against (wire.h).
    std::optional<TensorEncoding> required;
    if (std::holds_alternative<Update>(message)) required = limits.update_encoding;
    if (std::holds_alternative<Model>(message)) required = limits.model_encoding;
    if (required && encoding != *required) {
      return fail(RejectReason::kBadField, std::string(KindName(message)) + " encoded as " +
                                               std::string(ToString(encoding)) +
                                               ", the plan's is " +
                                               std::string(ToString(*required)));
    }
    std::optional<DecodeError> error;
    if (buffer && std::holds_alternative<Update>(message)) {
      error = TensorBufferAccess::Read(*buffer, frames[1], encoded, limits);
    } else if (encoding == TensorEncoding::kFp32) {
      error = tensor_frames::DecodeFp32(frames[1], limits, *tensor);
    } else {
      error = ReadEncodedTensor(frames[1], encoded, limits, *tensor);
    }
    if (error) return DecodeResult{std::move(*error)};
  }
  return DecodeResult{std::move(message)};
}

}  // namespace

DecodeResult Decode(std::vector<zmq::message_t>& frames, const Limits& limits) {
  return DecodeMessage(frames, limits, nullptr);
}

DecodeResult Decode(std::vector<zmq::message_t>& frames, const Limits& limits,
                    TensorBuffer& tensor) {
  TensorBufferAccess::Clear(tensor);
  return DecodeMessage(frames, limits, &tensor);
}

}  // namespace fedsgd::wire
