// Philox4x32-10 (include/mnist/core/philox.h): Random123's known-answer vectors, the counter layout
// of philox_word, statistical sanity of the uniform draws, distinct streams, and the device
// computing bit-identical words to the host.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/core/philox.h"
#include "test_util.h"

namespace mnist {
namespace {

void expect_block(const Philox4x32& got, std::uint32_t w0, std::uint32_t w1, std::uint32_t w2, std::uint32_t w3) {
  EXPECT_EQ(got.v[0], w0);
  EXPECT_EQ(got.v[1], w1);
  EXPECT_EQ(got.v[2], w2);
  EXPECT_EQ(got.v[3], w3);
}

// Random123 1.14, examples/kat_vectors: "philox4x32 10 <counter ×4> <key ×2> <result ×4>".
TEST(TwinPhilox, KnownAnswerVectors) {
  expect_block(philox4x32_10(Philox4x32{{0u, 0u, 0u, 0u}}, 0u, 0u), 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu,
               0x9b00dbd8u);
  expect_block(philox4x32_10(Philox4x32{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu,
                             0xffffffffu),
               0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu);
  expect_block(philox4x32_10(Philox4x32{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u,
                             0x299f31d0u),
               0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u);
}

// philox_word(seed, step, stream, 4b + k) is word k of the block with counter
// {b lo, b hi, step lo, stream ^ step hi} and key {seed lo, seed hi}. The dropout kernel draws
// whole blocks with this layout, so it is pinned here.
TEST(TwinPhilox, WordIsOneWordOfItsBlock) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int trial = 0; trial < 1000; ++trial) {
    const std::uint64_t seed = rng(), step = rng() >> (trial % 40), block = rng() >> 2;
    const std::uint32_t stream = static_cast<std::uint32_t>(rng());
    const Philox4x32 counter{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                              static_cast<std::uint32_t>(step), stream ^ static_cast<std::uint32_t>(step >> 32)}};
    const Philox4x32 want =
        philox4x32_10(counter, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
    for (int k = 0; k < 4; ++k) ASSERT_EQ(philox_word(seed, step, stream, 4 * block + k), want.v[k]);
  }
}

// 2^20 draws: mean within 6 standard errors of 1/2 (σ = sqrt(1/12 / n) ≈ 2.8e-4), every draw a
// multiple of 2^-24 in [0, 1).
TEST(TwinPhilox, UniformIsInUnitIntervalWithMeanOneHalf) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::uint64_t seed = rng(), step = rng() % 100000;
  constexpr int kDraws = 1 << 20;
  double sum = 0.0;
  for (int i = 0; i < kDraws; ++i) {
    const float u = philox_uniform(seed, step, 3, i);
    ASSERT_GE(u, 0.f);
    ASSERT_LT(u, 1.f);
    ASSERT_EQ(std::ldexp(static_cast<double>(u), 24), std::floor(std::ldexp(static_cast<double>(u), 24)));
    sum += u;
  }
  const double sigma = std::sqrt(1.0 / 12.0 / kDraws);
  EXPECT_NEAR(sum / kDraws, 0.5, 6 * sigma);
}

// Pearson's chi-square over 256 equal buckets of 2^20 draws (255 degrees of freedom: mean 255,
// sd 22.6). By the Wilson–Hilferty approximation P(χ² > 400) ≈ 2e-8 and P(χ² < 150) ≈ 3e-8, so
// a correct generator essentially never fails [150, 400]; the lower end catches a "too regular"
// stream (e.g. a counter leaking through).
TEST(TwinPhilox, UniformPassesChiSquare) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::uint64_t seed = rng(), step = rng() % 100000;
  constexpr int kBuckets = 256, kDraws = 1 << 20;
  std::vector<int> counts(kBuckets, 0);
  for (int i = 0; i < kDraws; ++i) ++counts[static_cast<int>(philox_uniform(seed, step, 7, i) * kBuckets)];
  const double expected = static_cast<double>(kDraws) / kBuckets;
  double chi2 = 0.0;
  for (int c : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_GT(chi2, 150.0);
  EXPECT_LT(chi2, 400.0);
}

// Each of the 32 bits of a word is set in half of 2^20 draws, within 6σ (σ = sqrt(n/4) = 512).
TEST(TwinPhilox, EveryBitIsBalanced) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::uint64_t seed = rng(), step = rng() % 100000;
  constexpr int kDraws = 1 << 20;
  std::vector<int> ones(32, 0);
  for (int i = 0; i < kDraws; ++i) {
    const std::uint32_t w = philox_word(seed, step, 1, i);
    for (int b = 0; b < 32; ++b) ones[b] += (w >> b) & 1u;
  }
  for (int b = 0; b < 32; ++b) EXPECT_NEAR(ones[b], kDraws / 2, 6 * 512) << "bit " << b;
}

// Changing any one of seed, step, stream or the index offset gives an unrelated stream: two
// independent 32-bit words agree with probability 2^-32, so among 4096 positions we expect 0.
TEST(TwinPhilox, DistinctStreamsDiffer) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::uint64_t seed = rng(), step = rng() % 100000;
  const std::uint32_t stream = 2;
  constexpr int kWords = 4096;
  auto agreements = [&](std::uint64_t s2, std::uint64_t t2, std::uint32_t st2, std::uint64_t offset) {
    int same = 0;
    for (int i = 0; i < kWords; ++i) same += philox_word(seed, step, stream, i) == philox_word(s2, t2, st2, i + offset);
    return same;
  };
  EXPECT_EQ(agreements(seed, step, stream, 0), kWords);  // deterministic: same key, same words
  EXPECT_LE(agreements(seed ^ 1, step, stream, 0), 1);
  EXPECT_LE(agreements(seed ^ (1ull << 40), step, stream, 0), 1);
  EXPECT_LE(agreements(seed, step + 1, stream, 0), 1);
  EXPECT_LE(agreements(seed, step, stream + 1, 0), 1);
  EXPECT_LE(agreements(seed, step, kInitStream, 0), 1);
  EXPECT_LE(agreements(seed, step, stream, 4), 1);
  EXPECT_LE(agreements(seed, step, stream, 1ull << 32), 1);
}

// dropout_threshold is p·2^24 truncated; dropout_keep keeps a word iff its top 24 bits reach it.
TEST(TwinPhilox, DropoutThresholdAndKeep) {
  EXPECT_EQ(dropout_threshold(0.f), 0u);
  EXPECT_EQ(dropout_threshold(0.5f), 1u << 23);
  EXPECT_EQ(dropout_threshold(0.25f), 1u << 22);
  std::mt19937_64 rng(test::fresh_seed());
  const std::uint64_t seed = rng(), step = rng() % 100000;
  const std::uint32_t threshold = dropout_threshold(0.3f);
  for (std::uint64_t i = 0; i < 10000; ++i) {
    EXPECT_TRUE(dropout_keep(seed, step, 5, i, 0));  // p = 0 keeps everything
    ASSERT_EQ(dropout_keep(seed, step, 5, i, threshold), (philox_word(seed, step, 5, i) >> 8) >= threshold);
  }
}

// dropout_keep_mask (whole Philox blocks, for the CPU twin) decides as dropout_keep does, for
// lengths that are and are not multiples of 4 (one of a million), steps past 2^32, and p = 0.
TEST(TwinPhilox, DropoutKeepMaskAgreesWithDropoutKeep) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int trial = 0; trial < 20; ++trial) {
    const std::uint64_t seed = rng(), step = rng() >> (trial % 2 ? 8 : 40);
    const std::uint32_t layer = static_cast<std::uint32_t>(rng() % 4);
    const std::uint32_t threshold = trial == 0 ? 0 : dropout_threshold(float(rng() % 1000) / 1000.f);
    const std::size_t n = trial == 1 ? (std::size_t(1) << 20) + 3 : rng() % 5000;
    const std::vector<std::uint8_t> keep = dropout_keep_mask(seed, step, layer, threshold, n);
    ASSERT_GE(keep.size(), n);
    std::size_t mismatches = 0, kept = 0;
    for (std::size_t i = 0; i < n; ++i) {
      mismatches += keep[i] != (dropout_keep(seed, step, layer, i, threshold) ? 1 : 0);
      kept += keep[i];
    }
    EXPECT_EQ(mismatches, 0u) << "n " << n << ", threshold " << threshold;
    if (threshold == 0) EXPECT_EQ(kept, n);
  }
}

// ---- device ------------------------------------------------------------------------------

__global__ void philox_on_device(std::uint64_t seed, std::uint64_t step, std::uint32_t stream, std::uint64_t first,
                                 int n, std::uint32_t threshold, std::uint32_t* words, float* uniforms,
                                 std::uint8_t* keeps) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    words[i] = philox_word(seed, step, stream, first + i);
    uniforms[i] = philox_uniform(seed, step, stream, first + i);
    keeps[i] = dropout_keep(seed, step, stream, first + i, threshold) ? 1 : 0;
  }
}

TEST(GpuPhilox, DeviceWordsMatchHostBitExact) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kN = 1 << 20;
  DeviceBuffer<std::uint32_t> words(kN);
  DeviceBuffer<float> uniforms(kN);
  DeviceBuffer<std::uint8_t> keeps(kN);
  // Small and large seeds, steps past 2^32, stream ids of dropout and init, indices past 2^32.
  const std::uint64_t firsts[] = {0, 3, (1ull << 32) - 5, rng() >> 4};
  for (std::uint64_t first : firsts) {
    const std::uint64_t seed = rng(), step = rng() >> (first % 3 == 0 ? 40 : 8);
    const std::uint32_t stream = static_cast<std::uint32_t>(rng() % 3 == 0 ? kInitStream : rng() % 8);
    const std::uint32_t threshold = dropout_threshold(0.37f);
    words.fill_bytes(0xFF);
    uniforms.fill_bytes(0xFF);
    keeps.fill_bytes(0xFF);
    philox_on_device<<<1024, 256>>>(seed, step, stream, first, kN, threshold, words.data(), uniforms.data(),
                                    keeps.data());
    MNIST_CHECK_LAUNCH();
    MNIST_CHECK(cudaDeviceSynchronize());
    const std::vector<std::uint32_t> w = words.download();
    const std::vector<float> u = uniforms.download();
    const std::vector<std::uint8_t> k = keeps.download();
    int word_mismatches = 0, uniform_mismatches = 0, keep_mismatches = 0;
    for (int i = 0; i < kN; ++i) {
      const float want_u = philox_uniform(seed, step, stream, first + i);
      word_mismatches += w[i] != philox_word(seed, step, stream, first + i);
      uniform_mismatches += std::memcmp(&u[i], &want_u, sizeof(float)) != 0;  // bit-exact, NaN fails
      keep_mismatches += k[i] != (dropout_keep(seed, step, stream, first + i, threshold) ? 1 : 0);
    }
    EXPECT_EQ(word_mismatches, 0) << "first index " << first;
    EXPECT_EQ(uniform_mismatches, 0) << "first index " << first;
    EXPECT_EQ(keep_mismatches, 0) << "first index " << first;
  }
}

}  // namespace
}  // namespace mnist
