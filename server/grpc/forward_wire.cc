#include "server/grpc/forward_wire.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "server/grpc/tensor_codec.h"

namespace tpserve::wire {
namespace {

constexpr int kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

// A read position in a message split into pieces. Every read fails (returns false) past `limit`.
class Cursor {
 public:
  explicit Cursor(absl::Span<const absl::string_view> pieces) : pieces_(pieces) {
    for (absl::string_view p : pieces) limit_ += p.size();
  }

  size_t offset() const { return offset_; }
  size_t limit() const { return limit_; }
  bool at_limit() const { return offset_ == limit_; }
  // Narrows reads to the next `size` bytes (a sub-message); returns the previous limit.
  bool PushLimit(size_t size, size_t* previous) {
    if (size > limit_ - offset_) return false;
    *previous = limit_;
    limit_ = offset_ + size;
    return true;
  }
  void PopLimit(size_t previous) { limit_ = previous; }

  bool ReadByte(uint8_t* byte) {
    if (offset_ >= limit_) return false;
    while (in_piece_ >= pieces_[piece_].size()) {
      ++piece_;
      in_piece_ = 0;
    }
    *byte = static_cast<uint8_t>(pieces_[piece_][in_piece_++]);
    ++offset_;
    return true;
  }
  bool ReadVarint(uint64_t* value) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t byte;
      if (!ReadByte(&byte)) return false;
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *value = v;
        return true;
      }
    }
    return false;  // over 10 bytes
  }
  bool Skip(size_t n) {
    if (n > limit_ - offset_) return false;
    offset_ += n;
    while (n > 0) {
      const size_t here = pieces_[piece_].size() - in_piece_;
      if (n < here) {
        in_piece_ += n;
        return true;
      }
      n -= here;
      ++piece_;
      in_piece_ = 0;
    }
    return true;
  }
  bool ReadString(size_t n, std::string* out) {
    if (n > limit_ - offset_) return false;
    out->resize(n);
    CopyWireBytes(pieces_, {offset_, n}, out->data());
    return Skip(n);
  }

 private:
  absl::Span<const absl::string_view> pieces_;
  size_t piece_ = 0, in_piece_ = 0;  // the next byte
  size_t offset_ = 0, limit_ = 0;
};

bool ReadLength(Cursor& in, uint64_t* length) {
  return in.ReadVarint(length) && *length <= in.limit() - in.offset();
}

// A Tensor message of `length` bytes at the cursor: shape, dtype into `header`, data located.
bool ParseTensor(Cursor& in, uint64_t length, tp::v1::Tensor* header, WireBytes* data) {
  size_t outer;
  if (!in.PushLimit(length, &outer)) return false;
  *data = {};
  while (!in.at_limit()) {
    uint64_t key, value;
    if (!in.ReadVarint(&key)) return false;
    const uint64_t field = key >> 3;
    const int wire_type = static_cast<int>(key & 7);
    if (field == 1 && wire_type == kLengthDelimited) {  // shape, packed
      uint64_t bytes;
      if (!ReadLength(in, &bytes)) return false;
      const size_t end = in.offset() + bytes;
      while (in.offset() < end) {
        if (!in.ReadVarint(&value) || in.offset() > end) return false;
        header->add_shape(static_cast<int64_t>(value));
      }
    } else if (field == 1 && wire_type == kVarint) {  // shape, one element unpacked
      if (!in.ReadVarint(&value)) return false;
      header->add_shape(static_cast<int64_t>(value));
    } else if (field == 2 && wire_type == kVarint) {
      if (!in.ReadVarint(&value)) return false;
      header->set_dtype(static_cast<tp::v1::DType>(static_cast<int32_t>(value)));
    } else if (field == 3 && wire_type == kLengthDelimited) {  // the last one counts, as in protobuf
      uint64_t bytes;
      if (!ReadLength(in, &bytes)) return false;
      *data = {in.offset(), static_cast<size_t>(bytes)};
      if (!in.Skip(bytes)) return false;
    } else {
      return false;
    }
  }
  in.PopLimit(outer);
  return true;
}

}  // namespace

bool ParseForwardRequest(absl::Span<const absl::string_view> pieces, ForwardRequestView* view) {
  Cursor in(pieces);
  view->header.Clear();
  view->x1_data = {};
  view->x2_data = {};
  bool seen_x1 = false, seen_x2 = false;
  while (!in.at_limit()) {
    uint64_t key, value;
    if (!in.ReadVarint(&key)) return false;
    const uint64_t field = key >> 3;
    const int wire_type = static_cast<int>(key & 7);
    if (field == 1 && wire_type == kLengthDelimited) {
      uint64_t bytes;
      if (!ReadLength(in, &bytes) || !in.ReadString(bytes, view->header.mutable_model())) return false;
      // Protobuf checks every occurrence of a proto3 string for UTF-8 (not only the last, which
      // is the one kept): ASCII passes, anything else is left to it.
      const std::string& model = view->header.model();
      if (!std::all_of(model.begin(), model.end(), [](char c) { return (c & 0x80) == 0; })) return false;
    } else if ((field == 2 || field == 3) && wire_type == kLengthDelimited) {
      bool& seen = field == 2 ? seen_x1 : seen_x2;
      if (seen) return false;  // protobuf would merge the two: leave that to it
      seen = true;
      uint64_t bytes;
      if (!ReadLength(in, &bytes)) return false;
      tp::v1::Tensor* header = field == 2 ? view->header.mutable_x1() : view->header.mutable_x2();
      if (!ParseTensor(in, bytes, header, field == 2 ? &view->x1_data : &view->x2_data)) return false;
    } else if (field == 4 && wire_type == kVarint) {
      if (!in.ReadVarint(&value)) return false;
      view->header.set_output_dtype(static_cast<tp::v1::DType>(static_cast<int32_t>(value)));
    } else if (field == 5 && wire_type == kVarint) {
      if (!in.ReadVarint(&value)) return false;
      view->header.set_precision(static_cast<tp::v1::Precision>(static_cast<int32_t>(value)));
    } else {
      return false;  // unknown field, wrong wire type, group, or field number 0
    }
  }
  return true;
}

void CopyWireBytes(absl::Span<const absl::string_view> pieces, WireBytes bytes, void* dst) {
  char* out = static_cast<char*>(dst);
  size_t skip = bytes.offset, left = bytes.size;
  for (absl::string_view piece : pieces) {
    if (left == 0) break;
    if (skip >= piece.size()) {
      skip -= piece.size();
      continue;
    }
    const size_t n = std::min(piece.size() - skip, left);
    std::memcpy(out, piece.data() + skip, n);
    out += n;
    left -= n;
    skip = 0;
  }
}

std::string EncodeForwardResponseHead(const tp::v1::ForwardResponse& fields, size_t data_bytes) {
  tp::v1::ForwardResponse rest = fields;
  rest.clear_out();
  std::string head = rest.SerializeAsString();
  AppendTensorHead(1, fields.out(), data_bytes, &head);  // ForwardResponse.out; its data follows
  return head;
}

bool SplitOutField(absl::Span<const absl::string_view> pieces, int field, std::string* rest,
                   std::vector<WireBytes>* occurrences) {
  Cursor in(pieces);
  rest->clear();
  occurrences->clear();
  while (!in.at_limit()) {
    const size_t start = in.offset();
    uint64_t key, value;
    if (!in.ReadVarint(&key)) return false;
    const uint64_t number = key >> 3;
    const int wire_type = static_cast<int>(key & 7);
    if (number == 0) return false;
    if (number == static_cast<uint64_t>(field) && wire_type != kLengthDelimited) return false;
    switch (wire_type) {
      case kVarint:
        if (!in.ReadVarint(&value)) return false;
        break;
      case kFixed64:
        if (!in.Skip(8)) return false;
        break;
      case kFixed32:
        if (!in.Skip(4)) return false;
        break;
      case kLengthDelimited: {
        uint64_t bytes;
        if (!ReadLength(in, &bytes)) return false;
        if (number == static_cast<uint64_t>(field)) {
          occurrences->push_back({in.offset(), static_cast<size_t>(bytes)});
          if (!in.Skip(bytes)) return false;
          continue;  // located, not copied
        }
        if (!in.Skip(bytes)) return false;
        break;
      }
      default:
        return false;  // groups
    }
    const size_t size = in.offset() - start;
    rest->resize(rest->size() + size);
    CopyWireBytes(pieces, {start, size}, rest->data() + rest->size() - size);
  }
  return true;
}

}  // namespace tpserve::wire
