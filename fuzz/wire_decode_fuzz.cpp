// Fuzz target: wire::Decode on multipart messages (docs/protocol.md).
//
// The input becomes 1-3 frames: byte 0 picks the count (1 + b % 3), then one
// little-endian 16-bit length per frame but the last, which takes the rest.
// Properties checked, each an abort when broken:
//   - Decode never throws and leaves the frames unchanged;
//   - a message accepted without limits is accepted again with
//     Limits{expected_params = its tensor length} and refused as wrong_size
//     with any other expected length;
//   - an accepted message re-encoded with wire::Encode decodes to the same
//     message, and re-encodes to the same bytes (an update that arrived
//     compressed, fp16 / int8 / topk, or a Welcome / Model in fp16, is
//     re-encoded from its decoded float32 values);
//   - an update is accepted with Limits{update_encoding} naming its
//     encoding and refused as bad_field with any other; the same for a
//     Model and Limits{model_encoding}.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "fedsgd/wire.h"

namespace {

using namespace fedsgd::wire;

[[noreturn]] void Broken(const char* property) {
  std::fprintf(stderr, "wire_decode_fuzz: property broken: %s\n", property);
  std::abort();
}

std::vector<zmq::message_t> Split(const std::uint8_t* data, std::size_t size) {
  std::vector<zmq::message_t> frames;
  if (size == 0) return frames;
  const std::size_t count = 1 + data[0] % 3;
  ++data, --size;
  for (std::size_t i = 0; i + 1 < count && size >= 2; ++i) {
    const std::size_t want = data[0] | std::size_t{data[1]} << 8;
    data += 2, size -= 2;
    const std::size_t length = want < size ? want : size;
    frames.emplace_back(data, length);
    data += length, size -= length;
  }
  frames.emplace_back(data, size);
  return frames;
}

std::vector<std::string> Bytes(const std::vector<zmq::message_t>& frames) {
  std::vector<std::string> out;
  for (const auto& f : frames) out.emplace_back(static_cast<const char*>(f.data()), f.size());
  return out;
}

// Plans are compared as CBOR: a NaN in a plan is a legal value that
// json::operator== never finds equal to itself.
bool SamePlan(const nlohmann::json& a, const nlohmann::json& b) {
  return nlohmann::json::to_cbor(a) == nlohmann::json::to_cbor(b);
}

bool Same(const Join& a, const Join& b) {
  return std::tie(a.device, a.threads, a.samples, a.software) ==
         std::tie(b.device, b.threads, b.samples, b.software);
}
bool Same(const Welcome& a, const Welcome& b) {
  return std::tie(a.device, a.run_id, a.model_version, a.round, a.publish_endpoint,
                  a.heartbeat_ms) == std::tie(b.device, b.run_id, b.model_version, b.round,
                                              b.publish_endpoint, b.heartbeat_ms) &&
         SamePlan(a.plan, b.plan) && a.params == b.params;
}
bool Same(const Heartbeat& a, const Heartbeat& b) {
  return std::tie(a.device, a.state, a.round, a.samples_per_second, a.loss, a.progress) ==
         std::tie(b.device, b.state, b.round, b.samples_per_second, b.loss, b.progress);
}
bool Same(const FetchModel& a, const FetchModel& b) { return a.device == b.device; }
bool Same(const Model& a, const Model& b) {
  return std::tie(a.run_id, a.model_version, a.round, a.final, a.params) ==
         std::tie(b.run_id, b.model_version, b.round, b.final, b.params);
}
bool Same(const Update& a, const Update& b) {
  return std::tie(a.device, a.round, a.model_version, a.samples, a.loss, a.kind, a.train_seconds,
                  a.payload) == std::tie(b.device, b.round, b.model_version, b.samples, b.loss,
                                         b.kind, b.train_seconds, b.payload);
}
bool Same(const Ack& a, const Ack& b) {
  return std::tie(a.round, a.model_version, a.detail) ==
         std::tie(b.round, b.model_version, b.detail);
}
bool Same(const Reject& a, const Reject& b) { return a.reason == b.reason && a.detail == b.detail; }

bool Same(const Message& a, const Message& b) {
  if (a.index() != b.index()) return false;
  return std::visit([&](const auto& x) { return Same(x, std::get<std::decay_t<decltype(x)>>(b)); },
                    a);
}

std::size_t TensorLength(const Message& m) {
  if (const auto* w = std::get_if<Welcome>(&m)) return w->params.size();
  if (const auto* o = std::get_if<Model>(&m)) return o->params.size();
  if (const auto* u = std::get_if<Update>(&m)) return u->payload.size();
  return 0;
}

void CheckLimits(std::vector<zmq::message_t>& frames, const Message& message) {
  const std::size_t length = TensorLength(message);
  if (length == 0) return;  // expected_params 0 means "any"
  if (!Decode(frames, Limits{.expected_params = length}).ok()) {
    Broken("refused with expected_params equal to its tensor length");
  }
  for (const std::size_t other : {length - 1, length + 1}) {
    if (other == 0) continue;
    DecodeResult r = Decode(frames, Limits{.expected_params = other});
    if (r.ok() || r.error().reason != RejectReason::kWrongSize) {
      Broken("not refused as wrong_size with another expected_params");
    }
  }
}

void CheckEncodingLimit(std::vector<zmq::message_t>& frames, const Message& message) {
  const auto* update = std::get_if<Update>(&message);
  const auto* model = std::get_if<Model>(&message);
  if (!update && !model) return;
  const TensorEncoding encoding = update ? update->encoded.encoding : model->encoded.encoding;
  for (const auto e : {TensorEncoding::kFp32, TensorEncoding::kFp16, TensorEncoding::kInt8,
                       TensorEncoding::kTopK}) {
    Limits limits;
    (update ? limits.update_encoding : limits.model_encoding) = e;
    DecodeResult r = Decode(frames, limits);
    if (e == encoding ? !r.ok() : r.ok() || r.error().reason != RejectReason::kBadField) {
      Broken("update_encoding / model_encoding not enforced as bad_field");
    }
  }
}

void CheckRoundTrip(Message message) {
  // Decode expands a compressed update to float32: that is what re-encodes.
  if (auto* update = std::get_if<Update>(&message)) update->encoded = {};
  if (auto* model = std::get_if<Model>(&message)) model->encoded = {};
  if (auto* welcome = std::get_if<Welcome>(&message)) welcome->encoded = {};
  std::vector<zmq::message_t> encoded = Encode(message);
  const std::vector<std::string> encoded_bytes = Bytes(encoded);
  DecodeResult again = Decode(encoded);
  if (!again.ok()) {
    std::fprintf(stderr, "re-encoded %s refused: %s\n", std::string(KindName(message)).c_str(),
                 again.error().detail.c_str());
    Broken("a decoded message, re-encoded, is refused");
  }
  if (!Same(message, again.message())) Broken("a re-encoded message decodes differently");
  if (Bytes(Encode(again.message())) != encoded_bytes) Broken("encoding is not stable");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<zmq::message_t> frames = Split(data, size);
  const std::vector<std::string> before = Bytes(frames);
  DecodeResult result = Decode(frames);
  if (Bytes(frames) != before) Broken("Decode changed its frames");
  // A small max_params reaches the oversize path with short inputs.
  const DecodeResult small = Decode(frames, Limits{.expected_params = 0, .max_params = 2});
  if (small.ok() && TensorLength(std::get<Message>(small.value)) > 2) {
    Broken("a tensor above max_params accepted");
  }
  if (!result.ok()) return 0;
  CheckLimits(frames, result.message());
  CheckEncodingLimit(frames, result.message());
  CheckRoundTrip(result.message());
  return 0;
}
