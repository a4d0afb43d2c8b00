// MakeBackend's names and the CUDA backend's options: parsed, validated and refused the same way
// for the server, tpctl and tp-bench. Runs without a GPU (options are checked before any device).
#include "kernels/backend_factory.h"

#include "gtest/gtest.h"

namespace tpserve {
namespace {

TEST(BackendFactoryTest, ForwardKernelNames_RoundTrip) {
  using ForwardKernel = CudaBackendOptions::ForwardKernel;
  for (ForwardKernel kernel : {ForwardKernel::kAuto, ForwardKernel::kFactoredMma, ForwardKernel::kFactored3xTf32,
                               ForwardKernel::kGemm}) {
    absl::StatusOr<ForwardKernel> parsed = ParseForwardKernel(ForwardKernelName(kernel));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, kernel);
  }
  absl::StatusOr<ForwardKernel> bad = ParseForwardKernel("wgmma");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'wgmma'"), std::string::npos) << bad.status();
}

TEST(BackendFactoryTest, WeightGradKernelNames_RoundTrip) {
  using WeightGradKernel = CudaBackendOptions::WeightGradKernel;
  for (WeightGradKernel kernel : {WeightGradKernel::kAuto, WeightGradKernel::kMma, WeightGradKernel::kWgmma}) {
    absl::StatusOr<WeightGradKernel> parsed = ParseWeightGradKernel(WeightGradKernelName(kernel));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, kernel);
  }
  absl::StatusOr<WeightGradKernel> bad = ParseWeightGradKernel("gemm");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'gemm': expected auto, mma or wgmma"), std::string::npos) << bad.status();
  CudaBackendOptions options;
  options.weight_grad_kernel = WeightGradKernel::kWgmma;
  EXPECT_NE(DescribeCudaBackendOptions(options).find(" weight_grad_kernel=wgmma"), std::string::npos);
}

TEST(BackendFactoryTest, OptionsOutOfRange_AreRefusedNamingTheField) {
  EXPECT_TRUE(ValidateCudaBackendOptions({}).ok());
  CudaBackendOptions cols;
  cols.factored_warp_cols = 24;
  absl::Status status = ValidateCudaBackendOptions(cols);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("factored_warp_cols 24: expected 16 or 32"), std::string::npos) << status;
  CudaBackendOptions blocks;
  blocks.factored_blocks_per_sm = -1;
  EXPECT_EQ(ValidateCudaBackendOptions(blocks).code(), absl::StatusCode::kInvalidArgument);
  blocks.factored_blocks_per_sm = 65;
  EXPECT_EQ(ValidateCudaBackendOptions(blocks).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DescribeCudaBackendOptions({}),
            "forward_kernel=auto factored_warp_cols=32 factored_blocks_per_sm=auto weight_grad_kernel=auto");
}

TEST(BackendFactoryTest, CpuBackend_HasNoStreamsOfItsOwn) {
  absl::StatusOr<std::unique_ptr<Backend>> cpu = MakeBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name(), "cpu");
  absl::StatusOr<void*> stream = (*cpu)->CreateStream();
  ASSERT_TRUE(stream.ok()) << stream.status();
  EXPECT_EQ(*stream, nullptr);
  (*cpu)->DestroyStream(*stream);
}

// cpu:N: CPU backends named as distinct devices (stand-ins for several GPUs in tests).
TEST(BackendFactoryTest, CpuN_NamesTheBackendAsItsOwnDevice) {
  absl::StatusOr<std::unique_ptr<Backend>> zero = MakeBackend("cpu:0"), one = MakeBackend("cpu:1");
  ASSERT_TRUE(zero.ok() && one.ok()) << zero.status() << " " << one.status();
  EXPECT_EQ((*zero)->name(), "cpu:0");
  EXPECT_EQ((*one)->name(), "cpu:1");
  EXPECT_EQ((*one)->memory_space(), MemorySpace::kHost);
  absl::Status bad = MakeBackend("cpu:x").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("expected cpu:<index>"), std::string::npos) << bad;
  EXPECT_EQ(MakeBackend("cpu:-1").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BackendFactoryTest, BadNames_AreRefusedWithTheExpectedSpelling) {
  EXPECT_EQ(MakeBackend("gpu").status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status status = MakeBackend("cuda:x").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("expected cuda:<device index>"), std::string::npos) << status;
}

TEST(BackendFactoryTest, CudaBackend_RefusesBadOptionsBeforeLookingForADevice) {
  CudaBackendOptions options;
  options.factored_warp_cols = 7;
  absl::Status status = MakeBackend("cuda:0", options).status();
  if (status.message().find("no CUDA support") != std::string::npos) GTEST_SKIP() << "built without CUDA";
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("factored_warp_cols 7"), std::string::npos) << status;
}

}  // namespace
}  // namespace tpserve
