// Bias gradient db[c] = sum_r dz[r, c] (kernels/bias_grad.{cu,cpp}).
//
// Tolerance. The CPU twin sums each column in row order in double and rounds once, so it is
// the exact sum to within one float rounding. The GPU sums in float in a fixed tree (row slices, then
// the slices), deterministic but not in row order, so the two differ by rounding. Two checks:
//  * dyadic inputs (multiples of 2^-8 in [-1, 1], at most 65536 rows): every partial sum is a
//    multiple of 2^-8 of magnitude at most 2^16 (2^24 units), which float holds exactly, so any order
//    gives the exact sum and GPU and CPU must agree bit for bit. This catches a missing or
//    repeated row or column at every shape.
//  * random floats: any float summation of n terms is within γ_{n-1}·sum|x| of the exact sum
//    (Higham, Accuracy and Stability of Numerical Algorithms, §4.2; γ_k = k·u/(1 - k·u),
//    u = 2^-24), whatever the order; the CPU's double sum and final rounding add under 2u·sum|x|,
//    so |gpu - cpu| ≤ (γ_{n-1} + 2u)·sum|x|. A rigorous bound, so the check never flakes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/bias_grad.h"
#include "test_util.h"

namespace mnist {
namespace {

std::vector<float> column_sums(const std::vector<float>& dz, int rows, int cols) {
  std::vector<float> db = test::nan_filled(cols);
  twin::bias_grad(dz.data(), db.data(), rows, cols);
  return db;
}

// Multiples of 2^-8 in [-1, 1]: sums of up to 65536 of them are exact in float.
std::vector<float> dyadic_floats(std::mt19937_64& rng, std::size_t n) {
  std::uniform_int_distribution<int> dist(-256, 256);
  std::vector<float> out(n);
  for (auto& x : out) x = static_cast<float>(dist(rng)) / 256.f;
  return out;
}

// ---- CPU twin -------------------------------------------------------------------------

TEST(TwinBiasGrad, HandComputed) {
  const std::vector<float> dz = {1.f, 2.f, 3.f,     // 3 × 3
                                 -4.f, 0.5f, 6.f,   //
                                 0.25f, -1.f, 9.f};
  EXPECT_EQ(column_sums(dz, 3, 3), (std::vector<float>{-2.75f, 1.5f, 18.f}));
  EXPECT_EQ(column_sums(dz, 1, 3), (std::vector<float>{1.f, 2.f, 3.f}));        // one row: itself
  EXPECT_EQ(column_sums(dz, 9, 1), (std::vector<float>{16.75f}));               // one column: the total
  EXPECT_EQ(column_sums(dz, 0, 3), (std::vector<float>{0.f, 0.f, 0.f}));        // no rows: zero
}

// db is the gradient of L(b) = sum_{r,c} dz[r,c]·(x[r,c] + b[c]) (the bias broadcast over rows):
// L is linear in b, so a central difference in double is exact up to rounding.
TEST(TwinBiasGrad, IsGradientOfBroadcastBias) {
  constexpr int kRows = 50, kCols = 7;
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> dz = test::random_floats(rng, kRows * kCols);
  const std::vector<float> db = column_sums(dz, kRows, kCols);
  for (int c = 0; c < kCols; ++c) {
    auto loss = [&](double bc) {
      double sum = 0;
      for (int r = 0; r < kRows; ++r) sum += static_cast<double>(dz[r * kCols + c]) * bc;
      return sum;  // the terms not involving b[c] cancel in the difference
    };
    const double h = 0.5;
    EXPECT_NEAR(db[c], (loss(h) - loss(-h)) / (2 * h), 1e-6 * kRows);
  }
}

// Rounded once from double: the float nearest the exact sum even where float summation in row
// order would drift (2^24 + 1 + 1 + ... is exact in double, stuck at 2^24 in float).
TEST(TwinBiasGrad, SumsWithoutFloatDrift) {
  std::vector<float> dz(1001, 1.f);
  dz[0] = 16777216.f;  // 2^24
  EXPECT_EQ(column_sums(dz, 1001, 1)[0], 16777216.f + 1000.f);
}

TEST(TwinBiasGrad, DyadicSumsAreExact) {
  constexpr int kRows = 60000, kCols = 10;
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> dz = dyadic_floats(rng, static_cast<std::size_t>(kRows) * kCols);
  const std::vector<float> db = column_sums(dz, kRows, kCols);
  for (int c = 0; c < kCols; ++c) {
    long long units = 0;  // the exact sum in units of 2^-8
    for (int r = 0; r < kRows; ++r) units += std::lround(dz[static_cast<std::size_t>(r) * kCols + c] * 256.f);
    EXPECT_EQ(db[c], static_cast<float>(units) / 256.f);
  }
}

// ---- GPU against the CPU twin ------------------------------------------------------------------

struct Shape {
  int rows, cols;
};
const Shape kShapes[] = {{1, 1},     {1, 7},    {7, 1},    {7, 7},     {127, 128},  {128, 127},
                         {129, 129}, {128, 10}, {1000, 10}, {33, 1000}, {1000, 784}, {4096, 784},
                         {60000, 10}, {65536, 3}, {2, 4099}};

std::string describe(Shape s) { return std::to_string(s.rows) + "x" + std::to_string(s.cols); }

std::vector<float> gpu_column_sums(const std::vector<float>& dz, int rows, int cols) {
  DeviceBuffer<float> d_dz(dz), d_db(cols);
  d_db.fill_bytes(0xFF);
  gpu::bias_grad(d_dz.data(), d_db.data(), rows, cols, nullptr);
  MNIST_CHECK(cudaDeviceSynchronize());
  return d_db.download();
}

TEST(GpuBiasGrad, DyadicInputsMatchTwinExactly) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : kShapes) {
    if (test::too_large_for_tsan(static_cast<std::size_t>(s.rows) * s.cols)) continue;
    const std::vector<float> dz = dyadic_floats(rng, static_cast<std::size_t>(s.rows) * s.cols);
    const std::vector<float> got = gpu_column_sums(dz, s.rows, s.cols);
    const std::vector<float> want = column_sums(dz, s.rows, s.cols);
    for (int c = 0; c < s.cols; ++c) ASSERT_EQ(got[c], want[c]) << describe(s) << " column " << c;  // NaN fails
  }
}

TEST(GpuBiasGrad, RandomInputsWithinSummationBound) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : kShapes) {
    if (test::too_large_for_tsan(static_cast<std::size_t>(s.rows) * s.cols)) continue;
    const std::vector<float> dz = test::random_floats(rng, static_cast<std::size_t>(s.rows) * s.cols);
    const std::vector<float> got = gpu_column_sums(dz, s.rows, s.cols);
    const std::vector<float> want = column_sums(dz, s.rows, s.cols);
    const double u = std::ldexp(1.0, -24);
    const double gamma = (s.rows - 1) * u / (1 - (s.rows - 1) * u);
    for (int c = 0; c < s.cols; ++c) {
      double abs_sum = 0;
      for (int r = 0; r < s.rows; ++r) abs_sum += std::fabs(dz[static_cast<std::size_t>(r) * s.cols + c]);
      const double bound = (gamma + 2 * u) * abs_sum;
      ASSERT_TRUE(std::isfinite(got[c])) << describe(s) << " column " << c;
      ASSERT_LE(std::fabs(static_cast<double>(got[c]) - want[c]), bound) << describe(s) << " column " << c;
    }
  }
}

// No atomics, a fixed summation tree: the same input gives the same bits every launch.
TEST(GpuBiasGrad, Deterministic) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const int rows = test::kThreadSanitizer ? 256 : 4096;
  const std::vector<float> dz = test::random_floats(rng, static_cast<std::size_t>(rows) * 784);
  const std::vector<float> first = gpu_column_sums(dz, rows, 784);
  for (int run = 0; run < 3; ++run) {
    const std::vector<float> again = gpu_column_sums(dz, rows, 784);
    ASSERT_EQ(std::memcmp(first.data(), again.data(), first.size() * sizeof(float)), 0) << "run " << run;
  }
}

// Zero rows: the sum of nothing is 0 (the output is still written).
TEST(GpuBiasGrad, ZeroRowsGiveZero) {
  MNIST_REQUIRE_GPU();
  DeviceBuffer<float> d_dz(1), d_db(5);
  d_db.fill_bytes(0xFF);
  gpu::bias_grad(d_dz.data(), d_db.data(), 0, 5, nullptr);
  MNIST_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(d_db.download(), std::vector<float>(5, 0.f));
}

}  // namespace
}  // namespace mnist
