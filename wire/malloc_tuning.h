// Keeps glibc malloc from returning tensor-sized buffers to the kernel after every call.
//
// Each seed-sized call allocates and frees buffers of 0.3-0.6 MB (request strings, results,
// responses). With glibc's defaults those come from mmap or from a heap top that is trimmed on
// free, so every call faults their pages in again: 45-100 minor faults per unary Echo of the seed's
// sizes on the server (grpc-echo-probe on H100 hosts); heaps that keep their pages take ~1.5 per
// call, and the Echo's p50 / p90 drop from 0.55-1.01 / 0.85-1.31 ms to 0.46-0.68 / 0.52-0.79 ms. The price: freed memory stays with the process
// (up to its peak); allocations of 64 MB and more (model weights) still map and unmap.
#pragma once

#include <malloc.h>

namespace tpserve {

inline void KeepLargeBuffersInTheHeap() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  mallopt(M_TOP_PAD, 16 << 20);
}

}  // namespace tpserve
