// The allocation-free reader of plain Update headers (see update_header.h).
// CBOR (RFC 8949) items as nlohmann's to_cbor writes them for these fields:
// a map of at most 23 pairs, text keys and values of at most 255 bytes,
// unsigned integers, float32 and float64.
#include "update_header.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace fedsgd::wire::update_header {
namespace {

// A cursor over the header's bytes; every read checks the bounds.
struct Cursor {
  const unsigned char* p;
  const unsigned char* end;

  bool Byte(unsigned char& b) {
    if (p == end) return false;
    b = *p++;
    return true;
  }
  // Big-endian argument of `bytes` bytes.
  bool BigEndian(int bytes, std::uint64_t& v) {
    if (end - p < bytes) return false;
    v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | *p++;
    return true;
  }
  // The argument of an initial byte whose additional info is `info`
  // (0..23 direct, 24..27: 1, 2, 4, 8 bytes follow).
  bool Argument(unsigned char info, std::uint64_t& v) {
    if (info < 24) {
      v = info;
      return true;
    }
    if (info > 27) return false;  // reserved or indefinite length
    return BigEndian(1 << (info - 24), v);
  }
  bool Text(std::string_view& s) {
    unsigned char b;
    std::uint64_t len;
    if (!Byte(b) || (b >> 5) != 3 || !Argument(b & 31, len) || len > 255) return false;
    if (static_cast<std::uint64_t>(end - p) < len) return false;
    s = {reinterpret_cast<const char*>(p), static_cast<std::size_t>(len)};
    p += len;
    return true;
  }
};

// One scalar value: an unsigned integer or a float.
struct Scalar {
  bool is_unsigned = false;
  std::uint64_t u = 0;
  double d = 0;
};

bool ReadScalar(Cursor& c, Scalar& v) {
  unsigned char b;
  if (!c.Byte(b)) return false;
  if ((b >> 5) == 0) {
    v.is_unsigned = true;
    return c.Argument(b & 31, v.u);
  }
  std::uint64_t bits;
  if (b == 0xfa) {
    if (!c.BigEndian(4, bits)) return false;
    v.d = std::bit_cast<float>(static_cast<std::uint32_t>(bits));
    return true;
  }
  if (b == 0xfb) {
    if (!c.BigEndian(8, bits)) return false;
    v.d = std::bit_cast<double>(bits);
    return true;
  }
  return false;  // anything else: the general path
}

// A number field as Reader::Double reads it: finite and in lo..hi.
bool Number(const Scalar& v, double lo, double& out) {
  out = v.is_unsigned ? static_cast<double>(v.u) : v.d;
  return std::isfinite(out) && out >= lo && out <= 1.7976931348623157e308;
}

enum Field : int {
  kV,
  kKind,
  kDevice,
  kRound,
  kModelVersion,
  kSamples,
  kLoss,
  kUpdateKind,
  kTrainSeconds,
  kEvalLoss,
  kEvalAccuracy,
  kEvalSamples,
  kFieldCount
};
constexpr std::string_view kNames[kFieldCount] = {
    "v",    "kind",        "device",        "round",     "model_version", "samples",
    "loss", "update_kind", "train_seconds", "eval_loss", "eval_accuracy", "eval_samples"};
constexpr bool kText[kFieldCount] = {false, true, true,  false, false, false,
                                     false, true, false, false, false, false};

}  // namespace

bool ReadPlainUpdate(std::span<const unsigned char> header, Update& out) {
  Cursor c{header.data(), header.data() + header.size()};
  unsigned char b;
  if (!c.Byte(b) || (b >> 5) != 5 || (b & 31) > 23) return false;
  const int pairs = b & 31;
  std::string_view text[kFieldCount];
  Scalar scalar[kFieldCount];
  bool seen[kFieldCount] = {};
  for (int i = 0; i < pairs; ++i) {
    std::string_view key;
    if (!c.Text(key)) return false;
    int f = 0;
    while (f < kFieldCount && kNames[f] != key) ++f;
    if (f == kFieldCount || seen[f]) return false;  // unknown or repeated key
    seen[f] = true;
    if (kText[f] ? !c.Text(text[f]) : !ReadScalar(c, scalar[f])) return false;
  }
  if (c.p != c.end) return false;
  for (int f = 0; f < kEvalLoss; ++f) {
    if (!seen[f]) return false;
  }
  const bool evaluation = seen[kEvalLoss];
  if (seen[kEvalAccuracy] != evaluation || seen[kEvalSamples] != evaluation) return false;

  if (!scalar[kV].is_unsigned || scalar[kV].u != kProtocolVersion) return false;
  if (text[kKind] != "update") return false;
  if (!ValidDeviceId(text[kDevice])) return false;
  if (text[kUpdateKind] != "delta" && text[kUpdateKind] != "gradient") return false;
  for (const Field f : {kRound, kModelVersion, kSamples}) {
    if (!scalar[f].is_unsigned) return false;
  }
  if (scalar[kSamples].u < 1) return false;
  double loss, train_seconds;
  if (!Number(scalar[kLoss], -1.7976931348623157e308, loss) ||
      !Number(scalar[kTrainSeconds], 0, train_seconds)) {
    return false;
  }
  if (evaluation) {
    HeldOutEvaluation e;
    if (!Number(scalar[kEvalLoss], 0, e.loss) || !Number(scalar[kEvalAccuracy], 0, e.accuracy) ||
        e.accuracy > 1 || !scalar[kEvalSamples].is_unsigned || scalar[kEvalSamples].u < 1 ||
        scalar[kEvalSamples].u > kMaxHeldOutSamples) {
      return false;
    }
    e.samples = scalar[kEvalSamples].u;
    out.evaluation = e;
  } else {
    out.evaluation.reset();
  }
  out.device.assign(text[kDevice]);
  out.round = scalar[kRound].u;
  out.model_version = scalar[kModelVersion].u;
  out.samples = scalar[kSamples].u;
  out.loss = loss;
  out.kind.assign(text[kUpdateKind]);
  out.train_seconds = train_seconds;
  return true;
}

}  // namespace fedsgd::wire::update_header
