// Reading a peer's CBOR header safely: a SAX probe that bounds nesting
// depth and declared lengths and checks UTF-8 before the real parse, and a
// field Reader that keeps the first problem. Private to wire.cpp (Decode);
// split from it so that wire.cpp holds the messages and this file the
// header's defences.
//
// Thread-safety: stateless functions; a HeaderProbe or Reader is used by one
// call of Decode. Memory: nothing beyond the strings returned. Failure: no
// exceptions; problems are returned as text for a DecodeError.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fedsgd/wire.h"

namespace fedsgd::wire::header_reader {

using nlohmann::json;

constexpr std::size_t kMaxHeaderBytes = 64 * 1024;
constexpr std::size_t kMaxString = 256;
constexpr std::size_t kMaxDeviceId = 64;
// nlohmann's CBOR reader recurses once per nesting level: 64 KiB of nested
// arrays overflows a 4 MiB stack. Our headers are at most a few levels deep
// (the plan's map of maps).
constexpr std::size_t kMaxDepth = 32;

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
// nlohmann's CBOR reader does not check, and json::dump throws on invalid
// UTF-8, so a peer's bad string would surface later as an exception in the
// coordinator's HTTP API.
inline bool ValidUtf8(std::string_view s) {
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
inline std::string Printable(std::string_view s, std::size_t max_len = 32) {
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

}  // namespace fedsgd::wire::header_reader
