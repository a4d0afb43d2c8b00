// The client's lent-slice encoding (client/lib/borrowed_wire.h): the bytes parse back to the very
// message (every field, large and small tensors), no field of the messages is left out, lent
// slices come back, and over loopback TpClient::Forward / Echo (which send this way) answer as the
// generated stub does, also for a call that fails.
#include "client/lib/borrowed_wire.h"

#include <random>
#include <set>
#include <string>
#include <vector>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"
#include "tests/support/random.h"

namespace tpserve::client {
namespace {

using google::protobuf::util::MessageDifferencer;

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

std::string RandomBytes(size_t n, std::mt19937_64& rng) {
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

std::set<std::string> FieldNames(const google::protobuf::Descriptor* d) {
  std::set<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.insert(d->field(i)->name());
  return names;
}

// The encoder copies the messages' other fields by hand: a new field must be added there (and here).
TEST(BorrowedWire, EncodersKnowEveryField) {
  EXPECT_EQ(FieldNames(tp::v1::ForwardRequest::descriptor()),
            (std::set<std::string>{"model", "x1", "x2", "output_dtype", "precision"}))
      << "ForwardRequest changed: update EncodeForwardRequest in client/lib/borrowed_wire.cc";
  EXPECT_EQ(FieldNames(tp::v1::Tensor::descriptor()), (std::set<std::string>{"shape", "dtype", "data"}))
      << "Tensor changed: update EncodeForwardRequest in client/lib/borrowed_wire.cc";
  EXPECT_EQ(FieldNames(tp::v1::EchoRequest::descriptor()), (std::set<std::string>{"payload", "response_bytes"}))
      << "EchoRequest changed: update EncodeEchoRequest in client/lib/borrowed_wire.cc";
  EXPECT_EQ(tp::v1::ForwardRequest::descriptor()->FindFieldByName("x1")->number(), 2);
  EXPECT_EQ(tp::v1::ForwardRequest::descriptor()->FindFieldByName("x2")->number(), 3);
  EXPECT_EQ(tp::v1::Tensor::descriptor()->FindFieldByName("data")->number(), 3);
  EXPECT_EQ(tp::v1::EchoRequest::descriptor()->FindFieldByName("payload")->number(), 1);
}

TEST(BorrowedWire, ForwardRequest_ParsesBackToTheSameMessage_LargeDataLent) {
  uint64_t seed = 0;
  std::mt19937_64 rng = testing::FreshRng(&seed);
  SCOPED_TRACE(seed);
  for (size_t x1_bytes : {size_t{0}, size_t{12}, kLendMinBytes - 4, kLendMinBytes, size_t{64 * 1152 * 4}}) {
    for (size_t x2_bytes : {size_t{8}, size_t{64 * 1152 * 4 + 4}}) {
      SCOPED_TRACE(::testing::Message() << "x1 " << x1_bytes << " B, x2 " << x2_bytes << " B");
      tp::v1::ForwardRequest request;
      request.set_model("seed-\xc3\xa9");
      request.mutable_x1()->add_shape(static_cast<int64_t>(x1_bytes / 4));
      request.mutable_x1()->add_shape(1);
      request.mutable_x1()->set_dtype(tp::v1::DTYPE_FLOAT32);
      request.mutable_x1()->set_data(RandomBytes(x1_bytes, rng));
      request.mutable_x2()->add_shape(static_cast<int64_t>(x2_bytes / 4));
      request.mutable_x2()->set_dtype(tp::v1::DTYPE_FLOAT16);
      request.mutable_x2()->set_data(RandomBytes(x2_bytes, rng));
      request.set_output_dtype(tp::v1::DTYPE_BFLOAT16);
      request.set_precision(tp::v1::PRECISION_TF32);
      SliceLoans loans;
      {
        const grpc::ByteBuffer buffer = EncodeForwardRequest(request, loans);
        const int lent = (x1_bytes >= kLendMinBytes) + (x2_bytes >= kLendMinBytes);
        EXPECT_EQ(loans.outstanding(), lent);
        const std::string bytes = Flatten(buffer);
        EXPECT_EQ(bytes.size(), request.ByteSizeLong());
        tp::v1::ForwardRequest parsed;
        ASSERT_TRUE(parsed.ParseFromString(bytes));
        EXPECT_TRUE(MessageDifferencer::Equals(parsed, request)) << parsed.ShortDebugString().substr(0, 300);
      }
      EXPECT_EQ(loans.outstanding(), 0) << "the buffer is gone: every lent slice must be back";
    }
  }
  // Absent tensors and default fields stay absent.
  tp::v1::ForwardRequest bare;
  bare.set_model("m");
  SliceLoans loans;
  tp::v1::ForwardRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(Flatten(EncodeForwardRequest(bare, loans))));
  EXPECT_TRUE(MessageDifferencer::Equals(parsed, bare));
  EXPECT_FALSE(parsed.has_x1());
}

TEST(BorrowedWire, EchoRequest_ParsesBackToTheSameMessage) {
  std::mt19937_64 rng(7);
  for (size_t n : {size_t{0}, size_t{100}, size_t{589862}}) {
    tp::v1::EchoRequest request;
    request.set_payload(RandomBytes(n, rng));
    request.set_response_bytes(294939);
    SliceLoans loans;
    tp::v1::EchoRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(Flatten(EncodeEchoRequest(request, loans))));
    EXPECT_TRUE(MessageDifferencer::Equals(parsed, request)) << n;
  }
}

// Over loopback: the lent-slice path and the generated stub get the same answers, and a failing
// call with a lent request returns with its slices back.
TEST(BorrowedWire, TpClientForwardAndEcho_MatchTheGeneratedStub) {
  auto server = testing::TestServer::Start();
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  tp::v1::ModelSpec spec = testing::Spec("32x0e+32x1e", "32x0e+32x1e", "32x0e+32x1e");
  ASSERT_TRUE(client->CreateModel("m", spec, nullptr, 5).ok());
  std::mt19937_64 rng(11);
  const int64_t batch = 256, dim = 32 + 96;  // 128 KB per tensor: lent
  std::normal_distribution<double> normal;
  std::vector<double> x1(batch * dim), x2(batch * dim);
  for (double& v : x1) v = normal(rng);
  for (double& v : x2) v = normal(rng);
  tp::v1::ForwardRequest request;
  request.set_model("m");
  *request.mutable_x1() = testing::F32({batch, dim}, x1);
  *request.mutable_x2() = testing::F32({batch, dim}, x2);
  ASSERT_GE(request.x1().data().size(), kLendMinBytes);

  absl::StatusOr<tp::v1::ForwardResponse> lent = client->Forward(request);
  ASSERT_TRUE(lent.ok()) << lent.status();
  tp::v1::ForwardResponse stub;
  auto context = client->NewContext();
  ASSERT_TRUE(client->compute().Forward(context.get(), request, &stub).ok());
  const std::vector<double> a = testing::ToDoubles(lent->out()), b = testing::ToDoubles(stub.out());
  ASSERT_EQ(a.size(), b.size());
  ASSERT_EQ(a.size(), static_cast<size_t>(batch * dim));
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  EXPECT_GT(scale, 0);
  EXPECT_LE(worst, 1e-6 * scale);

  // Unknown model: NOT_FOUND, and the call returns (its lent slices back) so the request may change.
  request.set_model("absent");
  absl::StatusOr<tp::v1::ForwardResponse> missing = client->Forward(request);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  request.mutable_x1()->clear_data();

  tp::v1::EchoRequest echo;
  echo.set_payload(std::string(300000, 'e'));
  echo.set_response_bytes(123457);
  absl::StatusOr<tp::v1::EchoResponse> echoed = client->Echo(echo);
  ASSERT_TRUE(echoed.ok()) << echoed.status();
  EXPECT_EQ(echoed->payload().size(), 123457u);
}

}  // namespace
}  // namespace tpserve::client
