// Loaders (IDX and CSV, plain and gzip), their error messages, scaling, and
// shards (iid, labels:K, dirichlet) on synthetic and on real data.
#include "fedsgd/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "fedsgd/error.h"
#include "fedsgd/shard.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fedsgd_data_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes, bool gzip = false) {
    const std::string path = (dir_ / name).string();
    if (gzip) {
      gzFile f = gzopen(path.c_str(), "wb");
      gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(path, std::ios::binary) << bytes;
    }
    return path;
  }
  static std::string Be32(std::uint32_t v) {
    return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
            static_cast<char>(v)};
  }
  // n images of 2x3 pixels (pixel k of image i = 10*i + k) and labels i % 3.
  static std::string Images(std::uint32_t n) {
    std::string s = Be32(0x00000803) + Be32(n) + Be32(2) + Be32(3);
    for (std::uint32_t i = 0; i < n; ++i) {
      for (int k = 0; k < 6; ++k) s += static_cast<char>(10 * i + k);
    }
    return s;
  }
  static std::string Labels(std::uint32_t n) {
    std::string s = Be32(0x00000801) + Be32(n);
    for (std::uint32_t i = 0; i < n; ++i) s += static_cast<char>(i % 3);
    return s;
  }
  std::string ErrorOf(const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(DatasetTest, ReadsIdxPlainAndGzip) {
  for (bool gz : {false, true}) {
    const std::string ext = gz ? ".gz" : "";
    const Dataset d = LoadIdx(Write("a-images-idx3-ubyte" + ext, Images(4), gz),
                              Write("a-labels-idx1-ubyte" + ext, Labels(4), gz));
    ASSERT_EQ(d.size(), 4u);
    EXPECT_EQ(d.num_features, 6);
    EXPECT_EQ(d.num_classes, 3);
    EXPECT_FLOAT_EQ(d.sample(2)[5], 25.0f / 255.0f);
    EXPECT_EQ(d.y[3], 0.0f);
  }
}

TEST_F(DatasetTest, FindsTheStandardFilesInADirectory) {
  Write("train-images-idx3-ubyte.gz", Images(5), true);
  Write("train-labels-idx1-ubyte.gz", Labels(5), true);
  Write("t10k-images-idx3-ubyte", Images(2));
  Write("t10k-labels-idx1-ubyte", Labels(2));
  EXPECT_EQ(LoadDataset(dir_.string(), Split::kTrain).size(), 5u);
  EXPECT_EQ(LoadDataset(dir_.string(), Split::kTest).size(), 2u);
  EXPECT_EQ(LoadDataset((dir_ / "t10k-images-idx3-ubyte").string(), Split::kTrain).size(), 2u);
}

TEST_F(DatasetTest, IdxErrorsNameTheFile) {
  const std::string labels = Write("l", Labels(4));
  EXPECT_NE(ErrorOf([&] {
              LoadIdx(Write("bad-magic", "\x00\x00\x09\x03" + Images(4).substr(4)), labels);
            }).find("bad-magic: not an IDX file"),
            std::string::npos);
  const std::string truncated = Images(4).substr(0, 30);
  EXPECT_NE(ErrorOf([&] {
              LoadIdx(Write("short", truncated), labels);
            }).find("short: the header promises"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadIdx(Write("five", Images(5)), labels); }).find("5 images"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadIdx(Write("nope", ""), labels); }).find("too short"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadIdx((dir_ / "missing").string(), labels); }).find("no such file"),
            std::string::npos);
  // A gzip stream cut in half.
  Write("whole.gz", Images(200), true);
  std::string gz;
  {
    std::ifstream in(dir_ / "whole.gz", std::ios::binary);
    gz.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string half = Write("half.gz", gz.substr(0, gz.size() / 2));
  EXPECT_FALSE(ErrorOf([&] { LoadIdx(half, labels); }).empty());
  EXPECT_NE(ErrorOf([&] { LoadDataset((dir_ / "x.bin").string(), Split::kTrain); }).find("no such"),
            std::string::npos);
}

TEST_F(DatasetTest, ReadsCsvWithLabelColumnAndHeader) {
  const std::string plain = Write("d.csv", "a,b,label\n1,2,0\n3.5,-4,2\n5,6e1,1\n\n");
  CsvOptions o;
  o.header = true;
  Dataset d = LoadCsv(plain, o);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d.num_features, 2);
  EXPECT_EQ(d.num_classes, 3);
  EXPECT_FLOAT_EQ(d.sample(2)[1], 60.0f);
  o.label_column = 0;
  o.classification = false;
  d = LoadCsv(Write("r.csv.gz", "h1,h2,h3\r\n0.5,2,3\r\n1.5,4,5\r\n", true), o);
  EXPECT_EQ(d.num_classes, 0);
  EXPECT_FLOAT_EQ(d.y[1], 1.5f);
  EXPECT_FLOAT_EQ(d.sample(1)[0], 4.0f);
  EXPECT_EQ(LoadDataset(plain, Split::kTrain, CsvOptions{-1, true, true, ','}).size(), 3u);
}

TEST_F(DatasetTest, CsvErrorsNameFileLineAndColumn) {
  EXPECT_NE(ErrorOf([&] {
              LoadCsv(Write("a.csv", "1,2,0\n1,abc,1\n"));
            }).find("a.csv:2:2: expected a number, found \"abc\""),
            std::string::npos);
  EXPECT_NE(
      ErrorOf([&] { LoadCsv(Write("b.csv", "1,2,0\n1,2\n")); }).find("b.csv:2: expected 3 columns"),
      std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadCsv(Write("c.csv", "1,2,0.5\n")); }).find("c.csv:1:3: a class label"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadCsv(Write("d.csv", "1,2,-1\n")); }).find("class label"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadCsv(Write("e.csv", "")); }).find("e.csv: no data rows"),
            std::string::npos);
  EXPECT_NE(
      ErrorOf([&] { LoadCsv(Write("f.csv", "1,2,0\n\n1,2,0\n")); }).find("f.csv:2: empty line"),
      std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadCsv(Write("g.csv", "1,,0\n")); }).find("g.csv:1:2"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadCsv(Write("h.csv", "1,nan,0\n")); }).find("h.csv:1:2"),
            std::string::npos);
  EXPECT_NE(
      ErrorOf([&] { LoadCsv(Write("i.csv", "1,2,0\n"), CsvOptions{7}); }).find("label column 7"),
      std::string::npos);
  EXPECT_NE(
      ErrorOf([&] { LoadDataset(Write("j.dat", "x"), Split::kTrain); }).find("unknown data format"),
      std::string::npos);
}

TEST_F(DatasetTest, StandardizerFitsAndApplies) {
  Dataset d = LoadCsv(Write("s.csv", "1,5,0\n3,5,1\n"));
  const Standardizer s = Standardizer::Fit(d);
  EXPECT_FLOAT_EQ(s.mean[0], 2.0f);
  EXPECT_FLOAT_EQ(s.stddev[0], 1.0f);
  EXPECT_FLOAT_EQ(s.stddev[1], 1.0f);  // constant feature: left unscaled
  s.Apply(d);
  EXPECT_FLOAT_EQ(d.sample(0)[0], -1.0f);
  EXPECT_FLOAT_EQ(d.sample(1)[1], 0.0f);
  Dataset other = LoadCsv(Write("t.csv", "1,0\n"));
  EXPECT_THROW(s.Apply(other), Error);
}

Dataset Labelled(std::size_t n, int classes) {
  Dataset d;
  d.num_features = 1;
  d.num_classes = classes;
  for (std::size_t i = 0; i < n; ++i) {
    d.x.push_back(static_cast<float>(i));
    d.y.push_back(static_cast<float>(i % classes));
  }
  return d;
}

void ExpectPartition(const Dataset& d, int n, const ShardSpec& spec, std::uint64_t seed) {
  std::set<std::size_t> seen;
  std::size_t total = 0;
  for (int i = 0; i < n; ++i) {
    const auto shard = MakeShard(d, {i, n}, spec, seed);
    total += shard.size();
    seen.insert(shard.begin(), shard.end());
  }
  EXPECT_EQ(total, seen.size()) << spec.ToString() << ": shards overlap";
  EXPECT_EQ(seen.size(), d.size()) << spec.ToString() << ": shards do not cover the data";
}

TEST(ShardTest, EveryKindPartitionsTheData) {
  const Dataset d = Labelled(1000, 10);
  for (const char* spec : {"iid", "labels:2", "labels:1", "dirichlet:0.1", "dirichlet:100"}) {
    ExpectPartition(d, 5, ShardSpec::Parse(spec), 7);
  }
  EXPECT_EQ(MakeShard(d, {0, 4}, ShardSpec::Parse("iid"), 1).size(), 250u);
}

TEST(ShardTest, LabelsKLimitsTheClassesPerShard) {
  const Dataset d = Labelled(1000, 10);
  for (int i = 0; i < 5; ++i) {
    std::set<float> classes;
    for (std::size_t s : MakeShard(d, {i, 5}, ShardSpec::Parse("labels:2"), 3))
      classes.insert(d.y[s]);
    EXPECT_LE(classes.size(), 2u) << "shard " << i;
  }
}

TEST(ShardTest, DirichletAlphaControlsSkew) {
  const Dataset d = Labelled(10000, 10);
  auto max_share = [&](double alpha) {
    ShardSpec spec;
    spec.kind = ShardSpec::Kind::kDirichlet;
    spec.alpha = alpha;
    const auto shard = MakeShard(d, {0, 4}, spec, 9);
    std::vector<int> counts(10);
    for (std::size_t s : shard) counts[static_cast<int>(d.y[s])]++;
    return static_cast<double>(*std::max_element(counts.begin(), counts.end())) /
           static_cast<double>(shard.size());
  };
  EXPECT_GT(max_share(0.05), 0.3);
  EXPECT_LT(max_share(1000), 0.15);
}

TEST(ShardTest, DeterministicForASeed) {
  const Dataset d = Labelled(500, 5);
  for (const char* text : {"iid", "labels:2", "dirichlet:0.5"}) {
    const ShardSpec spec = ShardSpec::Parse(text);
    EXPECT_EQ(MakeShard(d, {1, 3}, spec, 4), MakeShard(d, {1, 3}, spec, 4)) << text;
    EXPECT_NE(MakeShard(d, {1, 3}, spec, 4), MakeShard(d, {1, 3}, spec, 5)) << text;
  }
}

TEST(ShardTest, RefusesBadSpecs) {
  for (const char* bad : {"", "niid", "labels", "labels:0", "labels:x", "dirichlet:0",
                          "dirichlet:-1", "dirichlet:abc"}) {
    EXPECT_THROW(ShardSpec::Parse(bad), Error) << bad;
  }
  for (const char* bad : {"", "1", "4/4", "-1/4", "0/0", "a/b", "1/2/3"}) {
    EXPECT_THROW(ShardIndex::Parse(bad), Error) << bad;
  }
  Dataset regression = Labelled(10, 2);
  regression.num_classes = 0;
  EXPECT_THROW(MakeShard(regression, {0, 2}, ShardSpec::Parse("labels:1"), 1), Error);
  EXPECT_THROW(MakeShard(Labelled(3, 2), {0, 4}, ShardSpec::Parse("iid"), 1), Error);
}

TEST(DatasetRealTest, FashionMnistFromTheDebianPackage) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir))
    GTEST_SKIP() << dir << " is not installed (scripts/install-deps.sh does that)";
  const Dataset train = LoadDataset(dir, Split::kTrain);
  const Dataset test = LoadDataset(dir, Split::kTest);
  EXPECT_EQ(train.size(), 60000u);
  EXPECT_EQ(test.size(), 10000u);
  EXPECT_EQ(train.num_features, 784);
  EXPECT_EQ(train.num_classes, 10);
  const auto [lo, hi] = std::minmax_element(train.x.begin(), train.x.end());
  EXPECT_EQ(*lo, 0.0f);
  EXPECT_EQ(*hi, 1.0f);
  const auto shard = MakeShard(train, {3, 4}, ShardSpec::Parse("iid"), 1);
  EXPECT_EQ(shard.size(), 15000u);
}

}  // namespace
}  // namespace fedsgd
