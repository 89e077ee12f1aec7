// fuzz_seed_writer DIR: writes the binary seed files of fuzz/corpus/ into
// DIR/<target>/ (run by hand when the wire format or a loader changes:
//   build-fuzz/fuzz/fuzz_seed_writer fuzz/corpus
// and commit the result). The text seeds (plan and config JSON, CSV) are
// written by hand and not touched here.
//
// Every seed is laid out as its fuzz target reads input (see the header of
// each *_fuzz.cpp): the real messages come from wire::Encode, the IDX files
// are a 3-image 2x2 data set, plain and gzip-wrapped.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fedsgd/broadcast_codec.h"
#include "fedsgd/plan.h"
#include "fedsgd/wire.h"
#include "gzip_bytes.h"

namespace {

namespace fs = std::filesystem;
using namespace fedsgd::wire;

void WriteFile(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
  std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
}

std::string Le16(std::size_t v) {
  return {static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff)};
}

// wire_decode_fuzz's layout: frame count - 1, then the header's length.
std::string WireSeed(Message message) {
  std::vector<zmq::message_t> frames = Encode(std::move(message));
  std::string out(1, static_cast<char>(frames.size() - 1));
  for (std::size_t i = 0; i < frames.size(); ++i) {
    if (i + 1 < frames.size()) out += Le16(frames[i].size());
    out.append(static_cast<const char*>(frames[i].data()), frames[i].size());
  }
  return out;
}

std::string Idx(std::uint32_t magic, const std::vector<std::uint32_t>& dims,
                const std::string& data) {
  std::string out;
  auto be32 = [&](std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
  };
  be32(magic);
  for (const std::uint32_t d : dims) be32(d);
  return out + data;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seed_writer CORPUS_DIR\n");
    return 2;
  }
  const fs::path root = argv[1];

  const fedsgd::Plan plan;
  const fs::path wire = root / "wire_decode";
  WriteFile(wire / "join", WireSeed(Join{"board-01", 4, 6000, "fedsgd 0.1.0"}));
  WriteFile(wire / "welcome", WireSeed(Welcome{"board-01",
                                               "run-1",
                                               plan.ToJson(),
                                               3,
                                               2,
                                               "tcp://10.0.0.2:7071",
                                               1000,
                                               {0.5f, -1.25f, 0}}));
  WriteFile(wire / "heartbeat", WireSeed(Heartbeat{"board-01", "training", 2, 1500.5, 0.75, 0.5}));
  WriteFile(wire / "fetch_model", WireSeed(FetchModel{"board-01"}));
  WriteFile(wire / "model", WireSeed(Model{"run-1", 3, 2, false, {1, 2, 3}}));
  WriteFile(wire / "update",
            WireSeed(Update{
                "board-01", 2, 3, 600, 0.5, "delta", 1.5, {0.25f, -0.5f, 1e-3f}, std::nullopt}));
  // One update per compressed encoding (update_codec.h), 300 values: two
  // int8 blocks, three topk entries (a count, 3 values, 3 varint gaps).
  std::vector<float> dense(300, 0.0f);
  for (std::size_t i = 0; i < dense.size(); ++i)
    dense[i] = static_cast<float>(i % 7) * 0.01f - 0.03f;
  std::mt19937_64 rng(1);
  for (const std::string codec : {"fp16", "int8", "topk:0.01"}) {
    Update u{"board-01", 2, 3, 600, 0.5, "delta", 1.5, {}, std::nullopt};
    u.encoded = EncodeTensor(UpdateCodec::Parse(codec), dense, rng);
    WriteFile(wire / ("update_" + std::string(ToString(u.encoded.encoding))), WireSeed(u));
  }
  // Weights broadcast in fp16 (broadcast_codec.h).
  fedsgd::Plan fp16_plan;
  fp16_plan.broadcast_codec = "fp16";
  WriteFile(wire / "model_fp16",
            WireSeed(Model{"run-1", 3, 2, false, {}, EncodeWeights(TensorEncoding::kFp16, dense)}));
  WriteFile(wire / "welcome_fp16", WireSeed(Welcome{"board-01",
                                                    "run-1",
                                                    fp16_plan.ToJson(),
                                                    3,
                                                    2,
                                                    "tcp://10.0.0.2:7071",
                                                    1000,
                                                    {},
                                                    EncodeWeights(TensorEncoding::kFp16, dense)}));
  WriteFile(wire / "ack", WireSeed(Ack{2, 3, "counted"}));
  WriteFile(wire / "reject", WireSeed(Reject{RejectReason::kStaleRound, "round 1 is closed"}));

  const std::vector<std::uint8_t> cbor = nlohmann::json::to_cbor(plan.ToJson());
  WriteFile(root / "plan_json" / "default.cbor", std::string(cbor.begin(), cbor.end()));

  // Three 2x2 images, labels 0, 1, 2; idx_loader_fuzz's layout: the gzip
  // bits, the images part's length, images, labels.
  const std::string images = Idx(0x0803, {3, 2, 2},
                                 std::string("\x00\x40\x80\xff"
                                             "\x10\x20\x30\x40"
                                             "\xff\xfe\xfd\xfc",
                                             12));
  const std::string labels = Idx(0x0801, {3}, std::string("\x00\x01\x02", 3));
  WriteFile(root / "idx_loader" / "plain",
            std::string(1, '\0') + Le16(images.size()) + images + labels);
  WriteFile(root / "idx_loader" / "gzip",
            std::string(1, '\3') + Le16(images.size()) + images + labels);
  // Already gzip-wrapped (the fuzzer then mutates the compressed stream).
  const std::string images_gz = fedsgd::fuzz::GzipBytes(images);
  WriteFile(root / "idx_loader" / "gzip_stream", std::string(1, '\0') + Le16(images_gz.size()) +
                                                     images_gz + fedsgd::fuzz::GzipBytes(labels));
  return 0;
}
