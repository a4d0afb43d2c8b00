// NumPy .npy files (format versions 1.0-3.0), the exchange format of tpctl and the tests:
// little-endian float32 ('<f4') or float64 ('<f8'), C order, any rank.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/tensor.h"

namespace tpserve {

struct NpyArray {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<char> bytes;  // numel * DTypeSize(dtype) bytes, row-major

  int64_t numel() const;
  ConstTensorView view() const { return {bytes.data(), dtype, shape}; }
  TensorView mutable_view() { return {bytes.data(), dtype, shape}; }
  static NpyArray Zeros(DType dtype, std::vector<int64_t> shape);
};

// Errors (INVALID_ARGUMENT / NOT_FOUND) name the file and what was expected, in one line.
absl::StatusOr<NpyArray> ParseNpy(const std::string& contents, const std::string& name_for_errors);
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);
std::string SerializeNpy(const NpyArray& array);
// Writes to a temporary file and renames it into place.
absl::Status WriteNpy(const std::string& path, const NpyArray& array);

// Converts between float32 and float64 (a copy when dtypes already match).
NpyArray ConvertNpy(const NpyArray& array, DType dtype);

}  // namespace tpserve
