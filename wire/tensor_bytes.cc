#include "wire/tensor_bytes.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian; so must the host be");

namespace tpserve::wire {
namespace {

float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mantissa & 0x3ff) << 13;
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | mantissa << 13;
  } else {
    bits = sign | (exponent + 127 - 15) << 23 | mantissa << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00);  // overflow to inf
  if (abs < 0x38800000u) {                                                // subnormal or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t shift = 113 - (abs >> 23);
    uint32_t mantissa = (abs & 0x7fffff) | 0x800000;
    uint32_t half = mantissa >> (shift + 13);
    uint32_t rest = mantissa & ((1u << (shift + 13)) - 1);
    uint32_t midpoint = 1u << (shift + 12);
    if (rest > midpoint || (rest == midpoint && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t rounded = abs + 0xfff + ((abs >> 13) & 1);  // round to nearest even
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

float Bf16ToFloat(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

size_t VarintSize(uint64_t value) {
  size_t n = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++n;
  }
  return n;
}

constexpr int kLengthDelimited = 2;
constexpr int kTensorData = 3;  // tp.v1.Tensor.data

}  // namespace

void AppendLengthDelimitedTag(int field, uint64_t length, std::string* out) {
  AppendVarint((static_cast<uint64_t>(field) << 3) | kLengthDelimited, out);
  AppendVarint(length, out);
}

void AppendTensorHead(int field, const tp::v1::Tensor& meta, size_t data_bytes, std::string* out) {
  const std::string meta_bytes = meta.SerializeAsString();
  const uint64_t data_field = data_bytes == 0 ? 0 : VarintSize((kTensorData << 3) | kLengthDelimited) +
                                                        VarintSize(data_bytes) + data_bytes;
  AppendLengthDelimitedTag(field, meta_bytes.size() + data_field, out);
  *out += meta_bytes;
  if (data_bytes > 0) AppendLengthDelimitedTag(kTensorData, data_bytes, out);
}

size_t DTypeSize(tp::v1::DType dtype) {
  switch (dtype) {
    case tp::v1::DTYPE_FLOAT32: return 4;
    case tp::v1::DTYPE_FLOAT64: return 8;
    case tp::v1::DTYPE_FLOAT16:
    case tp::v1::DTYPE_BFLOAT16: return 2;
    default: return 0;
  }
}

const char* DTypeName(tp::v1::DType dtype) {
  switch (dtype) {
    case tp::v1::DTYPE_FLOAT32: return "float32";
    case tp::v1::DTYPE_FLOAT64: return "float64";
    case tp::v1::DTYPE_FLOAT16: return "float16";
    case tp::v1::DTYPE_BFLOAT16: return "bfloat16";
    default: return "unspecified";
  }
}

absl::StatusOr<std::vector<float>> BytesToFloats(tp::v1::DType dtype, const std::string& bytes, const char* what,
                                                 int64_t expected_elements) {
  size_t size = DTypeSize(dtype);
  if (size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": dtype ", static_cast<int>(dtype), " is not one of float32, float64, float16, bfloat16"));
  }
  if (bytes.size() % size != 0 ||
      (expected_elements >= 0 && bytes.size() != static_cast<size_t>(expected_elements) * size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", bytes.size(), " bytes of ", DTypeName(dtype), "; expected ",
                     expected_elements >= 0 ? absl::StrCat(expected_elements * static_cast<int64_t>(size))
                                            : absl::StrCat("a multiple of ", size),
                     " bytes"));
  }
  size_t n = bytes.size() / size;
  std::vector<float> values(n);
  const char* p = bytes.data();
  switch (dtype) {
    case tp::v1::DTYPE_FLOAT32:
      std::memcpy(values.data(), p, n * 4);
      break;
    case tp::v1::DTYPE_FLOAT64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        values[i] = static_cast<float>(d);
      }
      break;
    case tp::v1::DTYPE_FLOAT16:
    case tp::v1::DTYPE_BFLOAT16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        values[i] = dtype == tp::v1::DTYPE_FLOAT16 ? HalfToFloat(h) : Bf16ToFloat(h);
      }
      break;
    default:
      break;
  }
  return values;
}

void FloatsToBytes(const float* data, size_t n, tp::v1::DType dtype, std::string* out) {
  size_t start = out->size();
  switch (dtype) {
    case tp::v1::DTYPE_FLOAT64: {
      out->resize(start + 8 * n);
      char* p = out->data() + start;
      for (size_t i = 0; i < n; ++i) {
        double d = data[i];
        std::memcpy(p + 8 * i, &d, 8);
      }
      break;
    }
    case tp::v1::DTYPE_FLOAT16:
    case tp::v1::DTYPE_BFLOAT16: {
      out->resize(start + 2 * n);
      char* p = out->data() + start;
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = dtype == tp::v1::DTYPE_FLOAT16 ? FloatToHalf(data[i]) : FloatToBf16(data[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      break;
    }
    default:  // float32
      out->append(reinterpret_cast<const char*>(data), 4 * n);
      break;
  }
}

int64_t ShapeElements(const tp::v1::Tensor& tensor) {
  int64_t numel = 1;
  for (int64_t extent : tensor.shape()) {
    if (extent < 0 || extent > (int64_t{1} << 40) || numel > (int64_t{1} << 40) / std::max<int64_t>(extent, 1)) {
      return -1;
    }
    numel *= extent;
  }
  return numel;
}

}  // namespace tpserve::wire
