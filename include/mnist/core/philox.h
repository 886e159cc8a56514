#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
// the counter-based generator of Random123 and cuRAND. Pure integer arithmetic, so the
// CPU twins and the CUDA kernels draw bit-identical numbers from the same key.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mnist/core/hd.h"

namespace mnist {

struct Philox4x32 {
  std::uint32_t v[4];
};

MNIST_HD void philox_mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t product = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(product >> 32);
  lo = static_cast<std::uint32_t>(product);
}

// Ten rounds of the Philox S-box with the Weyl key schedule.
MNIST_HD Philox4x32 philox4x32_10(Philox4x32 counter, std::uint32_t key0, std::uint32_t key1) {
  constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kMul0, counter.v[0], hi0, lo0);
    philox_mulhilo(kMul1, counter.v[2], hi1, lo1);
    counter = Philox4x32{{hi1 ^ counter.v[1] ^ key0, lo1, hi0 ^ counter.v[3] ^ key1, lo0}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The four random words of block `block` of the stream named by (seed, step, stream): those of
// elements 4·block .. 4·block + 3.
MNIST_HD Philox4x32 philox_block(std::uint64_t seed, std::uint64_t step, std::uint32_t stream, std::uint64_t block) {
  const Philox4x32 counter{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                            static_cast<std::uint32_t>(step), stream ^ static_cast<std::uint32_t>(step >> 32)}};
  return philox4x32_10(counter, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

// One uniformly random 32-bit word for element `index` of the stream named by
// (seed, step, stream). Four consecutive elements share one Philox block.
MNIST_HD std::uint32_t philox_word(std::uint64_t seed, std::uint64_t step, std::uint32_t stream,
                                   std::uint64_t index) {
  return philox_block(seed, step, stream, index >> 2).v[index & 3];
}

// Uniform float in [0, 1) with 24 random bits (exactly representable, identical everywhere).
MNIST_HD float philox_uniform(std::uint64_t seed, std::uint64_t step, std::uint32_t stream,
                              std::uint64_t index) {
  return static_cast<float>(philox_word(seed, step, stream, index) >> 8) * (1.0f / 16777216.0f);
}

// Dropout decision. An element is dropped with probability p: its 24-bit draw is below
// p * 2^24. The comparison is on integers, so CPU and GPU masks are bit-identical.
MNIST_HD std::uint32_t dropout_threshold(float p) {
  return static_cast<std::uint32_t>(p * 16777216.0f);
}
MNIST_HD bool dropout_keep(std::uint64_t seed, std::uint64_t step, std::uint32_t layer, std::uint64_t index,
                           std::uint32_t threshold) {
  return (philox_word(seed, step, layer, index) >> 8) >= threshold;
}

// The dropout_keep decisions of the four elements 4·block + k of one Philox block, as bit k: one
// Philox call for four elements, as the GPU kernel and the CPU twin draw their masks.
MNIST_HD unsigned dropout_keep_bits(std::uint64_t seed, std::uint64_t step, std::uint32_t layer, std::uint64_t block,
                                    std::uint32_t threshold) {
  if (threshold == 0) return 0xFu;  // p = 0 keeps everything, without drawing
  const Philox4x32 words = philox_block(seed, step, layer, block);
  unsigned bits = 0;
  for (int k = 0; k < 4; ++k) bits |= ((words.v[k] >> 8) >= threshold ? 1u : 0u) << k;
  return bits;
}

// dropout_keep of elements 0 .. n-1 as 0 or 1 (and of the last block's rest, up to a multiple
// of 4), for the CPU twin, in a plain loop that vectorizes. The same decisions as dropout_keep
// (tests/test_philox.cu).
inline std::vector<std::uint8_t> dropout_keep_mask(std::uint64_t seed, std::uint64_t step, std::uint32_t layer,
                                                   std::uint32_t threshold, std::size_t n) {
  const std::size_t blocks = (n + 3) / 4;
  std::vector<std::uint8_t> keep(4 * blocks);
  for (std::size_t b = 0; b < blocks; ++b) {
    const unsigned bits = dropout_keep_bits(seed, step, layer, b, threshold);
    for (int k = 0; k < 4; ++k) keep[4 * b + k] = (bits >> k) & 1u;
  }
  return keep;
}

// The epoch shuffle sorts image indices by a 64-bit random key per index (stable sort, so
// the rare equal keys keep index order). CPU (std::stable_sort) and GPU (Thrust's radix
// sort) therefore produce the same permutation for the same (seed, epoch).
MNIST_HD std::uint64_t shuffle_key(std::uint64_t seed, std::uint64_t epoch, std::uint32_t stream, std::uint64_t index) {
  return (static_cast<std::uint64_t>(philox_word(seed, epoch, stream, 2 * index)) << 32) |
         philox_word(seed, epoch, stream, 2 * index + 1);
}

// Streams of the Philox key space that are not dropout layers.
constexpr std::uint32_t kInitStream = 0x1000u;     // + layer: weight initialisation
constexpr std::uint32_t kShuffleStream = 0x2000u;  // epoch shuffle (shuffle_key)

}  // namespace mnist
