// 2×2 max pooling, stride 2 (kernels/maxpool.{cu,cpp}).
//
// The forward pass copies one input per window and the backward pass copies dy or writes 0:
// no arithmetic, so GPU and CPU must agree bit for bit on every input, ties and NaNs included
// (both use the same argmax rule: first maximum in row-major window order, a NaN beating any
// number). The CPU twin is checked by hand and by finite differences on tie-free inputs.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/maxpool.h"
#include "test_util.h"

namespace mnist {
namespace {

struct Dims {
  int n, c, h, w;
  std::size_t in() const { return static_cast<std::size_t>(n) * c * h * w; }
  std::size_t out() const { return static_cast<std::size_t>(n) * c * (h / 2) * (w / 2); }
};

std::string describe(Dims d) {
  return std::to_string(d.n) + "x" + std::to_string(d.c) + "x" + std::to_string(d.h) + "x" + std::to_string(d.w);
}

std::vector<float> pool(const std::vector<float>& x, Dims d) {
  std::vector<float> y = test::nan_filled(d.out());
  twin::maxpool2x2_forward(x.data(), y.data(), d.n, d.c, d.h, d.w);
  return y;
}
std::vector<float> unpool(const std::vector<float>& x, const std::vector<float>& dy, Dims d) {
  std::vector<float> dx = test::nan_filled(d.in());
  twin::maxpool2x2_backward(x.data(), dy.data(), dx.data(), d.n, d.c, d.h, d.w);
  return dx;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Distinct values: a shuffled 0, 1, ..., n-1 scaled by 1/64 (exact in float up to n = 2^24), so
// no window has a tie and neighbours differ by at least 1/64.
std::vector<float> distinct_floats(std::mt19937_64& rng, std::size_t n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), 0.f);
  std::shuffle(v.begin(), v.end(), rng);
  for (auto& e : v) e = e / 64.f - static_cast<float>(n) / 128.f;
  return v;
}

// ---- CPU twin ---------------------------------------------------------------------------

TEST(TwinMaxpool, HandComputed) {
  const Dims d{1, 1, 4, 4};
  const std::vector<float> x = {1, 5, 2, 0,    //
                                3, 4, 8, 7,    //
                                0, -1, -3, -2,  //
                                6, 2, -4, -5};
  EXPECT_EQ(pool(x, d), (std::vector<float>{5, 8, 6, -2}));
  // each window's gradient lands on its maximum: (0,1), (1,2), (3,0), (2,3)
  EXPECT_EQ(unpool(x, {10, 20, 30, 40}, d), (std::vector<float>{0, 10, 0, 0,   //
                                                                 0, 0, 20, 0,   //
                                                                 0, 0, 0, 40,   //
                                                                 30, 0, 0, 0}));
}

// Ties go to the first maximum in row-major window order; -0 and +0 tie (first wins).
TEST(TwinMaxpool, TiesGoToFirstInRowMajorOrder) {
  const Dims d{1, 1, 2, 8};
  const std::vector<float> x = {7, 7, 2, 3, 1, 0, -0.f, 0,  // windows: all 7 | (2,3,3,1) | (1,0,1,1) | (-0,0,0,0)
                                7, 7, 3, 1, 1, 1, 0, 0};
  const std::vector<float> y = pool(x, d);
  EXPECT_EQ(y, (std::vector<float>{7, 3, 1, 0}));
  EXPECT_TRUE(std::signbit(y[3])) << "the first of the tied zeros is -0";
  EXPECT_EQ(unpool(x, {1, 2, 3, 4}, d), (std::vector<float>{1, 0, 0, 2, 3, 0, 4, 0,  //
                                                             0, 0, 0, 0, 0, 0, 0, 0}));
}

// A NaN counts as the maximum (the first NaN if several), so it propagates forward and the
// gradient goes to it.
TEST(TwinMaxpool, NanIsTheMaximum) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Dims d{1, 1, 2, 4};
  const std::vector<float> x = {1, 5, nan, 9,  //
                                nan, 2, 3, nan};
  const std::vector<float> y = pool(x, d);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_TRUE(std::isnan(y[1]));
  EXPECT_EQ(unpool(x, {1, 2}, d), (std::vector<float>{0, 0, 2, 0,  //
                                                      1, 0, 0, 0}));
}

// Odd sizes round the output down; the dropped last row and column get a zero gradient. A map
// smaller than 2×2 has no output at all.
TEST(TwinMaxpool, OddSizesDropTheLastRowAndColumn) {
  const Dims d{1, 1, 3, 5};
  const std::vector<float> x = {1, 2, 3, 4, 99,  //
                                5, 6, 7, 8, 99,  //
                                99, 99, 99, 99, 99};
  EXPECT_EQ(pool(x, d), (std::vector<float>{6, 8}));
  EXPECT_EQ(unpool(x, {1, 2}, d), (std::vector<float>{0, 0, 0, 0, 0,  //
                                                      0, 1, 0, 2, 0,  //
                                                      0, 0, 0, 0, 0}));
  const Dims tiny{2, 1, 1, 3};
  EXPECT_TRUE(pool({1, 2, 3, 4, 5, 6}, tiny).empty());
  EXPECT_EQ(unpool({1, 2, 3, 4, 5, 6}, {}, tiny), std::vector<float>(6, 0.f));
}

// Several images and channels: each plane is pooled on its own (here plane p holds values
// 100·p + its 2×2 pattern, and every window's max is its bottom-right element).
TEST(TwinMaxpool, PlanesAreIndependent) {
  const Dims d{2, 3, 2, 2};
  std::vector<float> x(d.in());
  for (int p = 0; p < 6; ++p)
    for (int k = 0; k < 4; ++k) x[p * 4 + k] = 100.f * p + k;
  EXPECT_EQ(pool(x, d), (std::vector<float>{3, 103, 203, 303, 403, 503}));
  std::vector<float> want(d.in(), 0.f);
  for (int p = 0; p < 6; ++p) want[p * 4 + 3] = static_cast<float>(p + 1);
  EXPECT_EQ(unpool(x, {1, 2, 3, 4, 5, 6}, d), want);
}

// dx is the gradient of L(x) = sum(pool(x) · g): on tie-free inputs pooling is linear near x
// (the argmax stays put for steps below half the smallest gap, 1/128 here), so a central
// difference with step 2^-9 is exact up to the double sum's rounding.
TEST(TwinMaxpool, GradientMatchesFiniteDifferences) {
  std::mt19937_64 rng(test::fresh_seed());
  const Dims d{2, 3, 6, 7};
  std::vector<float> x = distinct_floats(rng, d.in());
  const std::vector<float> g = test::random_floats(rng, d.out());
  const std::vector<float> dx = unpool(x, g, d);
  const auto loss = [&] {
    const std::vector<float> y = pool(x, d);
    double sum = 0;
    for (std::size_t k = 0; k < y.size(); ++k) sum += static_cast<double>(y[k]) * g[k];
    return sum;
  };
  const float h = 1.f / 512;  // x ± h is exact: x is a multiple of 1/128 with |x| < 2
  for (std::size_t k = 0; k < x.size(); ++k) {
    const float saved = x[k];
    x[k] = saved + h;
    const double plus = loss();
    x[k] = saved - h;
    const double minus = loss();
    x[k] = saved;
    EXPECT_NEAR(dx[k], (plus - minus) / (2 * h), 1e-9) << "dx[" << k << "]";
  }
}

TEST(TwinMaxpool, RejectsNegativeSizes) {
  std::vector<float> buf(4);
  EXPECT_THROW(twin::maxpool2x2_forward(buf.data(), buf.data(), 1, 1, -2, 2), std::invalid_argument);
  EXPECT_THROW(twin::maxpool2x2_backward(buf.data(), buf.data(), buf.data(), -1, 1, 2, 2), std::invalid_argument);
}

// ---- GPU against the CPU twin ------------------------------------------------------------------

const Dims kGpuDims[] = {{1, 32, 28, 28}, {7, 32, 28, 28}, {128, 32, 28, 28}, {128, 64, 14, 14}, {128, 64, 7, 7},
                         {3, 5, 7, 9},    {2, 3, 1, 1},    {1, 1, 2, 2},      {4, 2, 5, 4},      {1, 1, 1000, 3}};

struct GpuOut {
  std::vector<float> y, dx;
};
GpuOut gpu_pool(const std::vector<float>& x, const std::vector<float>& dy, Dims d, cudaStream_t stream) {
  DeviceBuffer<float> d_x(x), d_dy(dy), d_y(d.out()), d_dx(d.in());
  d_y.fill_bytes(0xFF);
  d_dx.fill_bytes(0xFF);
  gpu::maxpool2x2_forward(d_x.data(), d_y.data(), d.n, d.c, d.h, d.w, stream);
  gpu::maxpool2x2_backward(d_x.data(), d_dy.data(), d_dx.data(), d.n, d.c, d.h, d.w, stream);
  return {d_y.download(), d_dx.download()};
}

// Random floats (ties unlikely), then few distinct values (ties everywhere), then NaNs sprinkled
// in: bit-identical to the twin in every case (the poison NaN has a different payload than
// std::quiet_NaN's, so an unwritten element fails the bit comparison too).
TEST(GpuMaxpool, MatchesTwinBitForBit) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  Stream stream;
  for (const Dims d : kGpuDims) {
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<float> x = test::random_floats(rng, d.in());
      if (variant >= 1)
        for (auto& e : x) e = std::round(e * 2.f) / 2.f;  // {-1, -0.5, -0, 0, 0.5, 1}
      if (variant == 2)
        for (std::size_t k = 0; k < x.size(); k += 7) x[k] = std::numeric_limits<float>::quiet_NaN();
      const std::vector<float> dy = test::random_floats(rng, d.out());
      const GpuOut got = gpu_pool(x, dy, d, stream.get());
      EXPECT_TRUE(same_bits(got.y, pool(x, d))) << "y of " << describe(d) << ", variant " << variant;
      EXPECT_TRUE(same_bits(got.dx, unpool(x, dy, d))) << "dx of " << describe(d) << ", variant " << variant;
    }
  }
}

TEST(GpuMaxpool, Deterministic) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  // The CNN's second pooling layer at batch 128 (16 under ThreadSanitizer).
  const Dims d{test::kThreadSanitizer ? 16 : 128, 64, 14, 14};
  const std::vector<float> x = test::random_floats(rng, d.in());
  const std::vector<float> dy = test::random_floats(rng, d.out());
  const GpuOut first = gpu_pool(x, dy, d, nullptr);
  const GpuOut again = gpu_pool(x, dy, d, nullptr);
  EXPECT_TRUE(same_bits(first.y, again.y));
  EXPECT_TRUE(same_bits(first.dx, again.dx));
}

}  // namespace
}  // namespace mnist
