#include "nn/data/npz.h"

#include <zlib.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace tpserve::nn::data {
namespace {

constexpr uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr uint32_t kZip64EndLocator = 0x07064b50;
constexpr uint32_t kZip64End = 0x06064b50;
constexpr uint32_t kCentralFileHeader = 0x02014b50;
constexpr uint32_t kLocalFileHeader = 0x04034b50;
// A member larger than this is refused before anything is allocated for it.
constexpr uint64_t kMaxMemberBytes = uint64_t{8} << 30;

uint64_t ReadLe(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

absl::Status Bad(const std::string& what, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
}

struct Member {
  std::string name;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed = 0, uncompressed = 0, local_offset = 0;
};

// Zip64 extended information: the 8-byte fields present are those whose 32-bit field is 0xFFFFFFFF.
void ApplyZip64Extra(const std::string& extra, Member& m, bool want_uncompressed, bool want_compressed,
                     bool want_offset) {
  size_t at = 0;
  while (at + 4 <= extra.size()) {
    const uint16_t id = static_cast<uint16_t>(ReadLe(extra, at, 2));
    const uint16_t size = static_cast<uint16_t>(ReadLe(extra, at + 2, 2));
    if (at + 4 + size > extra.size()) return;
    if (id == 0x0001) {
      size_t p = at + 4;
      const size_t end = p + size;
      if (want_uncompressed && p + 8 <= end) m.uncompressed = ReadLe(extra, p, 8), p += 8;
      if (want_compressed && p + 8 <= end) m.compressed = ReadLe(extra, p, 8), p += 8;
      if (want_offset && p + 8 <= end) m.local_offset = ReadLe(extra, p, 8);
      return;
    }
    at += 4 + size;
  }
}

absl::StatusOr<std::vector<Member>> CentralDirectory(const std::string& zip, const std::string& path) {
  if (zip.size() < 22) return Bad(path, "not a zip archive (.npz): shorter than an end-of-central-directory record");
  // The record sits at the end, before a comment of at most 65535 bytes.
  size_t eocd = std::string::npos;
  const size_t lowest = zip.size() >= 22 + 65535 ? zip.size() - 22 - 65535 : 0;
  for (size_t at = zip.size() - 22 + 1; at-- > lowest;) {
    if (ReadLe(zip, at, 4) == kEndOfCentralDirectory) {
      eocd = at;
      break;
    }
  }
  if (eocd == std::string::npos) return Bad(path, "not a zip archive (.npz): no end-of-central-directory record");
  uint64_t entries = ReadLe(zip, eocd + 10, 2);
  uint64_t cd_size = ReadLe(zip, eocd + 12, 4);
  uint64_t cd_offset = ReadLe(zip, eocd + 16, 4);
  if (eocd >= 20 && ReadLe(zip, eocd - 20, 4) == kZip64EndLocator) {
    const uint64_t z64 = ReadLe(zip, eocd - 20 + 8, 8);
    if (z64 + 56 > zip.size() || ReadLe(zip, z64, 4) != kZip64End) {
      return Bad(path, "zip64 end-of-central-directory locator points at no zip64 record");
    }
    entries = ReadLe(zip, z64 + 32, 8);
    cd_size = ReadLe(zip, z64 + 40, 8);
    cd_offset = ReadLe(zip, z64 + 48, 8);
  }
  if (cd_offset > zip.size() || cd_size > zip.size() - cd_offset) {
    return Bad(path, absl::StrCat("central directory [", cd_offset, ", +", cd_size, ") lies outside the ", zip.size(),
                                  "-byte file"));
  }
  std::vector<Member> members;
  size_t at = cd_offset;
  for (uint64_t i = 0; i < entries; ++i) {
    if (at + 46 > cd_offset + cd_size || ReadLe(zip, at, 4) != kCentralFileHeader) {
      return Bad(path, absl::StrCat("central directory entry ", i, " of ", entries, " is malformed"));
    }
    Member m;
    m.method = static_cast<uint16_t>(ReadLe(zip, at + 10, 2));
    m.crc = static_cast<uint32_t>(ReadLe(zip, at + 16, 4));
    m.compressed = ReadLe(zip, at + 20, 4);
    m.uncompressed = ReadLe(zip, at + 24, 4);
    const size_t name_len = ReadLe(zip, at + 28, 2), extra_len = ReadLe(zip, at + 30, 2),
                 comment_len = ReadLe(zip, at + 32, 2);
    m.local_offset = ReadLe(zip, at + 42, 4);
    if (at + 46 + name_len + extra_len + comment_len > cd_offset + cd_size) {
      return Bad(path, absl::StrCat("central directory entry ", i, " runs past the directory"));
    }
    m.name = zip.substr(at + 46, name_len);
    ApplyZip64Extra(zip.substr(at + 46 + name_len, extra_len), m, m.uncompressed == 0xFFFFFFFFu,
                    m.compressed == 0xFFFFFFFFu, m.local_offset == 0xFFFFFFFFu);
    members.push_back(std::move(m));
    at += 46 + name_len + extra_len + comment_len;
  }
  return members;
}

absl::StatusOr<std::string> MemberBytes(const std::string& zip, const Member& m, const std::string& what) {
  if (m.local_offset + 30 > zip.size() || ReadLe(zip, m.local_offset, 4) != kLocalFileHeader) {
    return Bad(what, absl::StrCat("no local file header at offset ", m.local_offset));
  }
  const uint64_t data_at = m.local_offset + 30 + ReadLe(zip, m.local_offset + 26, 2) + ReadLe(zip, m.local_offset + 28, 2);
  if (data_at > zip.size() || m.compressed > zip.size() - data_at) {
    return Bad(what, absl::StrCat(m.compressed, " compressed bytes at offset ", data_at, " run past the end of the file"));
  }
  if (m.uncompressed > kMaxMemberBytes) {
    return Bad(what, absl::StrCat(m.uncompressed, " bytes uncompressed: more than the ", kMaxMemberBytes, " accepted"));
  }
  std::string out;
  if (m.method == 0) {
    if (m.compressed != m.uncompressed) return Bad(what, "stored member whose sizes differ");
    out = zip.substr(data_at, m.compressed);
  } else if (m.method == 8) {
    out.resize(m.uncompressed);
    z_stream stream{};
    if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) return absl::InternalError("zlib inflateInit2 failed");
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zip.data() + data_at));
    stream.avail_in = static_cast<uInt>(m.compressed);
    stream.next_out = reinterpret_cast<Bytef*>(out.data());
    stream.avail_out = static_cast<uInt>(out.size());
    const int rc = inflate(&stream, Z_FINISH);
    const uint64_t produced = stream.total_out;
    inflateEnd(&stream);
    if (rc != Z_STREAM_END || produced != m.uncompressed) {
      return Bad(what, absl::StrCat("deflate stream is corrupt (zlib code ", rc, ", ", produced, " of ", m.uncompressed,
                                    " bytes)"));
    }
  } else {
    return Bad(what, absl::StrCat("compression method ", m.method, "; expected 0 (stored) or 8 (deflate)"));
  }
  const uint32_t crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(out.data()),
                                                   static_cast<uInt>(out.size())));
  if (crc != m.crc) return Bad(what, "CRC-32 mismatch (the archive is damaged)");
  return out;
}

// Parses "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }".
absl::Status ParseHeader(absl::string_view header, NumericArray& array, bool& fortran, const std::string& what) {
  auto value_of = [&](absl::string_view key) -> absl::StatusOr<absl::string_view> {
    const std::string quoted = absl::StrCat("'", key, "'");
    const size_t at = header.find(quoted);
    if (at == absl::string_view::npos) return Bad(what, absl::StrCat(".npy header has no ", quoted));
    absl::string_view rest = header.substr(at + quoted.size());
    rest = absl::StripLeadingAsciiWhitespace(rest);
    if (!absl::ConsumePrefix(&rest, ":")) return Bad(what, absl::StrCat(".npy header: expected ':' after ", quoted));
    return absl::StripLeadingAsciiWhitespace(rest);
  };
  absl::StatusOr<absl::string_view> descr = value_of("descr");
  if (!descr.ok()) return descr.status();
  if (descr->size() < 2 || (*descr)[0] != '\'') return Bad(what, ".npy header: descr is not a simple dtype string");
  const size_t close = descr->find('\'', 1);
  if (close == absl::string_view::npos) return Bad(what, ".npy header: unterminated descr");
  array.descr = std::string(descr->substr(1, close - 1));
  absl::StatusOr<absl::string_view> order = value_of("fortran_order");
  if (!order.ok()) return order.status();
  fortran = absl::StartsWith(*order, "True");
  absl::StatusOr<absl::string_view> shape = value_of("shape");
  if (!shape.ok()) return shape.status();
  if (shape->empty() || (*shape)[0] != '(') return Bad(what, ".npy header: shape is not a tuple");
  const size_t end = shape->find(')');
  if (end == absl::string_view::npos) return Bad(what, ".npy header: unterminated shape");
  for (absl::string_view part : absl::StrSplit(shape->substr(1, end - 1), ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    int64_t extent = 0;
    if (!absl::SimpleAtoi(part, &extent) || extent < 0) {
      return Bad(what, absl::StrCat(".npy header: shape entry '", part, "' is not a non-negative integer"));
    }
    array.shape.push_back(extent);
  }
  return absl::OkStatus();
}

template <typename T>
void Widen(const char* data, size_t n, std::vector<double>& out) {
  out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, data + i * sizeof(T), sizeof(T));
    out[i] = static_cast<double>(v);
  }
}

}  // namespace

absl::StatusOr<NumericArray> ParseNpyBytes(const std::string& bytes, const std::string& what) {
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) return Bad(what, "not a .npy array (no \\x93NUMPY magic)");
  const int major = static_cast<uint8_t>(bytes[6]);
  if (major < 1 || major > 3) return Bad(what, absl::StrCat(".npy format version ", major, "; expected 1, 2 or 3"));
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + len_bytes) return Bad(what, "truncated .npy header");
  const size_t header_len = ReadLe(bytes, 8, static_cast<int>(len_bytes));
  const size_t data_at = 8 + len_bytes + header_len;
  if (data_at > bytes.size()) return Bad(what, "truncated .npy header");
  NumericArray array;
  bool fortran = false;
  const absl::Status header = ParseHeader(absl::string_view(bytes).substr(8 + len_bytes, header_len), array, fortran, what);
  if (!header.ok()) return header;
  if (fortran && array.shape.size() > 1) return Bad(what, "Fortran-order array; expected C order");
  const std::string& d = array.descr;
  const bool little = d.size() == 3 && (d[0] == '<' || d[0] == '|');
  if (!little) return Bad(what, absl::StrCat("dtype '", d, "'; expected a little-endian number (<f8, <f4, <i8, <i4, |u1, ...)"));
  const std::string kind = d.substr(1);
  size_t width = 0;
  if (kind == "f8" || kind == "i8" || kind == "u8") width = 8;
  else if (kind == "f4" || kind == "i4" || kind == "u4") width = 4;
  else if (kind == "i2" || kind == "u2") width = 2;
  else if (kind == "i1" || kind == "u1" || kind == "b1") width = 1;
  else return Bad(what, absl::StrCat("dtype '", d, "'; expected a number (f4, f8, b1, i1-i8, u1-u8)"));
  int64_t numel = 1;
  for (int64_t extent : array.shape) {
    if (extent != 0 && numel > (int64_t{1} << 40) / extent) return Bad(what, "shape too large");
    numel *= extent;
  }
  if (bytes.size() - data_at != static_cast<size_t>(numel) * width) {
    return Bad(what, absl::StrCat("holds ", bytes.size() - data_at, " data bytes; shape and dtype '", d, "' need ",
                                  numel * static_cast<int64_t>(width)));
  }
  const char* p = bytes.data() + data_at;
  const size_t n = static_cast<size_t>(numel);
  array.integral = kind[0] != 'f';
  if (kind == "f8") Widen<double>(p, n, array.values);
  else if (kind == "f4") Widen<float>(p, n, array.values);
  else if (kind == "i8") Widen<int64_t>(p, n, array.values);
  else if (kind == "u8") Widen<uint64_t>(p, n, array.values);
  else if (kind == "i4") Widen<int32_t>(p, n, array.values);
  else if (kind == "u4") Widen<uint32_t>(p, n, array.values);
  else if (kind == "i2") Widen<int16_t>(p, n, array.values);
  else if (kind == "u2") Widen<uint16_t>(p, n, array.values);
  else if (kind == "i1") Widen<int8_t>(p, n, array.values);
  else Widen<uint8_t>(p, n, array.values);
  return array;
}

absl::StatusOr<std::map<std::string, NumericArray>> ReadNpz(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be opened"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string zip = buffer.str();
  absl::StatusOr<std::vector<Member>> members = CentralDirectory(zip, path);
  if (!members.ok()) return members.status();
  std::map<std::string, NumericArray> arrays;
  for (const Member& m : *members) {
    const std::string what = absl::StrCat(path, ": member ", m.name);
    if (!absl::EndsWith(m.name, ".npy")) return Bad(what, "not a .npy member (an .npz holds only .npy files)");
    absl::StatusOr<std::string> bytes = MemberBytes(zip, m, what);
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<NumericArray> array = ParseNpyBytes(*bytes, what);
    if (!array.ok()) return array.status();
    arrays[m.name.substr(0, m.name.size() - 4)] = *std::move(array);
  }
  return arrays;
}

}  // namespace tpserve::nn::data
