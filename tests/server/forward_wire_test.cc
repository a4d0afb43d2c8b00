// forward_wire.h against protobuf itself: the located bytes and header fields of every request the
// parser accepts are what protobuf reads, however gRPC splits the message into pieces, and every
// encoding it does not handle is declined (so the caller falls back to protobuf).
#include "server/grpc/forward_wire.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/random.h"

namespace tpserve::wire {
namespace {

std::string RandomBytes(size_t n, std::mt19937_64& rng) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

tp::v1::ForwardRequest RandomRequest(std::mt19937_64& rng) {
  tp::v1::ForwardRequest request;
  request.set_model("seed-model_1");
  request.mutable_x1()->add_shape(3);
  request.mutable_x1()->add_shape(300);  // a two-byte varint
  request.mutable_x1()->set_dtype(tp::v1::DTYPE_FLOAT32);
  request.mutable_x1()->set_data(RandomBytes(3 * 300 * 4, rng));
  request.mutable_x2()->add_shape(3);
  request.mutable_x2()->add_shape(7);
  request.mutable_x2()->set_dtype(tp::v1::DTYPE_FLOAT32);
  request.mutable_x2()->set_data(RandomBytes(3 * 7 * 4, rng));
  request.set_output_dtype(tp::v1::DTYPE_FLOAT16);
  request.set_precision(tp::v1::PRECISION_TF32);
  return request;
}

// `bytes` cut at random places into pieces, empty ones included.
std::vector<absl::string_view> Split(const std::string& bytes, int cuts, std::mt19937_64& rng) {
  std::vector<size_t> at = {0, bytes.size()};
  for (int i = 0; i < cuts; ++i) at.push_back(rng() % (bytes.size() + 1));
  std::sort(at.begin(), at.end());
  std::vector<absl::string_view> pieces;
  for (size_t i = 0; i + 1 < at.size(); ++i) pieces.emplace_back(bytes.data() + at[i], at[i + 1] - at[i]);
  return pieces;
}

std::string Located(absl::Span<const absl::string_view> pieces, WireBytes bytes) {
  std::string out(bytes.size, '\0');
  CopyWireBytes(pieces, bytes, out.data());
  return out;
}

// What the parser must produce: the message with its tensors' data taken out.
void ExpectMatches(const tp::v1::ForwardRequest& request, absl::Span<const absl::string_view> pieces,
                   const ForwardRequestView& view) {
  tp::v1::ForwardRequest header = request;
  if (header.has_x1()) header.mutable_x1()->clear_data();
  if (header.has_x2()) header.mutable_x2()->clear_data();
  EXPECT_EQ(view.header.SerializeAsString(), header.SerializeAsString());
  EXPECT_EQ(Located(pieces, view.x1_data), request.x1().data());
  EXPECT_EQ(Located(pieces, view.x2_data), request.x2().data());
}

TEST(ForwardWireTest, LocatesTheTensorsHoweverTheMessageIsSplit) {
  std::mt19937_64 rng = testing::FreshRng();
  for (int trial = 0; trial < 200; ++trial) {
    const tp::v1::ForwardRequest request = RandomRequest(rng);
    const std::string bytes = request.SerializeAsString();
    const std::vector<absl::string_view> pieces = Split(bytes, trial % 20, rng);
    ForwardRequestView view;
    ASSERT_TRUE(ParseForwardRequest(pieces, &view)) << "trial " << trial;
    ExpectMatches(request, pieces, view);
  }
}

TEST(ForwardWireTest, ReadsFieldsInAnyOrderAndUnpackedShapesAsProtobufDoes) {
  std::mt19937_64 rng = testing::FreshRng();
  const tp::v1::ForwardRequest request = RandomRequest(rng);
  // precision, x2, model, x1 with its shape as separate (unpacked) varints and data before dtype.
  std::string x1;
  x1 += std::string("\x08\x03", 2) + std::string("\x08\xac\x02", 3);  // shape 3, shape 300
  tp::v1::Tensor data_only;
  data_only.set_data(request.x1().data());
  x1 += data_only.SerializeAsString();
  x1 += std::string("\x10\x01", 2);  // dtype FLOAT32
  tp::v1::ForwardRequest rest = request;
  rest.clear_x1();
  std::string bytes = rest.SerializeAsString();
  ASSERT_LT(x1.size(), 1u << 14);
  bytes += "\x12";  // field 2 (x1), length-delimited
  bytes += static_cast<char>((x1.size() & 0x7f) | 0x80);
  bytes += static_cast<char>(x1.size() >> 7);
  bytes += x1;
  tp::v1::ForwardRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  ASSERT_EQ(parsed.SerializeAsString(), request.SerializeAsString());
  const std::vector<absl::string_view> pieces = Split(bytes, 5, rng);
  ForwardRequestView view;
  ASSERT_TRUE(ParseForwardRequest(pieces, &view));
  ExpectMatches(request, pieces, view);
}

TEST(ForwardWireTest, DeclinesWhatItDoesNotHandle) {
  std::mt19937_64 rng = testing::FreshRng();
  const std::string bytes = RandomRequest(rng).SerializeAsString();
  ForwardRequestView view;
  auto parse = [&](const std::string& b) { return ParseForwardRequest({absl::string_view(b)}, &view); };
  ASSERT_TRUE(parse(bytes));
  // An unknown field (100, varint): protobuf keeps it; we leave the message to protobuf.
  EXPECT_FALSE(parse(bytes + std::string("\xa0\x06\x01", 3)));
  // x1 twice: protobuf merges the two.
  tp::v1::ForwardRequest again;
  again.mutable_x1()->add_shape(3);
  EXPECT_FALSE(parse(bytes + again.SerializeAsString()));
  // A known field with another wire type (model as a varint).
  EXPECT_FALSE(parse(bytes + std::string("\x08\x01", 2)));
  // Cut anywhere inside x1 (which follows the 14 bytes of the model field).
  for (size_t end = 15; end < 60; ++end) EXPECT_FALSE(parse(bytes.substr(0, end))) << end;
  for (size_t end = bytes.size() - 80; end < bytes.size() - 40; ++end) EXPECT_FALSE(parse(bytes.substr(0, end))) << end;
  // A model name that is not ASCII (protobuf checks UTF-8).
  tp::v1::ForwardRequest non_ascii;
  non_ascii.set_model("caf\xc3\xa9");
  EXPECT_FALSE(parse(non_ascii.SerializeAsString()));
  // Garbage.
  EXPECT_FALSE(parse(std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11)));
  // The empty message is a valid ForwardRequest (every field at its default).
  EXPECT_TRUE(parse(""));
  EXPECT_EQ(view.x1_data.size, 0u);
}

// Random damage (flipped, dropped and inserted bytes) to valid messages: whatever the parser
// accepts, protobuf accepts too and reads the same way; it never reads outside the pieces (ASan).
TEST(ForwardWireTest, DamagedMessages_AcceptedOnlyAsProtobufReadsThem) {
  std::mt19937_64 rng = testing::FreshRng();
  int accepted = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    tp::v1::ForwardRequest request = RandomRequest(rng);
    request.mutable_x1()->mutable_data()->resize(rng() % 40);
    request.mutable_x2()->mutable_data()->resize(rng() % 40);
    std::string bytes = request.SerializeAsString();
    for (int damage = 1 + static_cast<int>(rng() % 3); damage > 0; --damage) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 3) {
        case 0: bytes[at] = static_cast<char>(rng() & 0xff); break;
        case 1: bytes.erase(at, 1 + rng() % 4); break;
        default: bytes.insert(at, 1, static_cast<char>(rng() & 0xff)); break;
      }
      if (bytes.empty()) bytes = "\x08";
    }
    const std::vector<absl::string_view> pieces = Split(bytes, static_cast<int>(rng() % 6), rng);
    ForwardRequestView view;
    if (!ParseForwardRequest(pieces, &view)) continue;
    ++accepted;
    tp::v1::ForwardRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes)) << "trial " << trial;
    ExpectMatches(parsed, pieces, view);
  }
  EXPECT_GT(accepted, 100);  // the damage left many messages valid: the comparison above ran
}

TEST(ForwardWireTest, ResponseHeadPlusDataIsTheWholeResponse) {
  std::mt19937_64 rng = testing::FreshRng();
  for (size_t data_bytes : {size_t{0}, size_t{4}, size_t{124}, size_t{128}, size_t{300000}}) {
    tp::v1::ForwardResponse fields;
    fields.mutable_out()->add_shape(static_cast<int64_t>(data_bytes / 4));
    fields.mutable_out()->add_shape(1);
    fields.mutable_out()->set_dtype(tp::v1::DTYPE_FLOAT32);
    fields.set_model_version(rng());
    fields.set_executed_batch(64);
    fields.set_device("cuda:0");
    const std::string data = RandomBytes(data_bytes, rng);
    tp::v1::ForwardResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(EncodeForwardResponseHead(fields, data_bytes) + data));
    tp::v1::ForwardResponse expected = fields;
    expected.mutable_out()->set_data(data);
    EXPECT_EQ(parsed.SerializeAsString(), expected.SerializeAsString()) << data_bytes;
  }
}

}  // namespace
}  // namespace tpserve::wire
