#include "client/npy.h"

#include <filesystem>
#include <random>

#include "gtest/gtest.h"

namespace tpserve {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("npy_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

NpyArray RandomArray(DType dtype, std::vector<int64_t> shape) {
  NpyArray a = NpyArray::Zeros(dtype, std::move(shape));
  std::mt19937 rng(std::random_device{}());
  for (char& byte : a.bytes) byte = static_cast<char>(rng());
  return a;
}

TEST(NpyTest, RoundTripsFloat32AndFloat64OfAnyRank) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (std::vector<int64_t> shape : {std::vector<int64_t>{7}, {3, 5}, {2, 3, 4}, {0, 4}}) {
      const NpyArray a = RandomArray(dtype, shape);
      const std::string path = TempPath("rt.npy");
      ASSERT_TRUE(WriteNpy(path, a).ok());
      absl::StatusOr<NpyArray> b = ReadNpy(path);
      ASSERT_TRUE(b.ok()) << b.status();
      EXPECT_EQ(b->dtype, dtype);
      EXPECT_EQ(b->shape, shape);
      EXPECT_EQ(b->bytes, a.bytes);
      std::filesystem::remove(path);
    }
  }
}

TEST(NpyTest, HeaderIsWhatNumpyWritesAndDataIsAligned) {
  const std::string bytes = SerializeNpy(RandomArray(DType::kFloat32, {3}));
  EXPECT_EQ(bytes.substr(1, 5), "NUMPY");
  EXPECT_NE(bytes.find("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"), std::string::npos);
  EXPECT_EQ((bytes.size() - 12) % 64, 0u);
  EXPECT_EQ(bytes[bytes.size() - 12 - 1], '\n');
}

TEST(NpyTest, RejectsOtherDtypesFortranOrderAndTruncatedData) {
  std::string good = SerializeNpy(RandomArray(DType::kFloat64, {2, 2}));
  std::string int_file = good;
  int_file.replace(int_file.find("<f8"), 3, "<i8");
  auto bad_dtype = ParseNpy(int_file, "x.npy");
  ASSERT_FALSE(bad_dtype.ok());
  EXPECT_EQ(bad_dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_dtype.status().message().find("expected little-endian float32"), std::string::npos);

  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  EXPECT_NE(ParseNpy(fortran, "x.npy").status().message().find("C order"), std::string::npos);

  auto truncated = ParseNpy(good.substr(0, good.size() - 3), "x.npy");
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("expected 32"), std::string::npos) << truncated.status();

  EXPECT_FALSE(ParseNpy("garbage bytes that are not numpy", "g.npy").ok());
  EXPECT_EQ(ReadNpy("/nonexistent/dir/file.npy").status().code(), absl::StatusCode::kNotFound);
}

TEST(NpyTest, ConvertsBetweenFloat32AndFloat64) {
  NpyArray a = NpyArray::Zeros(DType::kFloat64, {3});
  double* d = reinterpret_cast<double*>(a.bytes.data());
  d[0] = 1.5;
  d[1] = -2.25;
  d[2] = 1e-3;
  NpyArray f = ConvertNpy(a, DType::kFloat32);
  const float* fd = reinterpret_cast<const float*>(f.bytes.data());
  EXPECT_EQ(f.dtype, DType::kFloat32);
  EXPECT_FLOAT_EQ(fd[0], 1.5f);
  EXPECT_FLOAT_EQ(fd[1], -2.25f);
  EXPECT_FLOAT_EQ(fd[2], 1e-3f);
}

}  // namespace
}  // namespace tpserve
