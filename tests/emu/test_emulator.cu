// The GPU emulator's own checks (tests/emu/README.md): each test makes the mistake the
// emulator is there to catch and expects it caught, so that none of its checks is dead code.
// Built in the emulator build only; the names start with Gpu so the device is present.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "mnist/core/check.h"
#include "mnist/core/device.h"
#include "test_util.h"

namespace mnist {
namespace {

constexpr int kThreads = 256;

// Runs deliberately racy work: under ThreadSanitizer in a child process, which must report the
// race (and so exit with TSan's code, 66); elsewhere here, where only its result can show it.
template <class Racy>
void run_racy(Racy racy) {
  if constexpr (test::kThreadSanitizer) {
    EXPECT_EXIT(
        {
          racy();
          std::exit(0);
        },
        ::testing::ExitedWithCode(66), "WARNING: ThreadSanitizer: data race");
  } else {
    racy();
  }
}

// out[t] = in[(t + 1) % n] through shared memory: right only if every thread has written its
// slot before any reads its neighbour's.
__global__ void rotate_through_shared(const float* in, float* out, bool barrier) {
  __shared__ float slot[kThreads];
  const int t = threadIdx.x;
  slot[t] = in[blockIdx.x * kThreads + t];
  if (barrier) __syncthreads();
  out[blockIdx.x * kThreads + t] = slot[(t + 1) % kThreads];
}

// Every thread writes the same value to one shared variable before the barrier: right in any
// order, but a race all the same (plain writes that CUDA does not order).
__global__ void same_value_to_shared(float* out) {
  __shared__ float value;
  value = 1.f;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = value;
}

// A grid-stride loop that forgot the block offset: every block writes all of x, the same values.
__global__ void every_block_writes_all(float* x, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] = 2.f;
}

// counts[b] = threads of block b, through one shared counter that every thread adds to.
__global__ void count_threads(unsigned int* counts) {
  __shared__ unsigned int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  atomicAdd(&count, 1u);
  __syncthreads();
  if (threadIdx.x == 0) counts[blockIdx.x] = count;
}

__global__ void add_one(float* x, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] += 1.f;
}

int rotation_mismatches(bool barrier, std::mt19937_64& rng) {
  constexpr int kBlocks = 3;
  const std::vector<float> in = test::random_floats(rng, kBlocks * kThreads);
  DeviceBuffer<float> d_in(in), d_out(in.size());
  d_out.fill_bytes(0xFF);
  rotate_through_shared<<<kBlocks, kThreads>>>(d_in.data(), d_out.data(), barrier);
  MNIST_CHECK_LAUNCH();
  const std::vector<float> out = d_out.download();
  int mismatches = 0;
  for (int b = 0; b < kBlocks; ++b)
    for (int t = 0; t < kThreads; ++t)
      mismatches += out[b * kThreads + t] != in[b * kThreads + (t + 1) % kThreads];
  return mismatches;
}

TEST(GpuEmulator, BarrierHoldsEveryThreadOfTheBlock) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (int launch = 0; launch < 3; ++launch) EXPECT_EQ(rotation_mismatches(true, rng), 0) << "launch " << launch;
}

// Whatever the order, the first thread of a block to run reads a slot nobody has written yet.
TEST(GpuEmulator, MissingBarrierShows) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  run_racy([&] { EXPECT_GE(rotation_mismatches(false, rng), 3); });
}

TEST(GpuEmulator, RacingWritesOfOneValueShowUnderThreadSanitizer) {
  MNIST_REQUIRE_GPU();
  if (!test::kThreadSanitizer) GTEST_SKIP() << "the result is right: only ThreadSanitizer (preset tsan) sees this race";
  run_racy([] {
    DeviceBuffer<float> out(2 * kThreads);
    same_value_to_shared<<<2, kThreads>>>(out.data());
    MNIST_CHECK_LAUNCH();
    for (float v : out.download()) ASSERT_EQ(v, 1.f);
  });
}

TEST(GpuEmulator, BlocksWritingTheSameElementsShowUnderThreadSanitizer) {
  MNIST_REQUIRE_GPU();
  if (!test::kThreadSanitizer) GTEST_SKIP() << "the result is right: only ThreadSanitizer (preset tsan) sees this race";
  run_racy([] {
    DeviceBuffer<float> x(100);
    every_block_writes_all<<<3, 32>>>(x.data(), 100);
    MNIST_CHECK_LAUNCH();
    for (float v : x.download()) ASSERT_EQ(v, 2.f);
  });
}

// The orders CUDA gives are no races: atomics, the barrier, and the launch (the host's upload
// before it, its download after). Under ThreadSanitizer a report here fails the test, as it
// does in BarrierHoldsEveryThreadOfTheBlock.
TEST(GpuEmulator, AtomicsBarriersAndLaunchesOrderTheThreads) {
  MNIST_REQUIRE_GPU();
  DeviceBuffer<unsigned int> counts(std::vector<unsigned int>(3, 7u));
  count_threads<<<3, kThreads>>>(counts.data());
  MNIST_CHECK_LAUNCH();
  for (unsigned int c : counts.download()) EXPECT_EQ(c, static_cast<unsigned int>(kThreads));
}

TEST(GpuEmulator, HostPointerArgumentFailsTheLaunch) {
  MNIST_REQUIRE_GPU();
  std::vector<float> host(16, 0.f);
  add_one<<<1, 32>>>(host.data(), 16);
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);
  EXPECT_EQ(host[0], 0.f);  // the kernel did not run
}

TEST(GpuEmulator, EmptyGridAndOversizedBlockAreInvalidConfigurations) {
  MNIST_REQUIRE_GPU();
  DeviceBuffer<float> x(16);
  add_one<<<0, 32>>>(x.data(), 16);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  add_one<<<1, 2048>>>(x.data(), 16);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read once, then cleared
}

TEST(GpuEmulator, FreshDeviceMemoryIsNaN) {
  MNIST_REQUIRE_GPU();
  const DeviceBuffer<float> x(1000);
  for (float v : x.download()) ASSERT_TRUE(std::isnan(v));
}

TEST(GpuEmulator, CopiesMustStayInsideTheirAllocations) {
  MNIST_REQUIRE_GPU();
  DeviceBuffer<float> x(8);
  std::vector<float> host(9);
  EXPECT_EQ(cudaMemcpy(host.data(), x.data(), 9 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(x.data(), host.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), x.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
}

TEST(GpuEmulator, GraphRecordsWithoutRunningAndReplays) {
  MNIST_REQUIRE_GPU();
  Stream stream;
  DeviceBuffer<float> x(std::vector<float>(100, 0.f));
  ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  add_one<<<2, 32, 0, stream.get()>>>(x.data(), 100);
  MNIST_CHECK_LAUNCH();
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaSuccess);
  EXPECT_EQ(x.download()[0], 0.f);  // recorded, not run
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream.get()), cudaSuccess);
  stream.synchronize();
  for (float v : x.download()) ASSERT_EQ(v, 3.f);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

TEST(GpuEmulator, CaptureRefusesAllocationAndSynchronisation) {
  MNIST_REQUIRE_GPU();
  Stream stream;
  for (int call = 0; call < 3; ++call) {
    ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    void* p = nullptr;
    if (call == 0) EXPECT_EQ(cudaMalloc(&p, 64), cudaErrorStreamCaptureUnsupported);
    if (call == 1) EXPECT_EQ(cudaStreamSynchronize(stream.get()), cudaErrorStreamCaptureUnsupported);
    if (call == 2) EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaErrorStreamCaptureInvalidated) << "call " << call;
    EXPECT_EQ(graph, nullptr);
  }
}

TEST(GpuEmulator, LeakedDeviceMemoryFailsTheProcess) {
  MNIST_REQUIRE_GPU();
  EXPECT_EXIT(
      {
        void* p = nullptr;
        if (cudaMalloc(&p, 100) != cudaSuccess) std::exit(2);
        std::exit(0);
      },
      ::testing::ExitedWithCode(1), "1 device allocations \\(100 bytes\\) were never freed");
}

}  // namespace
}  // namespace mnist
