// The wire protocol between daemons and the coordinator (docs/protocol.md).
//
// A message is multipart: frame 0 is a small CBOR map (nlohmann::json) with
// "v" (protocol version) and "kind" plus the message's fields; then zero or
// one tensor frame of raw little-endian float32, never re-encoded as text.
// On a ROUTER socket the peer's routing-id frame comes first; DEALERs send no
// empty delimiter frame.
//
// Decode() validates everything before anything is used: frame count, CBOR,
// version, kind, every field's presence, type and range, the tensor's size
// against the expected parameter count, and that every float is finite. A
// bad message yields a DecodeError with a RejectReason (whose names are
// stable: metrics and logs use them), never an exception or a crash.
//
// Thread-safety: the functions are reentrant; a zmq socket passed to Send /
// ReceiveFrames must be used by one thread only, as always with ZeroMQ.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>
#include <zmq.hpp>

namespace fedsgd::wire {

inline constexpr int kProtocolVersion = 1;

// Why a message was refused. The first group is found by Decode, the second
// by the coordinator's checks of a well-formed message.
enum class RejectReason {
  kMalformed,   // not CBOR, not a map, wrong frame count
  kBadVersion,  // "v" is not kProtocolVersion
  kUnknownKind,
  kBadField,       // a field missing, mistyped or out of range
  kWrongSize,      // tensor size differs from the model's parameter count
  kNonFinite,      // NaN or Inf in the tensor or a number field
  kOversize,       // larger than the limit
  kUnknownDevice,  // the device has not joined
  kStaleRound,     // for an older round or model version
  kRoundClosed,    // no round open
  kDuplicate,      // a second update for the same round
  kNotSelected,    // the device is not a participant of the round
};
std::string_view ToString(RejectReason reason);
std::optional<RejectReason> ParseRejectReason(std::string_view name);
inline constexpr int kRejectReasonCount = 12;

struct Join {
  std::string device;
  int threads = 1;
  std::uint64_t samples = 0;
  std::string software;
};

struct Welcome {
  std::string device;
  std::string run_id;
  nlohmann::json plan = nlohmann::json::object();
  std::uint64_t model_version = 0;
  std::uint64_t round = 0;  // the round open now, 0 = none
  std::string publish_endpoint;
  int heartbeat_ms = 1000;
  std::vector<float> params;
};

struct Heartbeat {
  std::string device;
  std::string state = "idle";  // idle | training | sending
  std::uint64_t round = 0;
  double samples_per_second = 0;
  double loss = 0;
  double progress = 0;  // 0..1 of the current round's training
};

struct FetchModel {
  std::string device;
};

struct Model {
  std::string run_id;
  std::uint64_t model_version = 0;
  std::uint64_t round = 0;  // the round open for training, 0 = none
  bool final = false;       // the run is finished
  std::vector<float> params;
};

struct Update {
  std::string device;
  std::uint64_t round = 0;
  std::uint64_t model_version = 0;
  std::uint64_t samples = 0;
  double loss = 0;
  std::string kind = "delta";  // delta | gradient
  double train_seconds = 0;
  std::vector<float> payload;
};

struct Ack {
  std::uint64_t round = 0;  // the round open now at the coordinator
  std::uint64_t model_version = 0;
  std::string detail;
};

struct Reject {
  RejectReason reason = RejectReason::kMalformed;
  std::string detail;
};

using Message = std::variant<Join, Welcome, Heartbeat, FetchModel, Model, Update, Ack, Reject>;

// "join", "welcome", ... for logs.
std::string_view KindName(const Message& message);

// The frames of a message. The tensor vector is moved into its frame without
// a copy (on little-endian hosts).
std::vector<zmq::message_t> Encode(Message message);

struct Limits {
  std::size_t expected_params = 0;    // 0: any size up to max_params
  std::size_t max_params = 1u << 26;  // 256 MiB of floats
};

struct DecodeError {
  RejectReason reason = RejectReason::kMalformed;
  std::string detail;
};

struct DecodeResult {
  std::variant<Message, DecodeError> value;
  bool ok() const { return value.index() == 0; }
  Message& message() { return std::get<Message>(value); }
  const DecodeError& error() const { return std::get<DecodeError>(value); }
};

// Validates and decodes frames (without any routing-id frame).
DecodeResult Decode(std::vector<zmq::message_t>& frames, const Limits& limits = {});

// Sends a message, preceded by routing_id when given (ROUTER sockets).
// Returns false when the socket would block (or the peer is unroutable with
// ZMQ_ROUTER_MANDATORY); throws zmq::error_t only for real socket errors.
bool Send(zmq::socket_t& socket, Message message, const zmq::message_t* routing_id = nullptr);

// Receives all frames of one multipart message; nullopt when none is ready
// (with recv_flags::dontwait).
std::optional<std::vector<zmq::message_t>> ReceiveFrames(
    zmq::socket_t& socket, zmq::recv_flags flags = zmq::recv_flags::none);

// zmq::poll that treats an interruption by a signal (EINTR) as "nothing
// ready", so a loop gets back to its stop flag instead of throwing.
void Poll(std::vector<zmq::pollitem_t>& items, std::chrono::milliseconds timeout);

// Checks the form of a ZeroMQ endpoint: tcp://HOST:PORT (HOST may be * when
// binding), ipc://PATH or inproc://NAME. Throws fedsgd::Error naming it.
void CheckEndpoint(const std::string& endpoint, bool for_bind);

// Device ids: 1-64 characters of A-Z a-z 0-9 . _ -
bool ValidDeviceId(std::string_view id);

}  // namespace fedsgd::wire
