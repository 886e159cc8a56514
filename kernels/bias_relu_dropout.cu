// forward   y  = mask · relu(z + b) / (1 - p)        (b broadcast over rows; relu optional)
// backward  dz = dy · mask / (1 - p) · [z + b > 0]   (mask: Philox(seed, step, layer, r·cols + c) ≥ p·2^24)
#include <cstdint>
#include <stdexcept>

#include "mnist/check.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/philox.h"

namespace mnist {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = 4096;  // grid-stride beyond this (H100: 132 SMs × 8 blocks of 256, ×4)

struct DropoutArgs {
  std::uint64_t seed;
  std::uint32_t layer;
  std::uint32_t threshold;  // an element is dropped when its 24-bit draw is below this; 0 keeps all
  float scale;              // 1 / (1 - p), exactly 1 when p == 0 (the same float as the CPU twin)
};

DropoutArgs dropout_args(const DropoutKey& key) {
  if (!(key.p >= 0.f && key.p < 1.f)) throw std::invalid_argument("bias_relu_dropout: dropout p must be in [0, 1)");
  return {key.seed, key.layer, dropout_threshold(key.p), key.p > 0.f ? 1.0f / (1.0f - key.p) : 1.0f};
}

int blocks_for(std::int64_t work) {
  const std::int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// The step is read on the device so a captured graph draws a fresh mask every step. With
// dropout off it is not read at all (the caller may pass a null step for evaluation).
__device__ __forceinline__ std::uint64_t read_step(const DropoutArgs& d, const std::int64_t* step) {
  return d.threshold != 0 ? static_cast<std::uint64_t>(*step) : 0;
}

// Keep bits (bit k for element 4·block + k) of one Philox block. The backward pass recomputes
// them instead of storing a mask: no mask buffer to write and read back (memory traffic is the
// whole cost of this op), and the CPU twin draws the identical bits from the same key.
// philox_word draws all four words of a block and returns one; here one Philox call serves four
// elements (dropout_keep_bits), because ten Philox rounds per element would make this op
// compute-bound. GpuBiasReluDropout checks the masks bit-exact against dropout_keep.
__device__ __forceinline__ unsigned keep_bits(const DropoutArgs& d, std::uint64_t step, std::uint64_t block) {
  return dropout_keep_bits(d.seed, step, d.layer, block, d.threshold);
}

__device__ __forceinline__ float forward_one(float z, float b, unsigned keep, bool relu, float scale) {
  float v = z + b;
  if (relu && !(v > 0.f)) v = 0.f;
  return keep ? v * scale : 0.f;
}
__device__ __forceinline__ float backward_one(float dy, float z, float b, unsigned keep, bool relu, float scale) {
  const float v = z + b;
  return (keep && (!relu || v > 0.f)) ? dy * scale : 0.f;
}

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

}  // namespace

namespace gpu {

void bias_relu_dropout_forward(const float* z, const float* bias, float* y, int rows, int cols, bool relu,
                               DropoutKey key, const std::int64_t* step, cudaStream_t stream) {
  const DropoutArgs d = dropout_args(key);
  const std::int64_t n = static_cast<std::int64_t>(rows) * cols;
  if (n <= 0) return;
  if (cols % 4 == 0 && aligned16(z) && aligned16(bias) && aligned16(y)) {
    forward_vec4<<<blocks_for(n / 4), kThreads, 0, stream>>>(reinterpret_cast<const float4*>(z),
                                                             reinterpret_cast<const float4*>(bias),
                                                             reinterpret_cast<float4*>(y), n / 4, cols / 4, relu, d,
                                                             step);
  } else {
    forward_scalar<<<blocks_for((n + 3) / 4), kThreads, 0, stream>>>(z, bias, y, n, cols, relu, d, step);
  }
  MNIST_CHECK_LAUNCH();
}

void bias_relu_dropout_backward(const float* dy, const float* z, const float* bias, float* dz, int rows, int cols,
                                bool relu, DropoutKey key, const std::int64_t* step, cudaStream_t stream) {
  const DropoutArgs d = dropout_args(key);
  const std::int64_t n = static_cast<std::int64_t>(rows) * cols;
  if (n <= 0) return;
  if (cols % 4 == 0 && aligned16(dy) && aligned16(z) && aligned16(bias) && aligned16(dz)) {
    backward_vec4<<<blocks_for(n / 4), kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(dy), reinterpret_cast<const float4*>(z),
        reinterpret_cast<const float4*>(bias), reinterpret_cast<float4*>(dz), n / 4, cols / 4, relu, d, step);
  } else {
    backward_scalar<<<blocks_for((n + 3) / 4), kThreads, 0, stream>>>(dy, z, bias, dz, n, cols, relu, d, step);
  }
  MNIST_CHECK_LAUNCH();
}

}  // namespace gpu
}  // namespace mnist
