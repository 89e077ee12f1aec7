// .npy encoding and decoding (fedsgd/npy.h): round trips, numpy's other
// header forms, and every malformed file refused with a reason.
#include "fedsgd/npy.h"

#include <gtest/gtest.h>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

std::string File(const std::string& header, std::size_t data_bytes, char major = 1) {
  std::string out("\x93NUMPY", 6);
  out += major;
  out += '\0';
  if (major == 1) {
    out += static_cast<char>(header.size() & 0xff);
    out += static_cast<char>(header.size() >> 8);
  } else {
    for (int i = 0; i < 4; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  out += header;
  out.append(data_bytes, '\0');
  return out;
}

TEST(NpyTest, RoundTripsAndPadsTheHeaderToSixtyFourBytes) {
  const std::vector<float> values = {1.5f, -2.0f, 0.0f, 3e38f};
  const std::string bytes = EncodeNpy(values);
  EXPECT_EQ((bytes.size() - values.size() * 4) % 64, 0u);
  EXPECT_EQ(DecodeNpy(bytes, "t"), values);
  EXPECT_TRUE(DecodeNpy(EncodeNpy({}), "t").empty());
}

TEST(NpyTest, ReadsTheOtherFormsNumpyWrites) {
  EXPECT_EQ(DecodeNpy(File("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", 12), "t")
                .size(),
            3u);
  EXPECT_EQ(DecodeNpy(File("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }\n", 8), "t")
                .size(),
            2u);
  EXPECT_EQ(
      DecodeNpy(File("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", 8, 2), "t")
          .size(),
      2u);
}

TEST(NpyTest, RefusesWhatIsNotAFloat32Vector) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not npy at all", "magic"},
      {File("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 16), "dtype"},
      {File("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", 8), "dtype"},
      {File("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 24), "shape"},
      {File("{'descr': '<f4', 'fortran_order': False, 'shape': (), }\n", 4), "shape"},
      {File("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", 8), "declared"},
      {File("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n", 8), "declared"},
      {File("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }\n", 8),
       "shape"},
      {File("{'descr': '<f4', 'shape': (1,), }\n", 4), "fortran_order"},
      {File("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n", 4, 4), "version"},
      {File("{'descr': '<f4'", 0).substr(0, 12), "truncated"},
  };
  for (const auto& [bytes, reason] : cases) {
    try {
      DecodeNpy(bytes, "model.npy");
      ADD_FAILURE() << "accepted a file that should fail on " << reason;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("model.npy"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace fedsgd
