// forward   y  = mask · relu(z + b) / (1 - p)        (b broadcast over rows; relu optional)
// backward  dz = dy · mask / (1 - p) · [z + b > 0]   (mask: Philox(seed, step, layer, r·cols + c) ≥ p·2^24)
//           and, where asked, db[c] = sum_r dz[r, c]  (the layer's bias gradient, in the same pass)
#include <cstdint>
#include <stdexcept>

#include "mnist/core/check.h"
#include "mnist/core/launch.h"
#include "mnist/ops/bias_relu_dropout.cuh"

namespace mnist {
namespace {


using gpu::backward_one;
using gpu::dropout_args;
using gpu::DropoutArgs;
using gpu::forward_one;
using gpu::KeepBitCache;
using gpu::keep_bits;
using gpu::read_step;

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// cols % 4 == 0 and 16-byte aligned pointers: thread-group g is elements 4g..4g+3, one row,
// one float4 of each operand and exactly one Philox block. y may alias z (same thread reads then writes).
__global__ void forward_vec4(const float4* z, const float4* bias, float4* y, std::int64_t groups, std::int64_t cols4,
                             bool relu, DropoutArgs d, const std::int64_t* step_ptr) {
  const std::uint64_t step = read_step(d, step_ptr);
  for (std::int64_t g = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float4 zv = z[g];
    const float4 b = bias[g % cols4];
    const unsigned keep = keep_bits(d, step, static_cast<std::uint64_t>(g));
    y[g] = make_float4(forward_one(zv.x, b.x, keep & 1u, relu, d.scale),
                       forward_one(zv.y, b.y, keep & 2u, relu, d.scale),
                       forward_one(zv.z, b.z, keep & 4u, relu, d.scale),
                       forward_one(zv.w, b.w, keep & 8u, relu, d.scale));
  }
}

__global__ void backward_vec4(const float4* dy, const float4* z, const float4* bias, float4* dz, std::int64_t groups,
                              std::int64_t cols4, bool relu, DropoutArgs d, const std::int64_t* step_ptr) {
  const std::uint64_t step = read_step(d, step_ptr);
  for (std::int64_t g = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float4 dyv = dy[g];
    const float4 zv = z[g];
    const float4 b = bias[g % cols4];
    const unsigned keep = keep_bits(d, step, static_cast<std::uint64_t>(g));
    dz[g] = make_float4(backward_one(dyv.x, zv.x, b.x, keep & 1u, relu, d.scale),
                        backward_one(dyv.y, zv.y, b.y, keep & 2u, relu, d.scale),
                        backward_one(dyv.z, zv.z, b.z, keep & 4u, relu, d.scale),
                        backward_one(dyv.w, zv.w, b.w, keep & 8u, relu, d.scale));
  }
}

// Any shape or alignment: thread-group g is flat elements 4g..4g+3 (one Philox block), scalar
// loads; the column wraps at the end of a row.
__global__ void forward_scalar(const float* z, const float* bias, float* y, std::int64_t n, int cols, bool relu,
                               DropoutArgs d, const std::int64_t* step_ptr) {
  const std::uint64_t step = read_step(d, step_ptr);
  const std::int64_t groups = (n + 3) / 4;
  for (std::int64_t g = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const unsigned keep = keep_bits(d, step, static_cast<std::uint64_t>(g));
    int c = static_cast<int>((4 * g) % cols);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const std::int64_t i = 4 * g + k;
      if (i >= n) break;
      y[i] = forward_one(z[i], bias[c], keep & (1u << k), relu, d.scale);
      if (++c == cols) c = 0;
    }
  }
}

__global__ void backward_scalar(const float* dy, const float* z, const float* bias, float* dz, std::int64_t n,
                                int cols, bool relu, DropoutArgs d, const std::int64_t* step_ptr) {
  const std::uint64_t step = read_step(d, step_ptr);
  const std::int64_t groups = (n + 3) / 4;
  for (std::int64_t g = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const unsigned keep = keep_bits(d, step, static_cast<std::uint64_t>(g));
    int c = static_cast<int>((4 * g) % cols);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const std::int64_t i = 4 * g + k;
      if (i >= n) break;
      dz[i] = backward_one(dy[i], z[i], bias[c], keep & (1u << k), relu, d.scale);
      if (++c == cols) c = 0;
    }
  }
}

// The backward pass with the layer's bias gradient summed as dz is written, so no second launch
// reads dz back (bias_grad.cu's job otherwise). A block is kTeam threads across, each owning
// kColsPerThread consecutive columns, by kSlices row slices: slice s takes rows s, s + kSlices, …
// in order, then slice 0 adds the slices in order. Deterministic; any shape and alignment.
constexpr int kColsPerThread = 4;
constexpr int kTeam = 16;
constexpr int kSlices = 8;
constexpr int kColsPerBlock = kColsPerThread * kTeam;

__global__ void __launch_bounds__(kTeam* kSlices)
    backward_bias_grad(const float* dy, const float* z, const float* bias, float* dz, float* db, int rows, int cols,
                       bool relu, DropoutArgs d, const std::int64_t* step_ptr) {
  __shared__ float partial[kSlices][kTeam][kColsPerThread];
  const std::uint64_t step = read_step(d, step_ptr);
  const int c0 = (blockIdx.x * kTeam + threadIdx.x) * kColsPerThread;
  float b[kColsPerThread], acc[kColsPerThread];
#pragma unroll
  for (int i = 0; i < kColsPerThread; ++i) {
    b[i] = c0 + i < cols ? bias[c0 + i] : 0.f;
    acc[i] = 0.f;
  }
  KeepBitCache keep;
  for (int r = threadIdx.y; r < rows; r += kSlices) {
    const std::size_t row = static_cast<std::size_t>(r) * cols;
#pragma unroll
    for (int i = 0; i < kColsPerThread; ++i) {
      if (c0 + i >= cols) break;
      const std::size_t e = row + c0 + i;
      const float v = backward_one(dy[e], z[e], b[i], keep.bit(d, step, e), relu, d.scale);
      dz[e] = v;  // dy[e] was read first by this thread: dz may alias dy
      acc[i] += v;
    }
  }
#pragma unroll
  for (int i = 0; i < kColsPerThread; ++i) partial[threadIdx.y][threadIdx.x][i] = acc[i];
  __syncthreads();
  if (threadIdx.y != 0) return;
#pragma unroll
  for (int i = 0; i < kColsPerThread; ++i) {
    if (c0 + i >= cols) break;
    float sum = partial[0][threadIdx.x][i];
    for (int s = 1; s < kSlices; ++s) sum += partial[s][threadIdx.x][i];
    db[c0 + i] = sum;
  }
}

}  // namespace

namespace gpu {

void bias_relu_dropout_forward(const float* z, const float* bias, float* y, int rows, int cols, bool relu,
                               DropoutKey key, const std::int64_t* step, cudaStream_t stream) {
  const DropoutArgs d = dropout_args(key);
  const std::int64_t n = static_cast<std::int64_t>(rows) * cols;
  if (n <= 0) return;
  if (cols % 4 == 0 && aligned16(z) && aligned16(bias) && aligned16(y)) {
    forward_vec4<<<grid_blocks(n / 4), kBlockThreads, 0, stream>>>(reinterpret_cast<const float4*>(z),
                                                             reinterpret_cast<const float4*>(bias),
                                                             reinterpret_cast<float4*>(y), n / 4, cols / 4, relu, d,
                                                             step);
  } else {
    forward_scalar<<<grid_blocks((n + 3) / 4), kBlockThreads, 0, stream>>>(z, bias, y, n, cols, relu, d, step);
  }
  MNIST_CHECK_LAUNCH();
}

void bias_relu_dropout_backward(const float* dy, const float* z, const float* bias, float* dz, int rows, int cols,
                                bool relu, DropoutKey key, const std::int64_t* step, cudaStream_t stream, float* db) {
  const DropoutArgs d = dropout_args(key);
  if (db != nullptr) {
    if (cols <= 0) return;
    const int blocks = (cols + kColsPerBlock - 1) / kColsPerBlock;
    backward_bias_grad<<<blocks, dim3(kTeam, kSlices), 0, stream>>>(dy, z, bias, dz, db, rows < 0 ? 0 : rows, cols,
                                                                    relu, d, step);
    MNIST_CHECK_LAUNCH();
    return;
  }
  const std::int64_t n = static_cast<std::int64_t>(rows) * cols;
  if (n <= 0) return;
  if (cols % 4 == 0 && aligned16(dy) && aligned16(z) && aligned16(bias) && aligned16(dz)) {
    backward_vec4<<<grid_blocks(n / 4), kBlockThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(dy), reinterpret_cast<const float4*>(z),
        reinterpret_cast<const float4*>(bias), reinterpret_cast<float4*>(dz), n / 4, cols / 4, relu, d, step);
  } else {
    backward_scalar<<<grid_blocks((n + 3) / 4), kBlockThreads, 0, stream>>>(dy, z, bias, dz, n, cols, relu, d, step);
  }
  MNIST_CHECK_LAUNCH();
}

}  // namespace gpu
}  // namespace mnist
