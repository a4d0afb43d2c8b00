// Where a launch's tensors lie in a worker's staging buffers, and in the page-locked buffers the
// core leases to a transport for one call (call_buffers.h): the same layout, so that a lone call's
// inputs go to the device in one copy. Offsets are in floats; each region starts on a 256-byte
// boundary, as a fresh allocation would (the kernels load rows with vector loads).
//
//   inputs:  x1 [samples, dim_in1] | x2 [samples, dim_in2] | grad_out [samples, dim_out] (explicit only)
//   outputs: out [samples, dim_out] | grad_x1 [samples, dim_in1] | grad_x2 [samples, dim_in2] (wanted only)
#pragma once

#include <cstdint>

namespace tpserve::server {

inline constexpr int64_t kStagingAlignFloats = 64;
inline int64_t AlignStagingRegion(int64_t floats) {
  return (floats + kStagingAlignFloats - 1) / kStagingAlignFloats * kStagingAlignFloats;
}

// Which tensors a launch moves (what the request asks for).
struct StagingWants {
  bool grad_out = false;  // an explicit grad_out comes in
  bool out = false;       // out goes back
  bool grad_x1 = false;
  bool grad_x2 = false;
};

struct StagingLayout {
  int64_t x1_at = 0, x2_at = 0, grad_out_at = 0, in_floats = 0;
  int64_t out_at = 0, grad_x1_at = 0, grad_x2_at = 0, out_floats = 0;

  static StagingLayout For(int64_t samples, int64_t dim_in1, int64_t dim_in2, int64_t dim_out, StagingWants want) {
    StagingLayout l;
    l.x2_at = AlignStagingRegion(samples * dim_in1);
    l.grad_out_at = l.x2_at + AlignStagingRegion(samples * dim_in2);
    // Up to the last input's end (no padding after it: a lone call's inputs go over in one copy).
    l.in_floats = want.grad_out ? l.grad_out_at + samples * dim_out : l.x2_at + samples * dim_in2;
    l.grad_x1_at = AlignStagingRegion(want.out ? samples * dim_out : 0);
    l.grad_x2_at = l.grad_x1_at + AlignStagingRegion(want.grad_x1 ? samples * dim_in1 : 0);
    l.out_floats = l.grad_x2_at + (want.grad_x2 ? samples * dim_in2 : 0);
    return l;
  }
};

}  // namespace tpserve::server
