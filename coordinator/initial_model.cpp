#include "initial_model.h"

#include <openssl/sha.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>

#include "checkpoint_store.h"
#include "fedsgd/error.h"
#include "fedsgd/npy.h"
#include "fedsgd/plan.h"

namespace fedsgd {
namespace {

constexpr std::string_view kNpyMagic = "\x93NUMPY";
constexpr std::string_view kSqliteMagic{"SQLite format 3\0", 16};

std::string Head(const std::string& path, std::size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(n, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(n));
  bytes.resize(static_cast<std::size_t>(in.gcount()));
  return bytes;
}

std::optional<std::uint64_t> Number(std::string_view text) {
  std::uint64_t n = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size()) {
    return std::nullopt;
  }
  return n;
}

// A source without its :RUN:ROUND / :ROUND suffix, and those numbers.
struct DatabaseSource {
  std::string path;
  std::optional<std::uint64_t> run;
  std::optional<std::uint64_t> round;
};

DatabaseSource SplitSource(const std::string& source) {
  DatabaseSource s{source, std::nullopt, std::nullopt};
  if (std::filesystem::exists(source)) return s;
  const auto last = source.rfind(':');
  if (last == std::string::npos) return s;
  const auto round = Number(std::string_view(source).substr(last + 1));
  if (!round) return s;
  s.path = source.substr(0, last);
  s.round = round;
  if (std::filesystem::exists(s.path)) return s;
  const auto first = s.path.rfind(':');
  if (first == std::string::npos) return s;
  const auto run = Number(std::string_view(s.path).substr(first + 1));
  if (!run) return s;
  s.path = s.path.substr(0, first);
  s.run = run;
  return s;
}

Architecture WithoutDropout(Architecture a) {
  a.dropout = 0;
  return a;
}

std::vector<float> FromDatabase(const DatabaseSource& s, const std::string& source,
                                const Architecture& arch) {
  auto store = CheckpointStore::Open(s.path, /*read_only=*/true);
  const std::int64_t run = s.run ? static_cast<std::int64_t>(*s.run) : store->LatestRunId();
  const auto plan_json = store->RunPlan(run);
  if (!plan_json) {
    throw Error("--initial-model " + source + ": " + s.path + " has no run " + std::to_string(run));
  }
  Plan plan;
  try {
    plan = Plan::FromJson(*plan_json);
  } catch (const Error& e) {
    throw Error("--initial-model " + source + ": run " + std::to_string(run) + " of " + s.path +
                " has a plan this version does not read: " + e.what());
  }
  if (WithoutDropout(plan.architecture()) != WithoutDropout(arch)) {
    throw Error("--initial-model " + source + ": run " + std::to_string(run) + " of " + s.path +
                " trains model " + plan.model + ", not this plan's " + arch.ToString());
  }
  const std::uint64_t round = s.round ? *s.round : store->LatestRound(run);
  auto params = store->LoadParams(run, round);
  if (!params) {
    throw Error("--initial-model " + source + ": run " + std::to_string(run) + " of " + s.path +
                " has no round " + std::to_string(round) + " (its newest is " +
                std::to_string(store->LatestRound(run)) + ")");
  }
  return std::move(*params);
}

}  // namespace

std::string Sha256Hex(std::span<const float> values) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(values.data()), values.size_bytes(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : digest) {
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  return hex;
}

InitialModel LoadInitialModel(const std::string& source, const Architecture& arch) {
  if (source.empty()) throw Error("--initial-model: the source is empty");
  const DatabaseSource s = SplitSource(source);
  if (!std::filesystem::is_regular_file(s.path)) {
    throw Error("--initial-model " + source + ": no such file (a .npy file, or a database as " +
                "DB, DB:ROUND or DB:RUN:ROUND)");
  }
  const std::string head = Head(s.path, kSqliteMagic.size());
  InitialModel m;
  m.source = source;
  if (head.starts_with(kSqliteMagic)) {
    m.params = FromDatabase(s, source, arch);
  } else if (head.starts_with(kNpyMagic)) {
    if (s.path != source) {
      throw Error("--initial-model " + source + ": a .npy file has no rounds (" + s.path + ")");
    }
    std::ifstream in(s.path, std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), {}};
    if (!in.good() && !in.eof()) throw Error("--initial-model " + source + ": cannot read it");
    m.params = DecodeNpy(bytes, "--initial-model " + source);
  } else {
    throw Error("--initial-model " + source +
                ": neither a .npy file nor an SQLite database (by its first bytes)");
  }
  if (m.params.size() != arch.ParameterCount()) {
    throw Error("--initial-model " + source + ": " + std::to_string(m.params.size()) +
                " parameters, but model " + arch.ToString() + " has " +
                std::to_string(arch.ParameterCount()));
  }
  for (std::size_t i = 0; i < m.params.size(); ++i) {
    if (!std::isfinite(m.params[i])) {
      throw Error("--initial-model " + source + ": parameter " + std::to_string(i) +
                  " is not finite");
    }
  }
  m.sha256 = Sha256Hex(m.params);
  return m;
}

}  // namespace fedsgd
