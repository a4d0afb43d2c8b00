#include "client/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace tpserve {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

absl::Status Invalid(const std::string& name, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", why));
}

// Finds the value text of 'key' in the header dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }".
bool FindValue(absl::string_view header, absl::string_view key, absl::string_view* value) {
  const std::string quoted_single = absl::StrCat("'", key, "'");
  const std::string quoted_double = absl::StrCat("\"", key, "\"");
  size_t at = header.find(quoted_single);
  size_t key_size = quoted_single.size();
  if (at == absl::string_view::npos) {
    at = header.find(quoted_double);
    key_size = quoted_double.size();
  }
  if (at == absl::string_view::npos) return false;
  absl::string_view rest = header.substr(at + key_size);
  rest = absl::StripLeadingAsciiWhitespace(rest);
  if (!absl::ConsumePrefix(&rest, ":")) return false;
  rest = absl::StripLeadingAsciiWhitespace(rest);
  size_t end = 0;
  if (!rest.empty() && rest[0] == '(') {
    end = rest.find(')');
    if (end == absl::string_view::npos) return false;
    ++end;
  } else if (!rest.empty() && (rest[0] == '\'' || rest[0] == '"')) {
    end = rest.find(rest[0], 1);
    if (end == absl::string_view::npos) return false;
    ++end;
  } else {
    end = rest.find_first_of(",}");
    if (end == absl::string_view::npos) return false;
  }
  *value = absl::StripAsciiWhitespace(rest.substr(0, end));
  return true;
}

}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

NpyArray NpyArray::Zeros(DType dtype, std::vector<int64_t> shape) {
  NpyArray array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.bytes.assign(static_cast<size_t>(array.numel()) * DTypeSize(dtype), 0);
  return array;
}

absl::StatusOr<NpyArray> ParseNpy(const std::string& contents, const std::string& name) {
  if (contents.size() < kMagicSize + 4 || std::memcmp(contents.data(), kMagic, kMagicSize) != 0) {
    return Invalid(name, "not a NumPy .npy file (expected the \\x93NUMPY magic)");
  }
  const int major = static_cast<unsigned char>(contents[6]);
  size_t header_size = 0, header_start = 0;
  if (major == 1) {
    header_size = static_cast<unsigned char>(contents[8]) | (static_cast<unsigned char>(contents[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (contents.size() < 12) return Invalid(name, "truncated .npy header");
    header_size = 0;
    for (int b = 3; b >= 0; --b) header_size = (header_size << 8) | static_cast<unsigned char>(contents[8 + b]);
    header_start = 12;
  } else {
    return Invalid(name, absl::StrCat(".npy format version ", major, " (expected 1, 2 or 3)"));
  }
  if (contents.size() < header_start + header_size) return Invalid(name, "truncated .npy header");
  absl::string_view header(contents.data() + header_start, header_size);

  absl::string_view descr, fortran, shape_text;
  if (!FindValue(header, "descr", &descr) || !FindValue(header, "fortran_order", &fortran) ||
      !FindValue(header, "shape", &shape_text)) {
    return Invalid(name, "malformed .npy header (expected descr, fortran_order and shape)");
  }
  NpyArray array;
  if (descr == "'<f4'" || descr == "\"<f4\"") {
    array.dtype = DType::kFloat32;
  } else if (descr == "'<f8'" || descr == "\"<f8\"") {
    array.dtype = DType::kFloat64;
  } else {
    return Invalid(name, absl::StrCat("dtype ", descr, " (expected little-endian float32 '<f4' or float64 '<f8')"));
  }
  if (fortran != "False") return Invalid(name, "Fortran-ordered array (expected C order)");
  absl::string_view dims = shape_text;
  if (!absl::ConsumePrefix(&dims, "(") || !absl::ConsumeSuffix(&dims, ")")) {
    return Invalid(name, absl::StrCat("shape ", shape_text, " (expected a tuple)"));
  }
  for (absl::string_view dim : absl::StrSplit(dims, ',', absl::SkipWhitespace())) {
    int64_t size = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(dim), &size) || size < 0) {
      return Invalid(name, absl::StrCat("shape ", shape_text, " (expected non-negative integers)"));
    }
    array.shape.push_back(size);
  }
  const size_t data_start = header_start + header_size;
  const size_t want = static_cast<size_t>(array.numel()) * DTypeSize(array.dtype);
  if (contents.size() - data_start != want) {
    return Invalid(name, absl::StrCat("holds ", contents.size() - data_start, " data bytes, expected ", want,
                                      " for ", DTypeName(array.dtype), " ", ShapeString(array.shape)));
  }
  array.bytes.assign(contents.begin() + data_start, contents.end());
  return array;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (expected a readable .npy file)"));
  std::ostringstream contents;
  contents << in.rdbuf();
  return ParseNpy(contents.str(), path);
}

std::string SerializeNpy(const NpyArray& array) {
  std::string shape = absl::StrJoin(array.shape, ", ");
  if (array.shape.size() == 1) shape += ",";
  std::string header = absl::StrCat("{'descr': '", array.dtype == DType::kFloat32 ? "<f4" : "<f8",
                                    "', 'fortran_order': False, 'shape': (", shape, "), }");
  // Pad with spaces so that the data starts on a 64-byte boundary; the header ends in '\n'.
  const size_t unpadded = kMagicSize + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string out(kMagic, kMagicSize);
  out.push_back(1);
  out.push_back(0);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>((header.size() >> 8) & 0xff));
  out += header;
  out.append(array.bytes.data(), array.bytes.size());
  return out;
}

absl::Status WriteNpy(const std::string& path, const NpyArray& array) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
    const std::string contents = SerializeNpy(array);
    out.write(contents.data(), contents.size());
    if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return absl::DataLossError(absl::StrCat(path, ": rename failed"));
  return absl::OkStatus();
}

NpyArray ConvertNpy(const NpyArray& array, DType dtype) {
  if (array.dtype == dtype) return array;
  NpyArray out = NpyArray::Zeros(dtype, array.shape);
  const int64_t n = array.numel();
  if (dtype == DType::kFloat64) {
    const float* src = reinterpret_cast<const float*>(array.bytes.data());
    double* dst = reinterpret_cast<double*>(out.bytes.data());
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
  } else {
    const double* src = reinterpret_cast<const double*>(array.bytes.data());
    float* dst = reinterpret_cast<float*>(out.bytes.data());
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  }
  return out;
}

}  // namespace tpserve
