// db[c] = sum_r dz[r, c]: column sums of a row-major [rows, cols] matrix, no atomics.
// Fixed shape: slice s sums rows s, s+32, s+64, ... in order, then the 32 slices are added in order.
#include <cstddef>

#include "mnist/core/check.h"
#include "mnist/ops/bias_grad.h"

namespace mnist {
namespace {

constexpr int kColsPerBlock = 32;  // threadIdx.x: a warp reads 32 consecutive floats of one row
constexpr int kSlices = 32;        // threadIdx.y: row slices summed in parallel, then combined

// The summation order depends only on (rows, cols), never on scheduling, so the result is the
// same run to run. It is not the CPU twin's order: see tests/test_bias_grad.cu for the tolerance.
// A block is 1024 threads: the launch bound keeps ptxas at ≤ 64 registers a thread, so the launch
// can never fail with "too many resources requested" (24 today, sm_90).
__global__ void __launch_bounds__(kColsPerBlock* kSlices) bias_grad_kernel(const float* dz, float* db, int rows, int cols) {
  __shared__ float partial[kSlices][kColsPerBlock];
  const int c = blockIdx.x * kColsPerBlock + threadIdx.x;
  float acc = 0.f;
  if (c < cols) {
#pragma unroll 4
    for (int r = threadIdx.y; r < rows; r += kSlices) acc += dz[static_cast<std::size_t>(r) * cols + c];
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float sum = partial[0][threadIdx.x];
    for (int s = 1; s < kSlices; ++s) sum += partial[s][threadIdx.x];
    db[c] = sum;
  }
}

}  // namespace

namespace gpu {

void bias_grad(const float* dz, float* db, int rows, int cols, cudaStream_t stream) {
  if (cols <= 0) return;
  const dim3 block(kColsPerBlock, kSlices);
  const dim3 grid((cols + kColsPerBlock - 1) / kColsPerBlock);
  bias_grad_kernel<<<grid, block, 0, stream>>>(dz, db, rows < 0 ? 0 : rows, cols);
  MNIST_CHECK_LAUNCH();
}

}  // namespace gpu
}  // namespace mnist
