// The wire protocol between daemons and the coordinator (behaviour:
// docs/protocol.md).
//
// The coordinator binds a ROUTER (requests and their replies) and a PUB
// (Model broadcasts); a daemon connects a DEALER and a SUB. A message is
// multipart: frame 0 is a small CBOR map (nlohmann::json::to_cbor) holding
// "v" (kProtocolVersion), "kind" and the message's fields; then zero or one
// tensor frame of raw little-endian float32, never re-encoded as text. An
// Update's tensor may instead travel compressed (fp16, int8, topk; see
// update_codec.h), and a Welcome's or Model's weights in fp16 (the plan's
// broadcast_codec, broadcast_codec.h): the header then names the
// "encoding" and the dense "count"; a header without "encoding" is fp32,
// as before. On a
// ROUTER the peer's routing-id frame comes first; a DEALER sends no empty
// delimiter frame. Update's `kind` travels as "update_kind", since "kind"
// names the message.
//
// Decode() validates everything before anything is used: frame count, CBOR,
// version, kind, every field's presence, type and range, the tensor's size,
// and that every float is finite; a compressed tensor's layout too (sizes,
// finite non-negative scales, sorted unique in-range indices, bounded
// varints, the exact frame length). A bad message yields a DecodeError with
// a RejectReason whose name is stable (metrics and logs use it), never an
// exception or a crash.
//
// Thread-safety: every function is reentrant and shares no state. A
// zmq::socket_t passed to Send / ReceiveFrames must be used by one thread
// only, as always with ZeroMQ.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>
#include <zmq.hpp>

#include "fedsgd/update_codec.h"

namespace fedsgd::wire {

inline constexpr int kProtocolVersion = 1;

// Why a message was refused. The first group is found by Decode, the second
// by the coordinator's checks of a well-formed message. The names returned
// by ToString are part of the protocol and of the metrics: never rename one.
enum class RejectReason {
  kMalformed,   // not CBOR, not a map, invalid UTF-8, wrong frame count
  kBadVersion,  // "v" missing or not kProtocolVersion
  kUnknownKind,
  kBadField,       // a field missing, mistyped or out of range
  kWrongSize,      // tensor not whole floats, or not the model's size
  kNonFinite,      // NaN or Inf in the tensor
  kOversize,       // header or tensor larger than the limit
  kUnknownDevice,  // the device has not joined
  kStaleRound,     // for an older round or model version
  kRoundClosed,    // no round open
  kDuplicate,      // a second update for the same round
  kNotSelected,    // the device is not a participant of the round
  // Trust and limits (docs/security.md).
  kIdentityMismatch,  // the device field is not the id bound to the connection's CURVE key
  kTooManyDevices,    // a join beyond the coordinator's device cap
  kRateLimited,       // joins or fetches faster than the coordinator allows
  kSamplesExceeded,   // more samples claimed than declared at join, or than the plan allows
};
inline constexpr int kRejectReasonCount = 16;

// "malformed", "bad_version", ..., "samples_exceeded"; "unknown" for a value
// outside the enum.
std::string_view ToString(RejectReason reason);
// The inverse of ToString; nullopt for any other name.
std::optional<RejectReason> ParseRejectReason(std::string_view name);

// Daemon -> coordinator: the first message, and again after any reconnect.
struct Join {
  std::string device;
  int threads = 1;  // 1..4096
  std::uint64_t samples = 0;
  std::string software;
  // Sent by a gateway (docs/protocol.md "Gateways"): the boards online
  // behind it (0..kMaxBoards); absent from a daemon.
  std::optional<std::uint64_t> boards = std::nullopt;
};
inline constexpr std::uint64_t kMaxBoards = 10'000'000;

// Reply to Join. Carries the current model.
struct Welcome {
  std::string device;
  std::string run_id;
  nlohmann::json plan = nlohmann::json::object();  // a map (see plan.h)
  std::uint64_t model_version = 0;
  std::uint64_t round = 0;  // the round open now, 0 = none
  std::string publish_endpoint;
  int heartbeat_ms = 1000;  // 10..3,600,000
  std::vector<float> params;
  // How params travel: fp32 (the default) or fp16, as Update::encoded.
  EncodedTensor encoded{};
};

// Daemon -> coordinator every heartbeat_ms; replied with Ack.
struct Heartbeat {
  std::string device;
  std::string state = "idle";  // idle | training | sending
  std::uint64_t round = 0;
  double samples_per_second = 0;  // >= 0
  double loss = 0;
  double progress = 0;                                 // 0..1 of the current round's training
  std::optional<std::uint64_t> boards = std::nullopt;  // a gateway's, as in Join
};

// Daemon -> coordinator; replied with Model.
struct FetchModel {
  std::string device;
};

// Broadcast on PUB, and the reply to FetchModel.
struct Model {
  std::string run_id;
  std::uint64_t model_version = 0;
  std::uint64_t round = 0;  // the round open for training, 0 = none
  bool final = false;       // the run is finished
  std::vector<float> params;
  // How params travel: fp32 (the default) or fp16, as Update::encoded.
  EncodedTensor encoded{};
};

// Federated evaluation (Plan::eval_fraction): how the global model the
// update was trained from scores on the device's held-out samples, measured
// before training. Optional on the wire: the three fields come together.
struct HeldOutEvaluation {
  double loss = 0;            // mean loss, finite, >= 0
  double accuracy = 0;        // 0..1
  std::uint64_t samples = 0;  // 1..kMaxHeldOutSamples
};
inline constexpr std::uint64_t kMaxHeldOutSamples = std::uint64_t{1} << 32;

// Daemon -> coordinator; replied with Ack or Reject.
struct Update {
  std::string device;
  std::uint64_t round = 0;
  std::uint64_t model_version = 0;
  std::uint64_t samples = 0;  // >= 1
  double loss = 0;
  std::string kind = "delta";  // delta | gradient
  double train_seconds = 0;    // >= 0
  std::vector<float> payload;
  std::optional<HeldOutEvaluation> evaluation;
  // Personalisation (Plan::personalize_steps): the device's fine-tuned copy
  // on the same held-out samples; only with `evaluation`.
  std::optional<HeldOutEvaluation> personal = std::nullopt;
  // How the tensor travels. Sending: with encoded.encoding fp32 (the
  // default) Encode sends `payload`; otherwise it sends encoded.bytes (from
  // EncodeTensor) and ignores payload. Receiving: Decode fills payload with
  // the float32 values and records encoding, count and block here, leaving
  // encoded.bytes empty.
  EncodedTensor encoded{};
};

struct Ack {
  std::uint64_t round = 0;  // the round open now at the coordinator
  std::uint64_t model_version = 0;
  std::string detail;
  // The fields below are optional on the wire (docs/protocol.md "Device
  // selection"). Device selection: whether this device takes part in
  // `round`; absent without selection or open round.
  std::optional<bool> selected = std::nullopt;
  // Pace steering: the interval this device is to heartbeat at from now on,
  // in ms (10..3,600,000); 0 (absent) = keep the current one.
  int heartbeat_ms = 0;
  // Flow control, the answer to a heartbeat in state "sending" (an update
  // is ready): true = send it now, a slot is held for it; false = ask again
  // after retry_ms (10..3,600,000). Absent: the coordinator does not
  // meter uploads.
  std::optional<bool> upload = std::nullopt;
  int retry_ms = 0;
};
inline constexpr int kMaxIntervalMs = 3600 * 1000;

struct Reject {
  RejectReason reason = RejectReason::kMalformed;
  std::string detail;
};

using Message = std::variant<Join, Welcome, Heartbeat, FetchModel, Model, Update, Ack, Reject>;

// "join", "welcome", "heartbeat", "fetch_model", "model", "update", "ack",
// "reject": the "kind" on the wire, and for logs.
std::string_view KindName(const Message& message);

// The frames of a message: the header, then the tensor frame for Welcome,
// Model and Update (possibly empty). On little-endian hosts the tensor
// vector's buffer is handed to zmq without a copy, hence the by-value
// parameter: move into it. Does not validate; the peer's Decode does. Throws
// only std::bad_alloc.
std::vector<zmq::message_t> Encode(Message message);

struct Limits {
  std::size_t expected_params = 0;    // tensor length required; 0: any up to max_params
  std::size_t max_params = 1u << 26;  // 256 MiB of floats
  // The only encoding an Update may arrive in (the plan's update_codec);
  // another is refused as bad_field. nullopt: any.
  std::optional<TensorEncoding> update_encoding{};
  // The same for a Model (the plan's broadcast_codec). A Welcome is not
  // bound by it: it carries the plan its encoding is checked against.
  std::optional<TensorEncoding> model_encoding{};
};

struct DecodeError {
  RejectReason reason = RejectReason::kMalformed;
  std::string detail;  // short, printable ASCII: fit to log or echo in a Reject
};

struct DecodeResult {
  std::variant<Message, DecodeError> value;
  bool ok() const { return value.index() == 0; }
  // Preconditions: ok() for message(), !ok() for error().
  Message& message() { return std::get<Message>(value); }
  const DecodeError& error() const { return std::get<DecodeError>(value); }
};

// Validates and decodes the frames of one message, without any routing-id
// frame (a ROUTER's caller removes it first). Returns the Message, or a
// DecodeError naming the first problem found: malformed (frame count, bad
// CBOR, not a map, invalid UTF-8, nesting too deep), oversize (header over
// 64 KiB, tensor over limits.max_params), bad_version, unknown_kind,
// bad_field (also: an Update encoded otherwise than limits.update_encoding,
// a Model otherwise than limits.model_encoding, a Welcome or Model in
// another encoding than fp32 or fp16, a negative int8 scale or a -128,
// repeated or out-of-range topk indices, a topk varint over 32 bits or not
// in its shortest form), wrong_size (also: a compressed frame of another
// length than its layout), non_finite. Never throws (std::bad_alloc aside)
// and never reads outside the frames. The frames are left unchanged.
DecodeResult Decode(std::vector<zmq::message_t>& frames, const Limits& limits = {});

// Where Decode puts an Update's tensor on the receive path that allocates
// nothing per update (the coordinator's: one TensorBuffer, reused for every
// request). Decode with a TensorBuffer leaves Update::payload empty and
// makes values() show the update's floats instead:
//   - fp32 (the default encoding), on a little-endian host, from a frame
//     whose data is float-aligned (as zmq delivers a large message): a view
//     of the frame itself, checked for size and finiteness in one read and
//     never copied;
//   - an unaligned fp32 frame, a big-endian host, and the fp16, int8 and
//     topk encodings: expanded into storage the buffer owns and reuses, so
//     there is no allocation once it has held a tensor of that size (it
//     keeps the capacity of the largest one).
// values() is valid until the next Decode with this buffer, and, when
// borrowed(), while the frames given to Decode live unchanged; it is empty
// before any Decode and after one that failed or decoded another message.
// Not thread-safe: one buffer per receiving thread.
class TensorBuffer {
 public:
  std::span<const float> values() const { return values_; }
  // True when values() points into a frame rather than into the storage.
  bool borrowed() const { return borrowed_; }
  // Bytes the storage holds on to (0 while only fp32 frames were borrowed).
  std::size_t capacity_bytes() const { return storage_.capacity() * sizeof(float); }

 private:
  friend struct TensorBufferAccess;  // Decode's (wire.cpp)
  std::vector<float> storage_;
  std::span<const float> values_;
  bool borrowed_ = false;
};

// Decode, except that an Update's tensor goes to `tensor` (see TensorBuffer)
// instead of Update::payload, which stays empty; Update::encoded records the
// encoding, count and block as always. Every check is Decode's, with the
// same RejectReason and detail: a refused message leaves tensor.values()
// empty, so a bad update can never reach the model through it. Welcome and
// Model still decode their params into the message (a daemon's path, not
// this one). Allocations: none for the tensor (see TensorBuffer), and none
// for the header of an fp32 Update as Encode writes it (with or without the
// evaluation fields, a device id of at most 15 characters: longer ones take
// one); other headers (compressed updates, other messages) are parsed into a
// json value as by Decode, a few dozen small allocations.
DecodeResult Decode(std::vector<zmq::message_t>& frames, const Limits& limits,
                    TensorBuffer& tensor);

// Validates and expands one tensor as Decode does a message's, with
// tensor.count bounded by limits (fp32: the bytes' own length). For the
// sender's own tensors (e.g. what an EncodeTensor result delivers), so it
// copies the bytes once. Returns nullopt with `out` filled, or the error.
std::optional<DecodeError> DecodeTensor(const EncodedTensor& tensor, std::vector<float>& out,
                                        const Limits& limits = {});

// Encodes and sends a message without blocking, preceded by routing_id when
// given (ROUTER sockets). Returns true when queued; false when the socket
// would block (EAGAIN: high-water mark, or a DEALER with no peer) or, with
// ZMQ_ROUTER_MANDATORY, the peer is gone (EHOSTUNREACH). Throws
// zmq::error_t only for other socket errors, which are bugs (e.g. a closed
// socket).
bool Send(zmq::socket_t& socket, Message message, const zmq::message_t* routing_id = nullptr);
// Send for frames already encoded (Encode's, possibly with a tensor frame
// swapped for a zmq::message_t::copy of a shared one): the same contract.
bool SendFrames(zmq::socket_t& socket, std::vector<zmq::message_t> frames,
                const zmq::message_t* routing_id = nullptr);

// Receives all frames of one multipart message (a ROUTER's routing id first).
// nullopt when none is ready (with recv_flags::dontwait) or a signal
// interrupted the wait; throws zmq::error_t for other socket errors.
std::optional<std::vector<zmq::message_t>> ReceiveFrames(
    zmq::socket_t& socket, zmq::recv_flags flags = zmq::recv_flags::none);

// The protocol's largest message: a header and one tensor frame (a ROUTER
// adds the routing id in front).
inline constexpr std::size_t kMaxFrames = 2;

struct BoundedFrames {
  std::vector<zmq::message_t> frames;  // the first max_frames frames
  std::size_t dropped_frames = 0;      // frames after those, read and freed at once
  std::size_t dropped_bytes = 0;
};
// Like ReceiveFrames, but keeps at most `max_frames` frames of the message:
// the rest are received one by one and released immediately, so a message
// of many maximum-size frames (ZMQ_MAXMSGSIZE bounds frames, not messages)
// never sits in memory whole. The caller refuses a message with
// dropped_frames > 0.
std::optional<BoundedFrames> ReceiveBounded(zmq::socket_t& socket, std::size_t max_frames,
                                            zmq::recv_flags flags = zmq::recv_flags::none);
// The same into a caller's BoundedFrames, reusing its vector's capacity (a
// receive loop then allocates nothing per message itself; zmq allocates a
// large frame's data). `out` is cleared first; false (out empty) when
// ReceiveBounded would return nullopt.
bool ReceiveBounded(zmq::socket_t& socket, std::size_t max_frames, BoundedFrames& out,
                    zmq::recv_flags flags = zmq::recv_flags::none);

// zmq::poll that treats an interruption by a signal (EINTR) as "nothing
// ready", so a loop gets back to its stop flag instead of throwing.
void Poll(std::vector<zmq::pollitem_t>& items, std::chrono::milliseconds timeout);

// Checks the form of a ZeroMQ endpoint: tcp://HOST:PORT (HOST and PORT may
// be * when binding), ipc://PATH or inproc://NAME. Throws fedsgd::Error
// naming it.
void CheckEndpoint(const std::string& endpoint, bool for_bind);

// Device ids: 1-64 characters of A-Z a-z 0-9 . _ -
bool ValidDeviceId(std::string_view id);

}  // namespace fedsgd::wire
