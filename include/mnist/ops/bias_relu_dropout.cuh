#pragma once
// The device side of bias_relu_dropout.h, for the kernels that apply the ReLU-dropout backward as
// part of a larger fused step (bias_relu_dropout.cu's own, and classifier_head.cu's): the launch
// arguments of one layer's mask and the per-element rule, so that every kernel draws the same
// mask bits from the same Philox blocks as the CPU twin.
#include <cstdint>
#include <stdexcept>

#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/core/philox.h"

namespace mnist::gpu {

struct DropoutArgs {
  std::uint64_t seed;
  std::uint32_t layer;
  std::uint32_t threshold;  // an element is dropped when its 24-bit draw is below this; 0 keeps all
  float scale;              // 1 / (1 - p), exactly 1 when p == 0 (the same float as the CPU twin)
};

inline DropoutArgs dropout_args(const DropoutKey& key) {
  if (!(key.p >= 0.f && key.p < 1.f)) throw std::invalid_argument("bias_relu_dropout: dropout p must be in [0, 1)");
  return {key.seed, key.layer, dropout_threshold(key.p), key.p > 0.f ? 1.0f / (1.0f - key.p) : 1.0f};
}

// The step is read on the device so a captured graph draws a fresh mask every step. With
// dropout off it is not read at all (the caller may pass a null step for evaluation).
__device__ __forceinline__ std::uint64_t read_step(const DropoutArgs& d, const std::int64_t* step) {
  return d.threshold != 0 ? static_cast<std::uint64_t>(*step) : 0;
}

// Keep bits (bit k for element 4·block + k) of one Philox block. The backward pass recomputes
// them instead of storing a mask: no mask buffer to write and read back, and the CPU twin draws
// the identical bits from the same key. One Philox call serves four elements.
__device__ __forceinline__ unsigned keep_bits(const DropoutArgs& d, std::uint64_t step, std::uint64_t block) {
  return dropout_keep_bits(d.seed, step, d.layer, block, d.threshold);
}

// The keep bit of any flat element index, drawing a Philox block only when the index leaves the
// block of the previous call: a thread walking four consecutive elements of a row draws once
// when the row starts on a multiple of four, twice otherwise.
struct KeepBitCache {
  std::uint64_t block = ~std::uint64_t{0};
  unsigned bits = 0;
  __device__ __forceinline__ unsigned bit(const DropoutArgs& d, std::uint64_t step, std::uint64_t flat) {
    if ((flat >> 2) != block) {
      block = flat >> 2;
      bits = keep_bits(d, step, block);
    }
    return (bits >> (flat & 3u)) & 1u;
  }
};

__device__ __forceinline__ float forward_one(float z, float b, unsigned keep, bool relu, float scale) {
  float v = z + b;
  if (relu && !(v > 0.f)) v = 0.f;
  return keep ? v * scale : 0.f;
}
__device__ __forceinline__ float backward_one(float dy, float z, float b, unsigned keep, bool relu, float scale) {
  const float v = z + b;
  return (keep && (!relu || v > 0.f)) ? dy * scale : 0.f;
}

}  // namespace mnist::gpu
