// Fused bias + ReLU + inverted dropout (kernels/bias_relu_dropout.{cu,cpp}).
// TwinBiasReluDropout: the CPU twin against hand-computed values, the statistics of dropout and
// finite differences. GpuBiasReluDropout: the kernels against the CPU twin. Each GPU element is
// one IEEE add and one multiply in the same order as on the CPU (nothing to contract into an
// FMA), so the outputs are expected bit-identical; the check allows 1e-6 relative and requires
// the zero pattern (the dropout mask and the ReLU cut) to match exactly. A NaN always fails.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/bias_grad.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/core/philox.h"
#include "test_util.h"

namespace mnist {
namespace {

std::vector<float> forward(const std::vector<float>& z, const std::vector<float>& b, int rows, int cols, bool relu,
                           DropoutKey key, std::int64_t step) {
  std::vector<float> y = test::nan_filled(z.size());
  twin::bias_relu_dropout_forward(z.data(), b.data(), y.data(), rows, cols, relu, key, step);
  return y;
}

std::vector<float> backward(const std::vector<float>& dy, const std::vector<float>& z, const std::vector<float>& b,
                            int rows, int cols, bool relu, DropoutKey key, std::int64_t step) {
  std::vector<float> dz = test::nan_filled(z.size());
  twin::bias_relu_dropout_backward(dy.data(), z.data(), b.data(), dz.data(), rows, cols, relu, key, step);
  return dz;
}

// ---- CPU twin -------------------------------------------------------------------------

TEST(TwinBiasReluDropout, HandComputedWithoutDropout) {
  const std::vector<float> z = {1.f, -2.f, 0.5f, -0.25f, 3.f, -1.f};  // 2 × 3
  const std::vector<float> b = {0.5f, 1.f, -1.f};                     // z + b = {1.5, -1, -0.5, 0.25, 4, -2}
  const std::vector<float> dy = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  const DropoutKey key{1234, 0, 0.f};
  EXPECT_EQ(forward(z, b, 2, 3, true, key, 7), (std::vector<float>{1.5f, 0.f, 0.f, 0.25f, 4.f, 0.f}));
  EXPECT_EQ(forward(z, b, 2, 3, false, key, 7), (std::vector<float>{1.5f, -1.f, -0.5f, 0.25f, 4.f, -2.f}));
  EXPECT_EQ(backward(dy, z, b, 2, 3, true, key, 7), (std::vector<float>{1.f, 0.f, 0.f, 4.f, 5.f, 0.f}));
  EXPECT_EQ(backward(dy, z, b, 2, 3, false, key, 7), dy);
  // z + b == 0 exactly: ReLU gives 0 and passes no gradient (the subgradient 0 at the kink).
  EXPECT_EQ(forward({-1.f}, {1.f}, 1, 1, true, key, 7), std::vector<float>{0.f});
  EXPECT_EQ(backward({3.f}, {-1.f}, {1.f}, 1, 1, true, key, 7), std::vector<float>{0.f});
}

// p = 0.5: every element is either dropped (0) or relu(z + b)·2, exactly as dropout_keep says,
// and the mask sits at flat index r·cols + c.
TEST(TwinBiasReluDropout, HandComputedWithDropout) {
  constexpr int kRows = 4, kCols = 16;
  std::vector<float> z(kRows * kCols), b(kCols);
  for (int i = 0; i < kRows * kCols; ++i) z[i] = 0.125f * static_cast<float>(i % 11) - 0.5f;
  for (int c = 0; c < kCols; ++c) b[c] = 0.0625f * c;
  const DropoutKey key{0x0123456789abcdefull, 2, 0.5f};
  const std::int64_t step = 41;
  const std::vector<float> y = forward(z, b, kRows, kCols, true, key, step);
  int kept = 0;
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      const int i = r * kCols + c;
      const bool keep = dropout_keep(key.seed, step, key.layer, i, dropout_threshold(0.5f));
      const float v = z[i] + b[c];
      kept += keep;
      EXPECT_EQ(y[i], keep ? (v > 0.f ? v * 2.f : 0.f) : 0.f) << "r " << r << " c " << c;
    }
  }
  EXPECT_GT(kept, 0);  // P(all 64 dropped or all kept) = 2^-63
  EXPECT_LT(kept, kRows * kCols);
}

// Over 10^6 elements with relu(z + b) = 1, the kept fraction is 1 - p within 6σ,
// σ = sqrt(p(1-p)/n) ≤ 5e-4 (truncating p·2^24 moves the true rate by < 2^-24), and every kept
// element is exactly 1/(1-p).
TEST(TwinBiasReluDropout, KeepFractionIsOneMinusP) {
  constexpr int kRows = 1000, kCols = 1000;
  constexpr double kN = static_cast<double>(kRows) * kCols;
  const std::vector<float> z(kRows * kCols, 1.f), b(kCols, 0.f);
  std::mt19937_64 rng(test::fresh_seed());
  for (float p : {0.1f, 0.5f, 0.8f}) {
    const DropoutKey key{rng(), 1, p};
    const std::vector<float> y = forward(z, b, kRows, kCols, true, key, static_cast<std::int64_t>(rng() % 100000));
    const float scale = 1.0f / (1.0f - p);
    double kept = 0;
    for (float v : y) {
      ASSERT_TRUE(v == 0.f || v == scale) << v;
      kept += v != 0.f;
    }
    const double sigma = std::sqrt(p * (1.0 - p) / kN);
    EXPECT_NEAR(kept / kN, 1.0 - p, 6 * sigma) << "p " << p;
  }
}

// Inverted dropout is unbiased: E[y] = relu(z + b). Over 10^6 elements, sum(y) - sum(relu) has
// mean 0 and standard deviation sqrt(sum relu² · p/(1-p)); it must lie within 6 of those.
TEST(TwinBiasReluDropout, ExpectedOutputIsRelu) {
  constexpr int kRows = 1000, kCols = 1000;
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> z = test::random_floats(rng, kRows * kCols);
  const std::vector<float> b = test::random_floats(rng, kCols, -0.5f, 0.5f);
  for (float p : {0.2f, 0.5f}) {
    const DropoutKey key{rng(), 0, p};
    const std::vector<float> y = forward(z, b, kRows, kCols, true, key, 17);
    double sum_y = 0, sum_relu = 0, sum_relu2 = 0;
    for (int r = 0; r < kRows; ++r) {
      for (int c = 0; c < kCols; ++c) {
        const double v = std::fmax(0.0, static_cast<double>(z[r * kCols + c] + b[c]));
        sum_y += y[r * kCols + c];
        sum_relu += v;
        sum_relu2 += v * v;
      }
    }
    const double sigma = std::sqrt(sum_relu2 * p / (1.0 - p));
    EXPECT_NEAR(sum_y, sum_relu, 6 * sigma) << "p " << p;
  }
}

// Backward is the derivative of forward with the mask held fixed (same seed and step): for
// L = sum_i dy_i·y_i(z), dL/dz_i = dy_i·(y_i(z + h) - y_i(z - h)) / 2h, the op being
// elementwise. Forward is linear away from the ReLU kink, so the central difference is exact up
// to float rounding: |error of y| ≲ 4 ulp(2) ≈ 1e-6, divided by 2h = 1/32 gives ≲ 3e-5 of the
// slope, and 1e-4 relative is the bound. Elements within 2h of the kink are skipped.
TEST(TwinBiasReluDropout, BackwardIsFiniteDifferenceOfForward) {
  constexpr int kRows = 37, kCols = 53;
  constexpr float kH = 1.0f / 64;
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> z = test::random_floats(rng, kRows * kCols);
  const std::vector<float> b = test::random_floats(rng, kCols, -0.5f, 0.5f);
  const std::vector<float> dy = test::random_floats(rng, kRows * kCols);
  std::vector<float> z_plus(z), z_minus(z);
  for (std::size_t i = 0; i < z.size(); ++i) {
    z_plus[i] += kH;
    z_minus[i] -= kH;
  }
  for (bool relu : {true, false}) {
    for (float p : {0.f, 0.3f}) {
      const DropoutKey key{rng(), 1, p};
      const std::int64_t step = 5;
      const float scale = p > 0.f ? 1.0f / (1.0f - p) : 1.0f;
      const std::vector<float> y_plus = forward(z_plus, b, kRows, kCols, relu, key, step);
      const std::vector<float> y_minus = forward(z_minus, b, kRows, kCols, relu, key, step);
      const std::vector<float> dz = backward(dy, z, b, kRows, kCols, relu, key, step);
      int checked = 0;
      for (int r = 0; r < kRows; ++r) {
        for (int c = 0; c < kCols; ++c) {
          const int i = r * kCols + c;
          if (std::fabs(z[i] + b[c]) < 2 * kH) continue;
          const double slope = (static_cast<double>(y_plus[i]) - y_minus[i]) / (2.0 * kH);
          EXPECT_NEAR(dz[i], dy[i] * slope, 1e-4 * std::fabs(dy[i]) * scale)
              << "relu " << relu << " p " << p << " r " << r << " c " << c;
          ++checked;
        }
      }
      EXPECT_GT(checked, kRows * kCols / 2);
    }
  }
}

// With z + b > 0 everywhere the only zeros are dropped elements: forward and backward drop the
// same ones, kept outputs are exactly (z + b)/(1-p) and kept gradients exactly dy/(1-p).
TEST(TwinBiasReluDropout, ForwardAndBackwardShareTheMask) {
  constexpr int kRows = 300, kCols = 301;
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> z = test::random_floats(rng, kRows * kCols, 0.1f, 1.f);
  const std::vector<float> b = test::random_floats(rng, kCols, 0.f, 0.5f);
  const std::vector<float> dy = test::random_floats(rng, kRows * kCols, 0.5f, 1.f);
  const DropoutKey key{rng(), 3, 0.4f};
  const float scale = 1.0f / (1.0f - 0.4f);
  const std::int64_t step = static_cast<std::int64_t>(rng() % 1000000);
  const std::vector<float> y = forward(z, b, kRows, kCols, true, key, step);
  const std::vector<float> dz = backward(dy, z, b, kRows, kCols, true, key, step);
  int dropped = 0;
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      const int i = r * kCols + c;
      ASSERT_EQ(y[i] == 0.f, dz[i] == 0.f) << "r " << r << " c " << c;
      if (y[i] == 0.f) {
        ++dropped;
      } else {
        ASSERT_EQ(y[i], (z[i] + b[c]) * scale);
        ASSERT_EQ(dz[i], dy[i] * scale);
      }
    }
  }
  EXPECT_GT(dropped, 0);
}

// p = 0 is plain bias + ReLU (scale exactly 1), or plain bias without ReLU, bit for bit.
TEST(TwinBiasReluDropout, PZeroIsBiasRelu) {
  constexpr int kRows = 64, kCols = 75;
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> z = test::random_floats(rng, kRows * kCols);
  const std::vector<float> b = test::random_floats(rng, kCols);
  const std::vector<float> dy = test::random_floats(rng, kRows * kCols);
  const DropoutKey key{rng(), 0, 0.f};
  const std::vector<float> y_relu = forward(z, b, kRows, kCols, true, key, 99);
  const std::vector<float> y_lin = forward(z, b, kRows, kCols, false, key, 99);
  const std::vector<float> dz_relu = backward(dy, z, b, kRows, kCols, true, key, 99);
  const std::vector<float> dz_lin = backward(dy, z, b, kRows, kCols, false, key, 99);
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      const int i = r * kCols + c;
      const float v = z[i] + b[c];
      ASSERT_EQ(y_relu[i], v > 0.f ? v : 0.f);
      ASSERT_EQ(y_lin[i], v);
      ASSERT_EQ(dz_relu[i], v > 0.f ? dy[i] : 0.f);
      ASSERT_EQ(dz_lin[i], dy[i]);
    }
  }
}

// The mask is a function of (seed, step, layer): the same key repeats it exactly, and changing
// any one part gives an independent mask. Two independent p = 0.5 masks agree on half of the
// 10^5 elements (σ ≈ 0.0016); [0.45, 0.55] is over 30σ wide, while an unchanged mask agrees on 1.
TEST(TwinBiasReluDropout, MaskDependsOnSeedStepAndLayer) {
  constexpr int kRows = 250, kCols = 400;
  const std::vector<float> z(kRows * kCols, 1.f), b(kCols, 0.f);
  std::mt19937_64 rng(test::fresh_seed());
  const DropoutKey key{rng(), 1, 0.5f};
  const std::int64_t step = static_cast<std::int64_t>(rng() % 1000000);
  const std::vector<float> base = forward(z, b, kRows, kCols, true, key, step);
  auto agreement = [&](const std::vector<float>& other) {
    double same = 0;
    for (std::size_t i = 0; i < base.size(); ++i) same += (base[i] == 0.f) == (other[i] == 0.f);
    return same / static_cast<double>(base.size());
  };
  EXPECT_EQ(agreement(forward(z, b, kRows, kCols, true, key, step)), 1.0);
  EXPECT_NEAR(agreement(forward(z, b, kRows, kCols, true, {key.seed + 1, key.layer, key.p}, step)), 0.5, 0.05);
  EXPECT_NEAR(agreement(forward(z, b, kRows, kCols, true, key, step + 1)), 0.5, 0.05);
  EXPECT_NEAR(agreement(forward(z, b, kRows, kCols, true, {key.seed, key.layer + 1, key.p}, step)), 0.5, 0.05);
}

// y may alias z and dz may alias dy.
TEST(TwinBiasReluDropout, InPlaceMatchesOutOfPlace) {
  constexpr int kRows = 33, kCols = 20;
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> z = test::random_floats(rng, kRows * kCols);
  const std::vector<float> b = test::random_floats(rng, kCols);
  const std::vector<float> dy = test::random_floats(rng, kRows * kCols);
  const DropoutKey key{rng(), 2, 0.25f};
  std::vector<float> y = z;
  twin::bias_relu_dropout_forward(y.data(), b.data(), y.data(), kRows, kCols, true, key, 8);
  EXPECT_EQ(y, forward(z, b, kRows, kCols, true, key, 8));
  std::vector<float> dz = dy;
  twin::bias_relu_dropout_backward(dz.data(), z.data(), b.data(), dz.data(), kRows, kCols, true, key, 8);
  EXPECT_EQ(dz, backward(dy, z, b, kRows, kCols, true, key, 8));
}

TEST(TwinBiasReluDropout, RejectsPOutsideZeroOne) {
  const std::vector<float> z = {1.f}, b = {0.f};
  std::vector<float> y(1);
  EXPECT_THROW(twin::bias_relu_dropout_forward(z.data(), b.data(), y.data(), 1, 1, true, {1, 0, 1.f}, 0),
               std::invalid_argument);
  EXPECT_THROW(twin::bias_relu_dropout_forward(z.data(), b.data(), y.data(), 1, 1, true, {1, 0, -0.1f}, 0),
               std::invalid_argument);
  EXPECT_THROW(twin::bias_relu_dropout_backward(z.data(), z.data(), b.data(), y.data(), 1, 1, true, {1, 0, 1.f}, 0),
               std::invalid_argument);
}

// With db the twin also sums the columns of the dz it wrote (bias_grad), and dz is unchanged.
TEST(TwinBiasReluDropout, BackwardBiasGradientIsTheColumnSumOfDz) {
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kRows = 37, kCols = 11;
  const std::vector<float> z = test::random_floats(rng, kRows * kCols), b = test::random_floats(rng, kCols),
                           dy = test::random_floats(rng, kRows * kCols);
  const DropoutKey key{rng(), 1, 0.4f};
  const std::vector<float> dz = backward(dy, z, b, kRows, kCols, true, key, 9);
  std::vector<float> dz_too = test::nan_filled(dz.size()), db = test::nan_filled(kCols);
  twin::bias_relu_dropout_backward(dy.data(), z.data(), b.data(), dz_too.data(), kRows, kCols, true, key, 9, db.data());
  EXPECT_EQ(dz_too, dz);
  for (int c = 0; c < kCols; ++c) {
    double sum = 0;
    for (int r = 0; r < kRows; ++r) sum += dz[r * kCols + c];
    EXPECT_EQ(db[c], static_cast<float>(sum)) << c;  // the exact sum, rounded once
  }
}

// ---- GPU against the CPU twin ------------------------------------------------------------------

struct Shape {
  int rows, cols;
};
// 1, 7, 127, 128, 129, 1000 and large; cols a multiple of 4 (float4 path) and not (scalar path).
const Shape kShapes[] = {{1, 1},     {1, 7},       {7, 1},      {7, 7},     {1, 128},    {127, 128},
                         {128, 127}, {129, 129},   {128, 10},   {1000, 10}, {1000, 784}, {129, 1000},
                         {7, 1000},  {4096, 784},  {60000, 12}, {60000, 10}};

struct Config {
  bool relu;
  float p;
};
const Config kConfigs[] = {{true, 0.f}, {true, 0.5f}, {true, 0.1f}, {false, 0.f}, {false, 0.3f}};

std::string describe(Shape s, Config cfg, std::int64_t step) {
  return std::to_string(s.rows) + "x" + std::to_string(s.cols) + " relu " + std::to_string(cfg.relu) + " p " +
         std::to_string(cfg.p) + " step " + std::to_string(step);
}

// ≤ 1e-6 relative (NaN → inf fails) and the same zero pattern, element for element.
void expect_matches(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_LE(test::max_rel_error(got, want), 1e-6) << what;
  std::size_t zero_mismatches = 0;
  for (std::size_t i = 0; i < got.size(); ++i) zero_mismatches += (got[i] == 0.f) != (want[i] == 0.f);
  EXPECT_EQ(zero_mismatches, 0u) << what;
}

std::int64_t random_step(std::mt19937_64& rng) {
  // Mostly ordinary step counts; sometimes past 2^32 so the high word of the counter is used.
  return rng() % 4 == 0 ? static_cast<std::int64_t>((1ull << 32) + rng() % 1000) : static_cast<std::int64_t>(rng() % 1000000);
}

TEST(GpuBiasReluDropout, ForwardMatchesTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : kShapes) {
    const std::size_t n = static_cast<std::size_t>(s.rows) * s.cols;
    if (test::too_large_for_tsan(n)) continue;
    const std::vector<float> z = test::random_floats(rng, n);
    const std::vector<float> b = test::random_floats(rng, s.cols);
    DeviceBuffer<float> d_z(z), d_b(b), d_y(n);
    for (const Config cfg : kConfigs) {
      const DropoutKey key{rng(), static_cast<std::uint32_t>(rng() % 4), cfg.p};
      const std::int64_t step = random_step(rng);
      DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step});
      d_y.fill_bytes(0xFF);
      gpu::bias_relu_dropout_forward(d_z.data(), d_b.data(), d_y.data(), s.rows, s.cols, cfg.relu, key,
                                     d_step.data(), nullptr);
      MNIST_CHECK(cudaDeviceSynchronize());
      expect_matches(d_y.download(), forward(z, b, s.rows, s.cols, cfg.relu, key, step), describe(s, cfg, step));
    }
  }
}

TEST(GpuBiasReluDropout, BackwardMatchesTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : kShapes) {
    const std::size_t n = static_cast<std::size_t>(s.rows) * s.cols;
    if (test::too_large_for_tsan(n)) continue;
    const std::vector<float> z = test::random_floats(rng, n);
    const std::vector<float> b = test::random_floats(rng, s.cols);
    const std::vector<float> dy = test::random_floats(rng, n);
    DeviceBuffer<float> d_z(z), d_b(b), d_dy(dy), d_dz(n);
    for (const Config cfg : kConfigs) {
      const DropoutKey key{rng(), static_cast<std::uint32_t>(rng() % 4), cfg.p};
      const std::int64_t step = random_step(rng);
      DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step});
      d_dz.fill_bytes(0xFF);
      gpu::bias_relu_dropout_backward(d_dy.data(), d_z.data(), d_b.data(), d_dz.data(), s.rows, s.cols, cfg.relu,
                                      key, d_step.data(), nullptr);
      MNIST_CHECK(cudaDeviceSynchronize());
      expect_matches(d_dz.download(), backward(dy, z, b, s.rows, s.cols, cfg.relu, key, step),
                     describe(s, cfg, step));
    }
  }
}

// Pointers one float off 16-byte alignment take the scalar path even when cols % 4 == 0; the
// flat index (and so the mask) is relative to the pointers passed.
TEST(GpuBiasReluDropout, UnalignedPointersMatchTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : {Shape{128, 128}, Shape{33, 784}, Shape{1000, 12}}) {
    const std::size_t n = static_cast<std::size_t>(s.rows) * s.cols;
    const std::vector<float> z = test::random_floats(rng, n);
    const std::vector<float> b = test::random_floats(rng, s.cols);
    const std::vector<float> dy = test::random_floats(rng, n);
    std::vector<float> z1(n + 1, 0.f), b1(s.cols + 1, 0.f), dy1(n + 1, 0.f);
    std::copy(z.begin(), z.end(), z1.begin() + 1);
    std::copy(b.begin(), b.end(), b1.begin() + 1);
    std::copy(dy.begin(), dy.end(), dy1.begin() + 1);
    DeviceBuffer<float> d_z(z1), d_b(b1), d_dy(dy1), d_out(n + 1);
    const Config cfg{true, 0.5f};
    const DropoutKey key{rng(), 1, cfg.p};
    const std::int64_t step = random_step(rng);
    DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step});

    d_out.fill_bytes(0xFF);
    gpu::bias_relu_dropout_forward(d_z.data() + 1, d_b.data() + 1, d_out.data() + 1, s.rows, s.cols, cfg.relu, key,
                                   d_step.data(), nullptr);
    MNIST_CHECK(cudaDeviceSynchronize());
    std::vector<float> got = d_out.download();
    expect_matches(std::vector<float>(got.begin() + 1, got.end()), forward(z, b, s.rows, s.cols, cfg.relu, key, step),
                   "forward " + describe(s, cfg, step));

    d_out.fill_bytes(0xFF);
    gpu::bias_relu_dropout_backward(d_dy.data() + 1, d_z.data() + 1, d_b.data() + 1, d_out.data() + 1, s.rows, s.cols,
                                    cfg.relu, key, d_step.data(), nullptr);
    MNIST_CHECK(cudaDeviceSynchronize());
    got = d_out.download();
    expect_matches(std::vector<float>(got.begin() + 1, got.end()),
                   backward(dy, z, b, s.rows, s.cols, cfg.relu, key, step), "backward " + describe(s, cfg, step));
  }
}

// With db, one launch writes dz (as without it, element for element) and sums its columns into
// db: within the bound of any float summation of the column against the twin's exact sum
// (γ_{rows-1} + 2u)·sum|dz| (tests/test_bias_grad.cu derives it), and at the same bits at every
// run, in place (dz aliasing dy) as the trainers call it.
TEST(GpuBiasReluDropout, BackwardWithTheBiasGradientMatchesTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : {Shape{1, 1}, Shape{7, 13}, Shape{129, 129}, Shape{128, 512}, Shape{1000, 10}, Shape{3, 4099}}) {
    const std::size_t n = static_cast<std::size_t>(s.rows) * s.cols;
    const std::vector<float> z = test::random_floats(rng, n);
    const std::vector<float> b = test::random_floats(rng, s.cols);
    const std::vector<float> dy = test::random_floats(rng, n);
    DeviceBuffer<float> d_z(z), d_b(b), d_g(n), d_db(s.cols);
    for (const Config cfg : kConfigs) {
      const DropoutKey key{rng(), static_cast<std::uint32_t>(rng() % 4), cfg.p};
      const std::int64_t step = random_step(rng);
      DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step});
      const std::vector<float> want = backward(dy, z, b, s.rows, s.cols, cfg.relu, key, step);
      std::vector<float> want_db(s.cols);
      twin::bias_grad(want.data(), want_db.data(), s.rows, s.cols);
      std::vector<float> first_db;
      for (int run = 0; run < 2; ++run) {
        d_g.upload(dy);
        d_db.fill_bytes(0xFF);
        gpu::bias_relu_dropout_backward(d_g.data(), d_z.data(), d_b.data(), d_g.data(), s.rows, s.cols, cfg.relu, key,
                                        d_step.data(), nullptr, d_db.data());
        MNIST_CHECK(cudaDeviceSynchronize());
        expect_matches(d_g.download(), want, "dz " + describe(s, cfg, step));
        const std::vector<float> db = d_db.download();
        const double u = std::ldexp(1.0, -24);
        const double gamma = (s.rows - 1) * u / (1 - (s.rows - 1) * u);
        for (int c = 0; c < s.cols; ++c) {
          double abs_sum = 0;
          for (int r = 0; r < s.rows; ++r) abs_sum += std::fabs(want[static_cast<std::size_t>(r) * s.cols + c]);
          ASSERT_TRUE(std::isfinite(db[c])) << describe(s, cfg, step) << " column " << c;
          ASSERT_LE(std::fabs(static_cast<double>(db[c]) - want_db[c]), (gamma + 2 * u) * abs_sum)
              << describe(s, cfg, step) << " column " << c;
        }
        if (run == 0) first_db = db;
        else EXPECT_EQ(db, first_db) << "a repeat differs: " << describe(s, cfg, step);
      }
    }
  }
}

// y aliasing z and dz aliasing dy, on both the float4 and the scalar path.
TEST(GpuBiasReluDropout, InPlaceMatchesTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : {Shape{129, 128}, Shape{129, 129}, Shape{4096, 784}}) {
    const std::size_t n = static_cast<std::size_t>(s.rows) * s.cols;
    if (test::too_large_for_tsan(n)) continue;
    const std::vector<float> z = test::random_floats(rng, n);
    const std::vector<float> b = test::random_floats(rng, s.cols);
    const std::vector<float> dy = test::random_floats(rng, n);
    const Config cfg{true, 0.3f};
    const DropoutKey key{rng(), 0, cfg.p};
    const std::int64_t step = random_step(rng);
    DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step});
    DeviceBuffer<float> d_zy(z), d_b(b), d_z(z), d_g(dy);

    gpu::bias_relu_dropout_forward(d_zy.data(), d_b.data(), d_zy.data(), s.rows, s.cols, cfg.relu, key,
                                   d_step.data(), nullptr);
    gpu::bias_relu_dropout_backward(d_g.data(), d_z.data(), d_b.data(), d_g.data(), s.rows, s.cols, cfg.relu, key,
                                    d_step.data(), nullptr);
    MNIST_CHECK(cudaDeviceSynchronize());
    expect_matches(d_zy.download(), forward(z, b, s.rows, s.cols, cfg.relu, key, step),
                   "forward in place " + describe(s, cfg, step));
    expect_matches(d_g.download(), backward(dy, z, b, s.rows, s.cols, cfg.relu, key, step),
                   "backward in place " + describe(s, cfg, step));
  }
}

// The step is read from device memory at run time: bumping it there (as the training step does
// inside a captured graph) changes the mask, which again matches the CPU twin at the new step.
TEST(GpuBiasReluDropout, StepIsReadFromTheDevice) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kRows = 256, kCols = 100;
  const std::vector<float> z(kRows * kCols, 1.f), b(kCols, 0.f);
  const DropoutKey key{rng(), 1, 0.5f};
  const std::int64_t step = static_cast<std::int64_t>(rng() % 1000000);
  DeviceBuffer<float> d_z(z), d_b(b), d_y(z.size());
  DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step});
  d_y.fill_bytes(0xFF);  // fresh device memory may be zero, which a dropped element is too
  gpu::bias_relu_dropout_forward(d_z.data(), d_b.data(), d_y.data(), kRows, kCols, true, key, d_step.data(), nullptr);
  const std::vector<float> first = d_y.download();
  d_step.upload({step + 1});
  d_y.fill_bytes(0xFF);
  gpu::bias_relu_dropout_forward(d_z.data(), d_b.data(), d_y.data(), kRows, kCols, true, key, d_step.data(), nullptr);
  MNIST_CHECK(cudaDeviceSynchronize());
  const std::vector<float> second = d_y.download();
  expect_matches(first, forward(z, b, kRows, kCols, true, key, step), "step");
  expect_matches(second, forward(z, b, kRows, kCols, true, key, step + 1), "step + 1");
  std::size_t same = 0;
  for (std::size_t i = 0; i < first.size(); ++i) same += (first[i] == 0.f) == (second[i] == 0.f);
  EXPECT_LT(same, first.size() * 6 / 10);  // independent p = 0.5 masks agree on ~half
}

// With dropout off the step is never read, so evaluation may pass a null step pointer.
TEST(GpuBiasReluDropout, NullStepWithoutDropout) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kRows = 129, kCols = 10;
  const std::vector<float> z = test::random_floats(rng, kRows * kCols);
  const std::vector<float> b = test::random_floats(rng, kCols);
  DeviceBuffer<float> d_z(z), d_b(b), d_y(z.size());
  d_y.fill_bytes(0xFF);
  const DropoutKey key{rng(), 2, 0.f};
  gpu::bias_relu_dropout_forward(d_z.data(), d_b.data(), d_y.data(), kRows, kCols, false, key, nullptr, nullptr);
  MNIST_CHECK(cudaDeviceSynchronize());
  expect_matches(d_y.download(), forward(z, b, kRows, kCols, false, key, 0), "null step");
}

}  // namespace
}  // namespace mnist
