// Data loaders (see dataset.h): IDX and CSV, plain and gzip, written as small
// fixtures at test time; every malformed input gives an Error naming the file
// (and for CSV the line and column); standardisation; real Fashion-MNIST
// when it is installed.
#include "fedsgd/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "fedsgd/dataset_view.h"
#include "fedsgd/error.h"
#include "fedsgd/shard.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fedsgd_dataset_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes, bool gzip = false) {
    const std::string path = (dir_ / name).string();
    if (gzip) {
      gzFile f = gzopen(path.c_str(), "wb");
      EXPECT_NE(f, nullptr);
      EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
                static_cast<int>(bytes.size()));
      EXPECT_EQ(gzclose(f), Z_OK);
    } else {
      std::ofstream(path, std::ios::binary) << bytes;
    }
    return path;
  }
  std::string Read(const std::string& name) {
    std::ifstream in(dir_ / name, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  static std::string Be32(std::uint32_t v) {
    return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
            static_cast<char>(v)};
  }
  // n images of 2x3 pixels (pixel k of image i = 10*i + k) and labels i % 3.
  static std::string Images(std::uint32_t n) {
    std::string s = Be32(0x00000803) + Be32(n) + Be32(2) + Be32(3);
    for (std::uint32_t i = 0; i < n; ++i) {
      for (std::uint32_t k = 0; k < 6; ++k) s += static_cast<char>(10 * i + k);
    }
    return s;
  }
  static std::string Labels(std::uint32_t n) {
    std::string s = Be32(0x00000801) + Be32(n);
    for (std::uint32_t i = 0; i < n; ++i) s += static_cast<char>(i % 3);
    return s;
  }
  // The message of the Error f throws, or "" (a test failure) if it throws none.
  static std::string ErrorOf(const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "no fedsgd::Error thrown";
    return "";
  }

  fs::path dir_;
};

// EXPECT that `message` contains `part`, showing both when not.
#define EXPECT_HAS(message, part) EXPECT_NE((message).find(part), std::string::npos) << (message)

TEST_F(DatasetTest, ReadsIdxPlainAndGzip) {
  for (bool gz : {false, true}) {
    const std::string ext = gz ? ".gz" : "";
    const Dataset d = LoadIdx(Write("a-images-idx3-ubyte" + ext, Images(4), gz),
                              Write("a-labels-idx1-ubyte" + ext, Labels(4), gz));
    ASSERT_EQ(d.size(), 4u);
    EXPECT_EQ(d.num_features, 6);
    EXPECT_EQ(d.num_classes, 3);
    EXPECT_TRUE(d.byte_features());  // pixels stay bytes: a quarter of the memory
    EXPECT_TRUE(d.x.empty());
    ASSERT_EQ(d.bytes.size(), 24u);
    EXPECT_EQ(d.bytes[2 * 6 + 5], 25);
    float pixels[6];
    d.CopyFeatures(2, pixels);
    EXPECT_FLOAT_EQ(pixels[5], 25.0f / 255.0f);
    d.CopyFeatures(0, pixels);
    EXPECT_EQ(pixels[0], 0.0f);
    EXPECT_EQ(d.y[3], 0.0f);
    EXPECT_EQ(d.y[2], 2.0f);
  }
}

TEST_F(DatasetTest, ScalesPixelsToTheUnitInterval) {
  const std::string images =
      Be32(0x00000803) + Be32(1) + Be32(1) + Be32(3) + std::string("\x00\x80\xff", 3);
  const Dataset d = LoadIdx(Write("i", images), Write("l", Be32(0x801) + Be32(1) + "\x07"));
  float pixels[3];
  d.CopyFeatures(0, pixels);
  EXPECT_EQ(pixels[0], 0.0f);
  EXPECT_FLOAT_EQ(pixels[1], 128.0f / 255.0f);
  EXPECT_EQ(pixels[2], 1.0f);
  EXPECT_EQ(d.num_classes, 8);  // the largest label + 1
}

TEST_F(DatasetTest, FindsTheStandardFilesInADirectory) {
  Write("train-images-idx3-ubyte.gz", Images(5), true);
  Write("train-labels-idx1-ubyte.gz", Labels(5), true);
  Write("t10k-images-idx3-ubyte", Images(2));
  Write("t10k-labels-idx1-ubyte", Labels(2));
  EXPECT_EQ(LoadDataset(dir_.string(), Split::kTrain).size(), 5u);
  EXPECT_EQ(LoadDataset(dir_.string(), Split::kTest).size(), 2u);
  // An images file: the labels file is found by name.
  EXPECT_EQ(LoadDataset((dir_ / "t10k-images-idx3-ubyte").string(), Split::kTrain).size(), 2u);
  EXPECT_EQ(LoadDataset((dir_ / "train-images-idx3-ubyte.gz").string(), Split::kTrain).size(), 5u);
}

TEST_F(DatasetTest, DirectoryAndImagesFileErrors) {
  Write("train-images-idx3-ubyte", Images(5));
  EXPECT_HAS(ErrorOf([&] { LoadDataset(dir_.string(), Split::kTrain); }),
             "train-labels-idx1-ubyte.gz");
  EXPECT_HAS(ErrorOf([&] { LoadDataset(dir_.string(), Split::kTest); }), "t10k-images-idx3-ubyte");
  EXPECT_HAS(
      ErrorOf([&] { LoadDataset((dir_ / "train-images-idx3-ubyte").string(), Split::kTrain); }),
      "labels file " + (dir_ / "train-labels-idx1-ubyte").string() + " is missing");
  EXPECT_HAS(ErrorOf([&] { LoadDataset((dir_ / "nothing").string(), Split::kTrain); }),
             "nothing: no such file or directory");
}

TEST_F(DatasetTest, IdxHeaderErrorsNameTheFile) {
  const std::string labels = Write("l", Labels(4));
  const std::string images = Write("i", Images(4));
  EXPECT_HAS(
      ErrorOf([&] { LoadIdx(Write("bad-magic", Be32(0x0903) + Images(4).substr(4)), labels); }),
      "bad-magic: not an IDX file of unsigned bytes (magic number 0x00000903");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("text", "hello, world, this is text"), labels); }),
             "text: not an IDX file");
  // Labels stored as 32-bit integers (type 0x0c) could exceed 255: refused.
  EXPECT_HAS(
      ErrorOf([&] { LoadIdx(images, Write("int-labels", Be32(0x0c01) + Be32(1) + Be32(300))); }),
      "int-labels: not an IDX file of unsigned bytes");
  // The files swapped: dimensions are checked.
  EXPECT_HAS(ErrorOf([&] { LoadIdx(labels, images); }), "l: an IDX file with 1 dimensions");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(images, images); }), "i: an IDX file with 3 dimensions");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("empty", ""), labels); }), "empty: too short");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(images, Write("empty-labels", "")); }),
             "empty-labels: too short");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("none", Images(0)), Write("l0", Labels(0))); }),
             "none: holds no images");
  // 2^31 * 2^31 * 4 wraps a 64-bit product to 0, which must not match an
  // empty payload.
  EXPECT_HAS(ErrorOf([&] {
               LoadIdx(Write("huge", Be32(0x0803) + Be32(0x80000000) + Be32(0x80000000) + Be32(4)),
                       labels);
             }),
             "huge: the IDX header promises more bytes");
}

TEST_F(DatasetTest, IdxSizeErrorsNameTheFile) {
  const std::string labels = Write("l", Labels(4));
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("short", Images(4).substr(0, 30)), labels); }),
             "short: the IDX header promises 24 bytes of data but 14 follow");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("long", Images(4) + "x"), labels); }),
             "long: the IDX header promises 24 bytes of data but 25 follow");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("five", Images(5)), labels); }),
             "five holds 5 images but " + labels + " holds 4 labels");
  EXPECT_HAS(ErrorOf([&] { LoadIdx((dir_ / "missing").string(), labels); }),
             "missing: no such file");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("i", Images(4)), (dir_ / "gone").string()); }),
             "gone: no such file");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(dir_.string(), labels); }), "is a directory");
}

TEST_F(DatasetTest, TruncatedOrCorruptGzipIsAnError) {
  Write("whole.gz", Images(200), true);
  const std::string gz = Read("whole.gz");
  const std::string labels = Write("l", Labels(200));
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("half.gz", gz.substr(0, gz.size() / 2)), labels); }),
             "half.gz: truncated or corrupt gzip data");
  // Without its 8-byte trailer (CRC and length) the data is all there, but
  // the stream is still incomplete.
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("notail.gz", gz.substr(0, gz.size() - 8)), labels); }),
             "notail.gz: truncated or corrupt gzip data");
  std::string flipped = gz;
  flipped[gz.size() / 2] = static_cast<char>(flipped[gz.size() / 2] ^ 0x55);
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("flipped.gz", flipped), labels); }), "flipped.gz: ");
  // A CSV has no sizes in a header to catch it: the gzip check alone must.
  std::string rows;
  for (int i = 0; i < 2000; ++i) rows += std::to_string(i) + "," + std::to_string(i % 7) + "\n";
  Write("rows.csv.gz", rows, true);
  const std::string csv_gz = Read("rows.csv.gz");
  EXPECT_EQ(LoadCsv((dir_ / "rows.csv.gz").string()).size(), 2000u);
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("cut.csv.gz", csv_gz.substr(0, csv_gz.size() / 2))); }),
             "cut.csv.gz: truncated or corrupt gzip data");
}

TEST_F(DatasetTest, APickedIdxLoadKeepsOnlyThoseImages) {
  for (bool gz : {false, true}) {
    const std::string ext = gz ? ".gz" : "";
    std::size_t seen_targets = 0;
    const Dataset d =
        LoadIdx(Write("p-images-idx3-ubyte" + ext, Images(10), gz),
                Write("p-labels-idx1-ubyte" + ext, Labels(10), gz), [&](const Dataset& targets) {
                  seen_targets = targets.size();
                  EXPECT_TRUE(targets.bytes.empty() && targets.x.empty());
                  EXPECT_EQ(targets.num_classes, 3);
                  return std::vector<std::size_t>{1, 4, 9};
                });
    EXPECT_EQ(seen_targets, 10u);  // the picker sees every label
    ASSERT_EQ(d.size(), 3u);
    EXPECT_EQ(d.num_classes, 3);  // of the whole file, as a Subset would keep it
    ASSERT_EQ(d.bytes.size(), 18u);
    for (std::size_t k = 0; k < 3; ++k) {
      const int image = std::vector<int>{1, 4, 9}[k];
      for (int p = 0; p < 6; ++p) EXPECT_EQ(d.bytes[k * 6 + p], 10 * image + p) << k << " " << p;
      EXPECT_EQ(d.y[k], static_cast<float>(image % 3));
    }
  }
}

TEST_F(DatasetTest, APickedIdxLoadStillChecksTheWholeFile) {
  const std::string labels = Write("l", Labels(4));
  const auto first = [](const Dataset&) { return std::vector<std::size_t>{0}; };
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("short", Images(4).substr(0, 30)), labels, first); }),
             "short: the IDX header promises 24 bytes of data but 14 follow");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("long", Images(4) + "x"), labels, first); }),
             "long: the IDX header promises 24 bytes of data but 25 follow");
  EXPECT_HAS(ErrorOf([&] { LoadIdx(Write("five", Images(5)), labels, first); }),
             "five holds 5 images but " + labels + " holds 4 labels");
  Write("whole.gz", Images(200), true);
  const std::string gz = Read("whole.gz");
  const std::string labels200 = Write("l200", Labels(200));
  EXPECT_HAS(
      ErrorOf([&] { LoadIdx(Write("notail.gz", gz.substr(0, gz.size() - 8)), labels200, first); }),
      "notail.gz: truncated or corrupt gzip data");
  // A picker that breaks its contract is a bug, not bad data.
  EXPECT_THROW(LoadIdx(Write("i", Images(4)), labels,
                       [](const Dataset&) {
                         return std::vector<std::size_t>{2, 1};
                       }),
               std::out_of_range);
  EXPECT_THROW(LoadIdx(Write("i", Images(4)), labels,
                       [](const Dataset&) { return std::vector<std::size_t>{4}; }),
               std::out_of_range);
}

TEST_F(DatasetTest, AShardLoadsAsTheSamplesCutFromTheWholeSet) {
  const std::string images = Write("s-images-idx3-ubyte.gz", Images(60), true);
  const std::string labels = Write("s-labels-idx1-ubyte.gz", Labels(60), true);
  const Dataset whole = LoadIdx(images, labels);
  for (const char* spec : {"iid", "labels:1", "dirichlet:0.5"}) {
    const ShardIndex shard = ShardIndex::Parse("2/3");
    const ShardSpec split = ShardSpec::Parse(spec);
    const Dataset cut = whole.Subset(MakeShard(whole, shard, split, 7));
    const Dataset loaded = LoadDataset(images, Split::kTrain, {}, ShardPicker(shard, split, 7));
    EXPECT_EQ(loaded.bytes, cut.bytes) << spec;
    EXPECT_EQ(loaded.y, cut.y) << spec;
    EXPECT_EQ(loaded.num_classes, cut.num_classes) << spec;
  }
  EXPECT_FALSE(ShardPicker(ShardIndex::Parse("0/1"), ShardSpec{}, 7));  // one shard: load all
  // CSV is read whole, then cut the same way.
  const std::string csv = Write("s.csv", "1,0\n2,1\n3,0\n4,1\n");
  const Dataset rows = LoadDataset(csv, Split::kTrain, {}, [](const Dataset& targets) {
    EXPECT_EQ(targets.y, (std::vector<float>{0, 1, 0, 1}));
    return std::vector<std::size_t>{1, 2};
  });
  EXPECT_EQ(rows.x, (std::vector<float>{2, 3}));
  EXPECT_EQ(rows.y, (std::vector<float>{1, 0}));
}

TEST_F(DatasetTest, ByteFeaturesConvertWhereFloatsAreNeeded) {
  Dataset d;
  d.num_features = 2;
  d.num_classes = 2;
  d.bytes = {0, 255, 51, 102, 10, 20};
  d.byte_scale = 0.5f;
  d.y = {0, 1, 0};
  float x[4], y[2];
  const std::vector<std::size_t> rows = {2, 0};
  d.Gather(rows, x, y);
  EXPECT_EQ(std::vector<float>(x, x + 4), (std::vector<float>{5, 10, 0, 127.5f}));
  EXPECT_EQ(std::vector<float>(y, y + 2), (std::vector<float>{0, 0}));
  const Dataset s = d.Subset({1});  // stays bytes
  EXPECT_EQ(s.bytes, (std::vector<std::uint8_t>{51, 102}));
  EXPECT_EQ(s.byte_scale, 0.5f);
  EXPECT_TRUE(s.x.empty());
  const DatasetView view(d, rows);
  EXPECT_EQ(view.size(), 2u);
  EXPECT_EQ(view.target(0), 0.0f);
  float vx[2], vy[1];
  view.Copy(1, 1, vx, vy);  // the view's sample 1 is row 0
  EXPECT_EQ(std::vector<float>(vx, vx + 2), (std::vector<float>{0, 127.5f}));
  Dataset f = d;
  f.ConvertToFloat();
  EXPECT_FALSE(f.byte_features());
  EXPECT_TRUE(f.bytes.empty());
  EXPECT_EQ(f.x, (std::vector<float>{0, 127.5f, 25.5f, 51, 5, 10}));
  // The Standardizer fits on the values and applies to bytes by converting.
  Dataset g = d;
  const Standardizer st = Standardizer::Fit(g);
  EXPECT_FLOAT_EQ(st.mean[0], (0 + 25.5f + 5) / 3);
  st.Apply(g);
  EXPECT_FALSE(g.byte_features());
  EXPECT_FLOAT_EQ(g.sample(0)[0], (0 - st.mean[0]) / st.stddev[0]);
}

TEST_F(DatasetTest, ReadsCsvWithLabelColumnAndHeader) {
  const std::string plain = Write("d.csv", "a,b,label\n1,2,0\n3.5,-4,2\n5,6e1,1\n\n");
  CsvOptions o;
  o.header = true;
  Dataset d = LoadCsv(plain, o);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d.num_features, 2);
  EXPECT_EQ(d.num_classes, 3);
  EXPECT_FLOAT_EQ(d.sample(1)[1], -4.0f);
  EXPECT_FLOAT_EQ(d.sample(2)[1], 60.0f);
  EXPECT_EQ(d.y, (std::vector<float>{0, 2, 1}));
  // Regression, label in column 0, gzip, CRLF line ends.
  o.label_column = 0;
  o.classification = false;
  d = LoadCsv(Write("r.csv.gz", "h1,h2,h3\r\n0.5,2,3\r\n1.5,4,5\r\n", true), o);
  EXPECT_EQ(d.num_classes, 0);
  EXPECT_FLOAT_EQ(d.y[1], 1.5f);
  EXPECT_FLOAT_EQ(d.sample(1)[0], 4.0f);
  EXPECT_FLOAT_EQ(d.sample(1)[1], 5.0f);
  // A middle label column, another delimiter, spaces around fields, no
  // newline at the end.
  o = CsvOptions{1, false, true, ';'};
  d = LoadCsv(Write("m.txt", " 1 ; 4 ;\t2\n3;0;+4"), o);
  EXPECT_EQ(d.y, (std::vector<float>{4, 0}));
  EXPECT_EQ(d.x, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(d.num_classes, 5);
  // Anything that is not a directory or an IDX images file is read as CSV.
  EXPECT_EQ(LoadDataset(plain, Split::kTrain, CsvOptions{-1, true, true, ','}).size(), 3u);
  EXPECT_EQ(LoadDataset(Write("sensor.log", "1,0\n2,1\n"), Split::kTest).size(), 2u);
}

TEST_F(DatasetTest, CsvAcceptsTrailingBlankLinesAndByteOrderMark) {
  EXPECT_EQ(LoadCsv(Write("a.csv",
                          "\xEF\xBB\xBF"
                          "1,0\n2,1\n\n\r\n  \n"))
                .size(),
            2u);
  // Tiny numbers underflow to 0 rather than being refused.
  EXPECT_EQ(LoadCsv(Write("b.csv", "1e-60,0\n")).x[0], 0.0f);
}

TEST_F(DatasetTest, CsvFieldErrorsNameFileLineAndColumn) {
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("a.csv", "1,2,0\n1,abc,1\n")); }),
             "a.csv:2:2: expected a number, found \"abc\"");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("header.csv", "x,y,label\n1,2,0\n")); }),
             "header.csv:1:1: expected a number, found \"x\" (is the first line a header?)");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("g.csv", "1,2,0\n1,,0\n")); }),
             "g.csv:2:2: expected a number, found \"\"");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("h.csv", "1,nan,0\n")); }), "h.csv:1:2:");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("inf.csv", "1,2,0\n3,4,0\ninf,1,0\n")); }),
             "inf.csv:3:1:");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("big.csv", "1e39,1,0\n")); }), "big.csv:1:1:");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("q.csv", "\"1\",2\n")); }), "q.csv:1:1:");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("tail.csv", "1,2,0x\n")); }), "tail.csv:1:3:");
  // Binary bytes are shown escaped.
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("bin.csv", std::string("\x01\xfe", 2) + ",1\n")); }),
             "bin.csv:1:1: expected a number, found \"\\x01\\xfe\"");
}

TEST_F(DatasetTest, CsvRowAndLabelErrors) {
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("b.csv", "1,2,0\n1,2\n")); }),
             "b.csv:2: expected 3 columns like the first data row, found 2");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("b2.csv", "1,2,0\n1,2,0,4\n")); }),
             "b2.csv:2: expected 3 columns like the first data row, found 4");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("c.csv", "1,2,0.5\n")); }),
             "c.csv:1:3: a class label must be a whole number >= 0, found 0.5");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("d.csv", "1,2,0\n1,2,-1\n")); }),
             "d.csv:2:3: a class label must be a whole number >= 0, found -1");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("id.csv", "1,5000000\n")); }),
             "id.csv:1:2: class label 5000000 is implausibly large");
  // Found by fuzz/csv_loader_fuzz.cpp (fuzz/corpus/csv_loader/label-1e24-gzip):
  // a label beyond every integer type was cast to long long for this message.
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("big.csv", "8.,0999999999999999444444421", true)); }),
             "big.csv:1:2: class label 1e+24 is implausibly large");
  CsvOptions first;
  first.label_column = 0;
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("d0.csv", "1.5,2,0\n"), first); }), "d0.csv:1:1: a class");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("f.csv", "1,2,0\n\n1,2,0\n")); }),
             "f.csv:2: empty line inside the data");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("one.csv", "1\n2\n")); }),
             "one.csv:1: a row needs at least two columns");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("i.csv", "1,2,0\n"), CsvOptions{7}); }),
             "i.csv: label column 7 does not exist");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("i2.csv", "1,2,0\n"), CsvOptions{-2}); }),
             "i2.csv: label column -2 does not exist");
}

TEST_F(DatasetTest, CsvEmptyAndMissingFiles) {
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("e.csv", "")); }), "e.csv: no data rows");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("blank.csv", "\n\n")); }), "blank.csv: no data rows");
  CsvOptions header;
  header.header = true;
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("h.csv", "a,b\n"), header); }), "h.csv: no data rows");
  EXPECT_HAS(ErrorOf([&] { LoadCsv(Write("e.csv.gz", "", true)); }), "e.csv.gz: no data rows");
  EXPECT_HAS(ErrorOf([&] { LoadCsv((dir_ / "missing.csv").string()); }),
             "missing.csv: no such file");
}

TEST_F(DatasetTest, CsvOf100kRowsLoadsQuickly) {
  std::string text;
  text.reserve(100'000 * 40);
  for (int i = 0; i < 100'000; ++i) {
    text += std::to_string(i * 0.001) + "," + std::to_string(-i) + ",3.25e-2,7," +
            std::to_string(i % 10) + "\n";
  }
  const std::string path = Write("big.csv", text);
  const auto t0 = std::chrono::steady_clock::now();
  const Dataset d = LoadCsv(path);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(d.size(), 100'000u);
  EXPECT_EQ(d.num_features, 4);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_FLOAT_EQ(d.sample(99'999)[1], -99'999.0f);
  // Generous (sanitizer builds, a shared machine): a release build takes ~50 ms.
  EXPECT_LT(seconds, 5.0);
}

TEST_F(DatasetTest, SubsetKeepsTheGivenOrder) {
  const Dataset d = LoadCsv(Write("s.csv", "1,10,0\n2,20,1\n3,30,2\n"));
  const Dataset s = d.Subset({2, 0, 2});
  EXPECT_EQ(s.num_features, 2);
  EXPECT_EQ(s.num_classes, 3);
  EXPECT_EQ(s.x, (std::vector<float>{3, 30, 1, 10, 3, 30}));
  EXPECT_EQ(s.y, (std::vector<float>{2, 0, 2}));
  EXPECT_EQ(d.Subset({}).size(), 0u);
}

TEST_F(DatasetTest, StandardizerFitsAndApplies) {
  Dataset d = LoadCsv(Write("s.csv", "1,5,0\n3,5,1\n"));
  const Standardizer s = Standardizer::Fit(d);
  EXPECT_FLOAT_EQ(s.mean[0], 2.0f);
  EXPECT_FLOAT_EQ(s.stddev[0], 1.0f);
  EXPECT_FLOAT_EQ(s.mean[1], 5.0f);
  EXPECT_EQ(s.stddev[1], 1.0f);  // constant feature: left unscaled
  s.Apply(d);
  EXPECT_FLOAT_EQ(d.sample(0)[0], -1.0f);
  EXPECT_FLOAT_EQ(d.sample(1)[0], 1.0f);
  EXPECT_EQ(d.sample(1)[1], 0.0f);
  Dataset other = LoadCsv(Write("t.csv", "1,0\n"));
  EXPECT_HAS(ErrorOf([&] { s.Apply(other); }), "fitted on 2 features but the data has 1");
}

TEST_F(DatasetTest, StandardizerIsAccurateForALargeMean) {
  // A timestamp-like feature: a one-pass sum of squares in float or double
  // would lose this spread to cancellation.
  Dataset d;
  d.num_features = 1;
  d.num_classes = 0;
  for (int i = 0; i < 1000; ++i) {
    d.x.push_back(1.0e6f + static_cast<float>(i % 2));
    d.y.push_back(0);
  }
  const Standardizer s = Standardizer::Fit(d);
  EXPECT_NEAR(s.mean[0], 1.0e6f + 0.5f, 1e-3);
  EXPECT_NEAR(s.stddev[0], 0.5f, 1e-6);
}

TEST(DatasetRealTest, FashionMnistFromTheDebianPackage) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir)) {
    GTEST_SKIP() << dir << " is not installed (scripts/install-deps.sh does that)";
  }
  const auto t0 = std::chrono::steady_clock::now();
  const Dataset train = LoadDataset(dir, Split::kTrain);
  const Dataset test = LoadDataset(dir, Split::kTest);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(train.size(), 60000u);
  EXPECT_EQ(test.size(), 10000u);
  EXPECT_EQ(train.num_features, 784);
  EXPECT_EQ(test.num_features, 784);
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(test.num_classes, 10);
  EXPECT_EQ(train.bytes.size(), 60000u * 784u);
  const auto [lo, hi] = std::minmax_element(train.bytes.begin(), train.bytes.end());
  EXPECT_EQ(*lo, 0);
  EXPECT_EQ(*hi, 255);
  // Fashion-MNIST is balanced: 6000 training samples per class.
  for (int c = 0; c < 10; ++c) {
    EXPECT_EQ(std::count(train.y.begin(), train.y.end(), static_cast<float>(c)), 6000) << c;
  }
  // About 0.5 s in a release build; generous for sanitizers and a busy machine.
  EXPECT_LT(seconds, 30.0);
}

}  // namespace
}  // namespace fedsgd
