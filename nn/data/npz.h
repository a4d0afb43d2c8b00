// NumPy .npz archives (numpy.savez / savez_compressed: a zip of .npy files) read into numeric
// arrays, with no dependency beyond zlib.
//
// Zip: the central directory is read from the end-of-central-directory record (zip64 records and
// extra fields included, which numpy writes for every member); members are stored (method 0) or
// deflated (method 8, raw deflate through zlib) and their CRC-32 is checked.
// .npy: format versions 1.0-3.0, C order, little-endian (or single-byte) dtypes b1, i1, u1, i2,
// u2, i4, u4, i8, u8, f4, f8; values are widened to double (integers exactly up to 2^53).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve::nn::data {

struct NumericArray {
  std::string descr;            // the .npy dtype, e.g. "<f8", "|u1"
  std::vector<int64_t> shape;   // outermost first
  std::vector<double> values;   // product(shape) values, row-major
  bool integral = false;        // the dtype is an integer or bool type
};

// Every member of the archive, keyed by its name without ".npy". INVALID_ARGUMENT naming the
// file and the member (and what was expected) for anything malformed; NOT_FOUND when the file
// cannot be opened.
absl::StatusOr<std::map<std::string, NumericArray>> ReadNpz(const std::string& path);
// One .npy file's bytes; errors name `what` (e.g. "qm9.npz: R.npy").
absl::StatusOr<NumericArray> ParseNpyBytes(const std::string& bytes, const std::string& what);

}  // namespace tpserve::nn::data
