// wire/tensor_bytes.h on its own: every dtype's bytes, rounding to the 16-bit formats, lengths that
// do not fit, absurd shapes, the heads of lent messages (checked against protobuf's own
// serialization) and weight chunking.
#include "wire/tensor_bytes.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tpserve::wire {
namespace {

std::vector<float> RandomValues(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 3.f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(TensorBytesTest, Float32AndFloat64_RoundTripExactly) {
  const std::vector<float> values = RandomValues(257, std::random_device{}());
  for (tp::v1::DType dtype : {tp::v1::DTYPE_FLOAT32, tp::v1::DTYPE_FLOAT64}) {
    std::string bytes;
    FloatsToBytes(values.data(), values.size(), dtype, &bytes);
    ASSERT_EQ(bytes.size(), values.size() * DTypeSize(dtype)) << DTypeName(dtype);
    absl::StatusOr<std::vector<float>> back = BytesToFloats(dtype, bytes, "x", static_cast<int64_t>(values.size()));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, values) << DTypeName(dtype);
  }
}

TEST(TensorBytesTest, SixteenBitFormats_RoundToNearestEven) {
  // float16: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 and rounds to the even one, 1;
  // 1 + 3 * 2^-11 lies between 1 + 2^-10 and 1 + 2^-9 and rounds to 1 + 2^-9 (even mantissa).
  const std::vector<float> half_in = {1.0f + std::ldexp(1.0f, -11), 1.0f + 3 * std::ldexp(1.0f, -11), -2.5f, 65504.0f,
                                      std::ldexp(1.0f, -24)};
  const std::vector<float> half_want = {1.0f, 1.0f + std::ldexp(1.0f, -9), -2.5f, 65504.0f, std::ldexp(1.0f, -24)};
  std::string bytes;
  FloatsToBytes(half_in.data(), half_in.size(), tp::v1::DTYPE_FLOAT16, &bytes);
  absl::StatusOr<std::vector<float>> half = BytesToFloats(tp::v1::DTYPE_FLOAT16, bytes, "h");
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ(*half, half_want);
  // bfloat16 keeps 8 mantissa bits: 1 + 2^-8 is halfway and rounds to 1; 1 + 3 * 2^-8 to 1 + 2^-6.
  const std::vector<float> bf_in = {1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8), 3.0e38f};
  bytes.clear();
  FloatsToBytes(bf_in.data(), bf_in.size(), tp::v1::DTYPE_BFLOAT16, &bytes);
  absl::StatusOr<std::vector<float>> bf = BytesToFloats(tp::v1::DTYPE_BFLOAT16, bytes, "b");
  ASSERT_TRUE(bf.ok()) << bf.status();
  ASSERT_EQ(bf->size(), 3u);
  EXPECT_EQ((*bf)[0], 1.0f);
  EXPECT_EQ((*bf)[1], 1.0f + std::ldexp(1.0f, -6));
  EXPECT_NEAR((*bf)[2], 3.0e38f, 3.0e38f * std::ldexp(1.0f, -8));
}

TEST(TensorBytesTest, LengthsThatDoNotFit_NameWhatWasExpected) {
  const std::string seven(7, '\0');
  absl::StatusOr<std::vector<float>> odd = BytesToFloats(tp::v1::DTYPE_FLOAT32, seven, "x1");
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(odd.status().message().find("x1: 7 bytes of float32; expected a multiple of 4 bytes"), std::string::npos)
      << odd.status();
  absl::StatusOr<std::vector<float>> short_by_one = BytesToFloats(tp::v1::DTYPE_FLOAT64, std::string(16, '\0'), "x2", 3);
  EXPECT_NE(short_by_one.status().message().find("expected 24 bytes"), std::string::npos) << short_by_one.status();
  absl::StatusOr<std::vector<float>> unknown = BytesToFloats(tp::v1::DTYPE_UNSPECIFIED, std::string(4, '\0'), "w");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DTypeSize(static_cast<tp::v1::DType>(77)), 0u);
}

TEST(TensorBytesTest, ShapeElements_RefusesNegativeAndAbsurdExtents) {
  tp::v1::Tensor tensor;
  tensor.add_shape(64);
  tensor.add_shape(1152);
  EXPECT_EQ(ShapeElements(tensor), 64 * 1152);
  tensor.add_shape(-1);
  EXPECT_EQ(ShapeElements(tensor), -1);
  tp::v1::Tensor huge;
  for (int i = 0; i < 4; ++i) huge.add_shape(int64_t{1} << 20);  // 2^80 elements
  EXPECT_EQ(ShapeElements(huge), -1);
  tp::v1::Tensor empty_extent;
  empty_extent.add_shape(4096);
  empty_extent.add_shape(0);
  EXPECT_EQ(ShapeElements(empty_extent), 0);
}

// The head written by AppendTensorHead, followed by the data bytes, must be exactly what protobuf
// itself writes for the same field: clients and servers on either side parse it as the message.
TEST(TensorBytesTest, TensorHeadPlusData_IsProtobufsOwnSerialization) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{40}, size_t{147456}}) {
    tp::v1::ForwardRequest request;
    request.set_model("seed");
    tp::v1::Tensor* x1 = request.mutable_x1();
    x1->add_shape(static_cast<int64_t>(n));
    x1->set_dtype(tp::v1::DTYPE_FLOAT32);
    const std::vector<float> values = RandomValues(n, n + 1);
    FloatsToBytes(values.data(), n, tp::v1::DTYPE_FLOAT32, x1->mutable_data());
    const std::string want = request.SerializeAsString();

    tp::v1::ForwardRequest head_only;
    head_only.set_model("seed");
    tp::v1::Tensor meta = *x1;
    meta.clear_data();
    std::string got = head_only.SerializeAsString();
    AppendTensorHead(tp::v1::ForwardRequest::kX1FieldNumber, meta, x1->data().size(), &got);
    got += x1->data();
    EXPECT_EQ(got, want) << "n = " << n;
    tp::v1::ForwardRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(got));
    EXPECT_EQ(parsed.x1().data(), x1->data());
  }
}

TEST(TensorBytesTest, ForEachChunk_CoversEveryElementOnceAndStopsWhenAsked) {
  const std::vector<float> values = RandomValues(1000, 7);
  std::vector<float> joined;
  int chunks = 0;
  ASSERT_TRUE(ForEachChunk(values.data(), static_cast<int64_t>(values.size()), 300, [&](const tp::v1::WeightsChunk& c) {
    EXPECT_EQ(c.offset(), static_cast<int64_t>(joined.size()));
    absl::StatusOr<std::vector<float>> part = BytesToFloats(c.dtype(), c.data(), "chunk");
    EXPECT_TRUE(part.ok());
    joined.insert(joined.end(), part->begin(), part->end());
    ++chunks;
    return true;
  }));
  EXPECT_EQ(chunks, 4);
  EXPECT_EQ(joined, values);
  int seen = 0;
  EXPECT_FALSE(ForEachChunk(values.data(), 1000, 300, [&](const tp::v1::WeightsChunk&) { return ++seen < 2; }));
  EXPECT_EQ(seen, 2);
  int empty_chunks = 0;
  ForEachChunk(values.data(), 0, 300, [&](const tp::v1::WeightsChunk& c) {
    EXPECT_EQ(c.offset(), 0);
    EXPECT_TRUE(c.data().empty());
    ++empty_chunks;
    return true;
  });
  EXPECT_EQ(empty_chunks, 1) << "an empty weight vector is still one (empty) chunk";
}

}  // namespace
}  // namespace tpserve::wire
