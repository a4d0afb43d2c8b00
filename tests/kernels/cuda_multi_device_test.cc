// The CUDA backend's methods for several devices (issue 23): AddScaled, FillZero, CopyFromPeer on
// one device (two backends, as two workers of one GPU) and between two GPUs (a peer copy where the
// devices can access each other, else CopyAcrossBackends stages through the host). Skips without
// a GPU; the two-GPU test skips with fewer than two.
#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace tpserve {
namespace {

constexpr int64_t kN = (1 << 20) + 3;  // not a multiple of the kernel's block

std::vector<float> Ramp(float scale) {
  std::vector<float> v(kN);
  for (int64_t i = 0; i < kN; ++i) v[i] = scale * static_cast<float>(i % 1000) - 3.0f;
  return v;
}

std::unique_ptr<BackendBuffer> Upload(Backend& backend, const std::vector<float>& values) {
  auto buffer = backend.Allocate(values.size() * sizeof(float));
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_TRUE(backend.CopyFromHost((*buffer)->data(), values.data(), values.size() * sizeof(float), {}).ok());
  EXPECT_TRUE(backend.Synchronize({}).ok());
  return *std::move(buffer);
}

std::vector<float> Download(Backend& backend, const BackendBuffer& buffer) {
  std::vector<float> values(buffer.bytes() / sizeof(float));
  EXPECT_TRUE(backend.CopyToHost(values.data(), buffer.data(), buffer.bytes(), {}).ok());
  EXPECT_TRUE(backend.Synchronize({}).ok());
  return values;
}

TEST(CudaMultiDeviceTest, OneDevice_AddScaledFillZeroAndCopiesBetweenTwoBackends) {
  if (CudaBackend::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  auto a = CudaBackend::Create(0), b = CudaBackend::Create(0);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
  const std::vector<float> x = Ramp(0.25f), y = Ramp(-0.5f);
  auto dx = Upload(**a, x), dy = Upload(**a, y);
  ASSERT_TRUE((*a)->AddScaled(static_cast<float*>(dy->data()), static_cast<const float*>(dx->data()), kN, 2.0f, {}).ok());
  std::vector<float> sum = Download(**a, *dy);
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(sum[i], y[i] + 2.0f * x[i]) << i;

  // Same device, another backend: a device-to-device copy (the "peer" path).
  auto into = Upload(**b, std::vector<float>(kN, 7.0f));
  std::vector<char> staging;
  absl::StatusOr<CopyPath> path =
      CopyAcrossBackends(**b, into->data(), {}, **a, dx->data(), {}, kN * sizeof(float), staging);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, CopyPath::kPeer);
  EXPECT_EQ(Download(**b, *into), x);

  // From the CPU backend: no direct path, staged through the host.
  CpuBackend cpu;
  const std::vector<float> host = Ramp(1.5f);
  path = CopyAcrossBackends(**b, into->data(), {}, cpu, host.data(), {}, kN * sizeof(float), staging);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, CopyPath::kHost);
  EXPECT_EQ(Download(**b, *into), host);

  ASSERT_TRUE((*b)->FillZero(into->data(), into->bytes(), {}).ok());
  ASSERT_TRUE((*b)->Synchronize({}).ok());
  for (float v : Download(**b, *into)) ASSERT_EQ(v, 0.0f);
}

TEST(CudaMultiDeviceTest, TwoDevices_CopyIsPeerToPeerWhereTheDevicesCanAccessEachOther) {
  if (CudaBackend::DeviceCount() < 2) GTEST_SKIP() << "fewer than two CUDA devices";
  auto gpu0 = CudaBackend::Create(0), gpu1 = CudaBackend::Create(1);
  ASSERT_TRUE(gpu0.ok() && gpu1.ok()) << gpu0.status() << " " << gpu1.status();
  int can = 0;
  ASSERT_EQ(cudaDeviceCanAccessPeer(&can, 0, 1), cudaSuccess);
  const std::vector<float> x = Ramp(0.75f);
  auto src = Upload(**gpu1, x);
  auto dst = Upload(**gpu0, std::vector<float>(kN, 0.0f));
  auto stream = (*gpu1)->CreateStream();
  ASSERT_TRUE(stream.ok());
  ExecutionContext on_gpu1;
  on_gpu1.stream = *stream;
  std::vector<char> staging;
  absl::StatusOr<CopyPath> path =
      CopyAcrossBackends(**gpu0, dst->data(), {}, **gpu1, src->data(), on_gpu1, kN * sizeof(float), staging);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, can ? CopyPath::kPeer : CopyPath::kHost);
  EXPECT_EQ(Download(**gpu0, *dst), x);
  // And back, summed on gpu:1: x + x.
  ASSERT_TRUE((*gpu1)->AddScaled(static_cast<float*>(src->data()), static_cast<const float*>(src->data()), kN, 1.0f,
                                 on_gpu1)
                  .ok());
  ASSERT_TRUE((*gpu1)->Synchronize(on_gpu1).ok());
  std::vector<float> doubled = Download(**gpu1, *src);
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(doubled[i], 2.0f * x[i]) << i;
  (*gpu1)->DestroyStream(*stream);
}

}  // namespace
}  // namespace tpserve
