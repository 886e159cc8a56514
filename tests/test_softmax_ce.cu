// Fused softmax + cross-entropy: the CPU twin against the math (independent double-precision
// formulas, finite differences, hand-computed values, extreme logits), then the GPU kernel
// against the CPU twin.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/eval_metrics.h"
#include "mnist/ops/finite_check.h"
#include "mnist/ops/softmax_ce.h"
#include "test_util.h"

namespace mnist {
namespace {

using test::fresh_seed;
using test::max_rel_error;
using test::random_floats;
using test::random_labels;

constexpr int kTen = 10;

// Smoothed target t_c, written from the definition in double.
double target(int c, int label, int classes, double smoothing) {
  return (c == label ? 1.0 - smoothing : 0.0) + smoothing / classes;
}

// The loss of one row from its definition, -sum_c t_c log softmax_c, in double. A different
// form from the code under test (which uses logsumexp - t·z): it agrees because sum_c t_c = 1.
double row_loss_double(const double* z, int label, int classes, double smoothing) {
  double zmax = z[0];
  for (int c = 1; c < classes; ++c) zmax = std::max(zmax, z[c]);
  double sum = 0.0;
  for (int c = 0; c < classes; ++c) sum += std::exp(z[c] - zmax);
  const double log_sum = std::log(sum);
  double loss = 0.0;
  for (int c = 0; c < classes; ++c) loss -= target(c, label, classes, smoothing) * (z[c] - zmax - log_sum);
  return loss;
}

double mean_loss_double(const std::vector<double>& z, const std::vector<std::uint8_t>& labels, int classes,
                        double smoothing) {
  const int rows = static_cast<int>(labels.size());
  double total = 0.0;
  for (int r = 0; r < rows; ++r) total += row_loss_double(&z[static_cast<std::size_t>(r) * classes], labels[r], classes, smoothing);
  return total / rows;
}

struct CeResult {
  std::vector<float> loss, dlogits;
};

CeResult ref_ce(const std::vector<float>& logits, const std::vector<std::uint8_t>& labels, int classes,
                float smoothing) {
  const int rows = static_cast<int>(labels.size());
  CeResult out{test::nan_filled(rows), test::nan_filled(logits.size())};
  twin::softmax_cross_entropy(logits.data(), labels.data(), out.loss.data(), out.dlogits.data(), rows, classes,
                             smoothing);
  return out;
}

// GPU-vs-CPU measure for dlogits: max over elements of |got - want| / max(|want|, p/rows, 1e-30),
// where p = want·rows + t is the softmax probability. The two sides differ only through expf, whose
// error is relative to p, not to p - t (which cancels when p ≈ t): so the error is measured against
// the larger of the gradient and p/rows. Where t = 0 this is the plain relative error. 1e-30: below
// it floats are subnormal (spacing 1.4e-45) and a relative measure means nothing. NaN/inf: +inf.
double grad_error(const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<std::uint8_t>& labels, int classes, float smoothing) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  const int rows = static_cast<int>(labels.size());
  double worst = 0.0;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < classes; ++c) {
      const std::size_t i = static_cast<std::size_t>(r) * classes + c;
      if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
      const double p = static_cast<double>(want[i]) * rows + target(c, labels[r], classes, smoothing);
      const double scale = std::max({std::fabs(static_cast<double>(want[i])), std::fabs(p) / rows, 1e-30});
      worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]) / scale);
    }
  }
  return worst;
}

// ---- CPU twin against the math -------------------------------------------------------------

TEST(TwinSoftmaxCe, LossIsMinusLogSoftmaxOfTheLabel) {
  std::mt19937_64 rng(fresh_seed());
  const int rows = 37;
  const auto logits = random_floats(rng, rows * kTen, -4.f, 4.f);
  const auto labels = random_labels(rng, rows);
  const auto got = ref_ce(logits, labels, kTen, 0.f);

  // Plain one-hot cross-entropy -log(exp(z_label) / sum exp(z)), naive in double (fine for |z| <= 4).
  std::vector<float> want(rows);
  for (int r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (int c = 0; c < kTen; ++c) sum += std::exp(static_cast<double>(logits[r * kTen + c]));
    want[r] = static_cast<float>(-std::log(std::exp(static_cast<double>(logits[r * kTen + labels[r]])) / sum));
  }
  // The float side rounds z - max (|z - max| < 8: half an ulp is 2.4e-7 absolute in the exponent,
  // so 2.4e-7 relative in exp), expf (0.5 ulp) and the stored loss (0.5 ulp): the loss is off by
  // at most ~3e-7 absolute + 6e-8 relative. 1e-6 relative with an absolute floor of 1 covers it.
  EXPECT_LE(max_rel_error(got.loss, want, 1.0), 1e-6);
}

TEST(TwinSoftmaxCe, GradientMatchesFiniteDifferencesOfTheMeanLoss) {
  std::mt19937_64 rng(fresh_seed());
  const int rows = 8;
  for (const float smoothing : {0.f, 0.1f}) {
    const auto logits = random_floats(rng, rows * kTen, -4.f, 4.f);
    const auto labels = random_labels(rng, rows);
    const auto got = ref_ce(logits, labels, kTen, smoothing);

    // Central differences of the mean loss, in double, of the double-precision definition.
    // h = 1e-4: truncation h²/6·|L'''| < 1e-9 and roundoff 1e-16·L/h ~ 1e-12, far below the tolerance.
    std::vector<double> z(logits.begin(), logits.end());
    const double h = 1e-4;
    double worst = 0.0;
    for (std::size_t i = 0; i < z.size(); ++i) {
      const double saved = z[i];
      z[i] = saved + h;
      const double up = mean_loss_double(z, labels, kTen, smoothing);
      z[i] = saved - h;
      const double down = mean_loss_double(z, labels, kTen, smoothing);
      z[i] = saved;
      const double fd = (up - down) / (2 * h);
      ASSERT_TRUE(std::isfinite(got.dlogits[i]));
      worst = std::max(worst, std::fabs(got.dlogits[i] - fd) * rows);
    }
    // In units of probability (×rows): the float gradient's softmax is off by < 6.6e-7 (rounded
    // z - max: 2.4e-7 relative in each exp, expf: 0.5 ulp, both through e/sum, one final
    // rounding), the finite difference by < 1e-8.
    EXPECT_LE(worst, 1e-6) << "label smoothing " << smoothing;
  }
}

TEST(TwinSoftmaxCe, GradientMatchesFiniteDifferencesOfTheFloatLoss) {
  // The float function's own loss and gradient agree: differentiate the loss it returns.
  std::mt19937_64 rng(fresh_seed());
  const int rows = 5;
  for (const float smoothing : {0.f, 0.2f}) {
    auto logits = random_floats(rng, rows * kTen, -4.f, 4.f);
    const auto labels = random_labels(rng, rows);
    const auto got = ref_ce(logits, labels, kTen, smoothing);
    const auto mean_loss = [&](const std::vector<float>& x) {
      const auto out = ref_ce(x, labels, kTen, smoothing);
      double total = 0.0;
      for (const float l : out.loss) total += l;
      return total / rows;
    };
    double worst = 0.0;
    for (std::size_t i = 0; i < logits.size(); ++i) {
      const float saved = logits[i];
      const float up_z = saved + 3e-2f, down_z = saved - 3e-2f;
      logits[i] = up_z;
      const double up = mean_loss(logits);
      logits[i] = down_z;
      const double down = mean_loss(logits);
      logits[i] = saved;
      const double fd = (up - down) / (static_cast<double>(up_z) - down_z);  // the step actually taken
      worst = std::max(worst, std::fabs(got.dlogits[i] - fd) * rows);
    }
    // ×rows units. Each float loss (< 11) is off by < 1e-6 absolute (rounded z - max, expf, the
    // stored loss: 0.5 ulp = 4.8e-7): roundoff < 2·1e-6/0.06 = 3.3e-5; truncation
    // h²/6·max|lse'''| = 9e-4/6·0.0962 = 1.5e-5. Total < 5e-5.
    EXPECT_LE(worst, 1e-4) << "label smoothing " << smoothing;
  }
}

TEST(TwinSoftmaxCe, LabelSmoothingByHand) {
  // classes 4, s = 0.25 (exact in binary): t = 0.0625 off the label, 0.75 + 0.0625 = 0.8125 on it.
  // Row 0: z = {1, 0, 0, 0}, label 0: sum exp = e + 3;  loss = log(e + 3) - 0.8125·1 = 0.9311683806
  //        p = {e/(e+3), 1/(e+3) ×3} = {0.4753668864, 0.1748777045 ×3};  d = (p - t)/2.
  // Row 1: z = {0, 0, 0, 0}, label 2: loss = log 4 = 1.3862943611;  d = (0.25 - t)/2.
  const std::vector<float> logits = {1, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<std::uint8_t> labels = {0, 2};
  const auto got = ref_ce(logits, labels, 4, 0.25f);
  const double e = std::exp(1.0);
  const std::vector<float> want_loss = {static_cast<float>(std::log(e + 3) - 0.8125), static_cast<float>(std::log(4.0))};
  const float p0 = static_cast<float>(e / (e + 3)), p1 = static_cast<float>(1 / (e + 3));
  const std::vector<float> want_d = {(p0 - 0.8125f) / 2, (p1 - 0.0625f) / 2, (p1 - 0.0625f) / 2, (p1 - 0.0625f) / 2,
                                     (0.25f - 0.0625f) / 2, (0.25f - 0.0625f) / 2, (0.25f - 0.8125f) / 2,
                                     (0.25f - 0.0625f) / 2};
  EXPECT_NEAR(got.loss[0], 0.9311683806, 1e-6);
  EXPECT_NEAR(got.loss[1], 1.3862943611, 1e-6);
  // A few ulp of float arithmetic on both sides (exp, two roundings), values >= 0.05.
  EXPECT_LE(max_rel_error(got.loss, want_loss), 1e-6);
  EXPECT_LE(max_rel_error(got.dlogits, want_d), 1e-6);
}

TEST(TwinSoftmaxCe, SmoothedLossIsTheMixOfOneHotAndUniformLosses) {
  // Identity: CE(t_s) = (1 - s)·CE(onehot) + s·mean_c CE(onehot_c), each term independently computed.
  std::mt19937_64 rng(fresh_seed());
  const int rows = 50;
  const float s = 0.15f;
  const auto logits = random_floats(rng, rows * kTen, -6.f, 6.f);
  const auto labels = random_labels(rng, rows);
  const auto smoothed = ref_ce(logits, labels, kTen, s);
  const auto plain = ref_ce(logits, labels, kTen, 0.f);
  std::vector<float> want(rows);
  for (int r = 0; r < rows; ++r) {
    double uniform = 0.0;
    for (int c = 0; c < kTen; ++c) {
      const std::vector<float> row(logits.begin() + r * kTen, logits.begin() + (r + 1) * kTen);
      uniform += ref_ce(row, {static_cast<std::uint8_t>(c)}, kTen, 0.f).loss[0];
    }
    want[r] = static_cast<float>((1.0 - s) * plain.loss[r] + s * uniform / kTen);
  }
  // Both sides use the same float z - max, and the identity is exact for them: what is left is
  // each loss's final rounding to float (0.5 ulp each, losses < 16): < 2e-7 relative / absolute.
  EXPECT_LE(max_rel_error(smoothed.loss, want, 1.0), 1e-6);
}

TEST(TwinSoftmaxCe, ExtremeLogitsGiveFiniteExactValues) {
  // Rows of ±1e4: exp of everything below the max underflows to 0 (or is exp(0) = 1).
  const int rows = 5;
  std::vector<float> logits(rows * kTen, 0.f);
  logits[0 * kTen + 0] = 1e4f;                                     // row 0: {1e4, 0...}, label 0
  logits[1 * kTen + 0] = 1e4f;                                     // row 1: {1e4, 0...}, label 1
  for (int c = 0; c < kTen; ++c) logits[2 * kTen + c] = -1e4f;     // row 2: {-1e4, 1e4, -1e4...}, label 0
  logits[2 * kTen + 1] = 1e4f;
  for (int c = 0; c < kTen; ++c) logits[3 * kTen + c] = 1e4f;      // row 3: all 1e4, label 7
  for (int c = 0; c < kTen; ++c) logits[4 * kTen + c] = -1e4f;     // row 4: all -1e4, label 3
  const std::vector<std::uint8_t> labels = {0, 1, 0, 7, 3};

  const auto got = ref_ce(logits, labels, kTen, 0.f);
  EXPECT_EQ(got.loss[0], 0.f);  // log(1 + 9e^-1e4) = 0 in any precision
  EXPECT_EQ(got.loss[1], 1e4f);
  EXPECT_EQ(got.loss[2], 2e4f);
  EXPECT_NEAR(got.loss[3], std::log(10.0), 1e-6);
  EXPECT_NEAR(got.loss[4], std::log(10.0), 1e-6);
  std::vector<float> want_d(rows * kTen, 0.f);
  want_d[1 * kTen + 0] = 1.f / rows;  // softmax {1, 0...} - onehot(1)
  want_d[1 * kTen + 1] = -1.f / rows;
  want_d[2 * kTen + 0] = -1.f / rows;  // softmax {0, 1, 0...} - onehot(0)
  want_d[2 * kTen + 1] = 1.f / rows;
  for (int c = 0; c < kTen; ++c) {
    want_d[3 * kTen + c] = static_cast<float>((0.1 - (c == 7)) / rows);
    want_d[4 * kTen + c] = static_cast<float>((0.1 - (c == 3)) / rows);
  }
  EXPECT_LE(max_rel_error(got.dlogits, want_d, 1e-30), 1e-6);

  // With smoothing s = 0.1 every off-label class has target 0.01 and sits 1e4 below the max:
  // row 0 loss = 9·0.01·1e4 = 900;  row 1 loss = 0.91·1e4 + 8·0.01·1e4 = 9900.
  const auto smoothed = ref_ce(logits, labels, kTen, 0.1f);
  const double off = static_cast<double>(0.1f) / kTen, on = 1.0 - static_cast<double>(0.1f) + off;
  EXPECT_NEAR(smoothed.loss[0], 9 * off * 1e4, 1e-3);
  EXPECT_NEAR(smoothed.loss[1], (on + 8 * off) * 1e4, 1e-2);
  EXPECT_NEAR(smoothed.loss[2], (on + 8 * off) * 2e4, 2e-2);
  for (const float d : smoothed.dlogits) EXPECT_TRUE(std::isfinite(d));
}

TEST(TwinSoftmaxCe, GradientInPlaceAndNullGradient) {
  std::mt19937_64 rng(fresh_seed());
  const int rows = 33;
  auto logits = random_floats(rng, rows * kTen, -5.f, 5.f);
  const auto labels = random_labels(rng, rows);
  const auto separate = ref_ce(logits, labels, kTen, 0.1f);

  std::vector<float> loss_null = test::nan_filled(rows);
  twin::softmax_cross_entropy(logits.data(), labels.data(), loss_null.data(), nullptr, rows, kTen, 0.1f);
  EXPECT_EQ(loss_null, separate.loss);

  std::vector<float> loss_in_place = test::nan_filled(rows);
  twin::softmax_cross_entropy(logits.data(), labels.data(), loss_in_place.data(), logits.data(), rows, kTen, 0.1f);
  EXPECT_EQ(loss_in_place, separate.loss);
  EXPECT_EQ(logits, separate.dlogits);
}

TEST(TwinSoftmaxCe, LabelOutOfRangeHasNoOneHotPart) {
  // Documented behaviour: label >= classes targets only the smoothing mass; nothing out of bounds.
  const std::vector<float> logits = {0, 0, 0, 0};
  const auto got = ref_ce(logits, {200}, 4, 0.f);
  EXPECT_NEAR(got.loss[0], std::log(4.0), 1e-6);  // log-sum-exp, no target term
  for (const float d : got.dlogits) EXPECT_FLOAT_EQ(d, 0.25f);
}

// ---- GPU kernel against the CPU twin ------------------------------------------------------------

// Tolerances (GPU vs CPU). Both sides do the same operations in the same order; expf differs
// (CUDA: <= 2 ulp, glibc: <= 1 ulp, so <= 3 ulp = 3.6e-7 relative per exp), and nvcc contracts
// the double sums' multiply-adds into FMAs (about 1e-16 relative, far below the rest). The sum of exps in
// double inherits <= 3.6e-7 relative, so p = e/sum differs by <= 7.2e-7 relative to p; the one
// final float rounding adds <= 1 ulp (1.2e-7) of the gradient: <= 8.4e-7 against max(|d|, p/rows).
// The loss = log(sum) - dot differs by <= 3.6e-7 absolute plus 1 ulp of itself: 1e-6 relative
// with an absolute floor of 1.
constexpr double kGradTolerance = 1e-6;
constexpr double kLossTolerance = 1e-6;

void check_gpu_against_cpu(std::mt19937_64& rng, int rows, int classes, float smoothing, bool extreme) {
  SCOPED_TRACE(::testing::Message() << "rows " << rows << " classes " << classes << " smoothing " << smoothing
                                    << (extreme ? " extreme" : ""));
  auto logits = random_floats(rng, static_cast<std::size_t>(rows) * classes, -8.f, 8.f);
  if (extreme)  // every third row scaled to ±1e4
    for (int r = 0; r < rows; r += 3)
      for (int c = 0; c < classes; ++c) logits[static_cast<std::size_t>(r) * classes + c] *= 1250.f;
  const auto labels = random_labels(rng, rows, classes);
  const auto want = ref_ce(logits, labels, classes, smoothing);

  const DeviceBuffer<float> d_logits(logits);
  const DeviceBuffer<std::uint8_t> d_labels(labels);
  DeviceBuffer<float> d_loss(rows), d_grad(logits.size());
  d_loss.fill_bytes(0xFF);
  d_grad.fill_bytes(0xFF);
  gpu::softmax_cross_entropy(d_logits.data(), d_labels.data(), d_loss.data(), d_grad.data(), rows, classes,
                             smoothing, nullptr);
  MNIST_CHECK(cudaDeviceSynchronize());
  EXPECT_LE(max_rel_error(d_loss.download(), want.loss, 1.0), kLossTolerance);
  EXPECT_LE(grad_error(d_grad.download(), want.dlogits, labels, classes, smoothing), kGradTolerance);
}

TEST(GpuSoftmaxCe, MatchesCpuTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (const int rows : {1, 7, 127, 128, 129, 1000, 60000})
    for (const float smoothing : {0.f, 0.1f}) check_gpu_against_cpu(rng, rows, kTen, smoothing, false);
}

TEST(GpuSoftmaxCe, MatchesCpuTwinWithExtremeLogits) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (const int rows : {1, 129, 1000})
    for (const float smoothing : {0.f, 0.1f}) check_gpu_against_cpu(rng, rows, kTen, smoothing, true);
}

TEST(GpuSoftmaxCe, MatchesCpuTwinForOtherClassCounts) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (const int classes : {1, 3, 33}) check_gpu_against_cpu(rng, 257, classes, 0.05f, false);
}

TEST(GpuSoftmaxCe, InPlaceAndNullGradient) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  const int rows = 1000;
  const auto logits = random_floats(rng, rows * kTen, -8.f, 8.f);
  const auto labels = random_labels(rng, rows);
  const auto want = ref_ce(logits, labels, kTen, 0.1f);

  DeviceBuffer<float> d_logits(logits);
  const DeviceBuffer<std::uint8_t> d_labels(labels);
  DeviceBuffer<float> d_loss(rows), d_grad(logits.size());
  d_loss.fill_bytes(0xFF);
  d_grad.fill_bytes(0xFF);
  gpu::softmax_cross_entropy(d_logits.data(), d_labels.data(), d_loss.data(), d_grad.data(), rows, kTen, 0.1f,
                             nullptr);
  const auto separate_loss = d_loss.download();
  const auto separate_grad = d_grad.download();

  // No gradient: the same loss, bit for bit.
  d_loss.fill_bytes(0xFF);
  gpu::softmax_cross_entropy(d_logits.data(), d_labels.data(), d_loss.data(), nullptr, rows, kTen, 0.1f, nullptr);
  EXPECT_EQ(d_loss.download(), separate_loss);

  // In place: the same loss and gradient, bit for bit.
  d_loss.fill_bytes(0xFF);
  gpu::softmax_cross_entropy(d_logits.data(), d_labels.data(), d_loss.data(), d_logits.data(), rows, kTen, 0.1f,
                             nullptr);
  EXPECT_EQ(d_loss.download(), separate_loss);
  EXPECT_EQ(d_logits.download(), separate_grad);
  EXPECT_LE(grad_error(separate_grad, want.dlogits, labels, kTen, 0.1f), kGradTolerance);
}

// ---- the batch totals of a training step ----------------------------------------------------------

// Random logits and labels, some labels beyond the classes (left out of the totals), and totals
// that already hold earlier batches.
struct TotalsCase {
  std::vector<float> logits;
  std::vector<std::uint8_t> labels;
  EvalTotals start;
};
TotalsCase totals_case(std::mt19937_64& rng, int rows) {
  TotalsCase c{random_floats(rng, static_cast<std::size_t>(rows) * kTen, -8.f, 8.f), random_labels(rng, rows), {}};
  for (int r = 0; r < rows; r += 37) c.labels[r] = 200;
  c.start.loss_sum = std::uniform_real_distribution<double>(0.0, 1e4)(rng);
  c.start.correct = rng() % 100000;
  c.start.count = c.start.correct + rng() % 100000;
  return c;
}

// The twin's totals are the metrics twin's loss sum, correct and count (no confusion matrix).
TEST(TwinSoftmaxCe, BatchTotalsAreTheMetricsTwinsWithoutTheConfusionMatrix) {
  std::mt19937_64 rng(fresh_seed());
  for (const int rows : {1, 100, 1000}) {
    const TotalsCase c = totals_case(rng, rows);
    std::vector<float> loss(rows), dlogits(c.logits.size());
    EvalTotals got = c.start, want = c.start;
    twin::softmax_cross_entropy(c.logits.data(), c.labels.data(), loss.data(), dlogits.data(), rows, kTen, 0.1f, &got);
    twin::accumulate_metrics(c.logits.data(), c.labels.data(), loss.data(), rows, &want, nullptr);
    EXPECT_EQ(got.loss_sum, want.loss_sum) << rows;
    EXPECT_EQ(got.correct, want.correct) << rows;
    EXPECT_EQ(got.count, want.count) << rows;
    EXPECT_EQ(got.count - c.start.count, static_cast<unsigned long long>(rows - (rows + 36) / 37)) << "label 200";
    for (const unsigned long long cell : got.confusion) EXPECT_EQ(cell, 0u);
  }
}

// On the device: the loss and gradient of the launch without totals, bit for bit; the counts of
// the twin exactly; the loss sum to double rounding, and the same bits at every launch (the
// emulator runs the blocks in a fresh order each time); the scratch left zeroed for the next
// launch. Rows up to beyond 256 blocks of 256, where the grid strides.
TEST(GpuSoftmaxCe, BatchTotalsMatchTheCpuTwinAndRepeatBitForBit) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (const int rows : {1, 255, 256, 257, 5000, 70000}) {
    if (test::too_large_for_tsan(static_cast<std::size_t>(rows) * kTen)) continue;
    SCOPED_TRACE("rows " + std::to_string(rows));
    const TotalsCase c = totals_case(rng, rows);
    std::vector<float> loss(rows), dlogits(c.logits.size());
    EvalTotals want = c.start;
    twin::softmax_cross_entropy(c.logits.data(), c.labels.data(), loss.data(), dlogits.data(), rows, kTen, 0.1f,
                               &want);

    const DeviceBuffer<float> d_logits(c.logits);
    const DeviceBuffer<std::uint8_t> d_labels(c.labels);
    DeviceBuffer<float> d_loss(rows), d_grad(c.logits.size());
    d_loss.fill_bytes(0xFF);
    d_grad.fill_bytes(0xFF);
    gpu::softmax_cross_entropy(d_logits.data(), d_labels.data(), d_loss.data(), d_grad.data(), rows, kTen, 0.1f,
                               nullptr);
    const std::vector<float> plain_loss = d_loss.download(), plain_grad = d_grad.download();

    DeviceBuffer<EvalTotals> d_totals(1);
    DeviceBuffer<SoftmaxCeScratch> d_scratch(1);
    d_scratch.fill_bytes(0);
    DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{7}), d_flag(std::vector<std::int64_t>{kAllFinite});
    std::vector<EvalTotals> runs;
    for (int run = 0; run < 3; ++run) {
      d_totals.upload({c.start});
      d_loss.fill_bytes(0xFF);
      d_grad.fill_bytes(0xFF);
      gpu::softmax_cross_entropy(d_logits.data(), d_labels.data(), d_loss.data(), d_grad.data(), rows, kTen, 0.1f,
                                 nullptr, {d_totals.data(), d_scratch.data(), d_step.data(), d_flag.data()});
      EXPECT_EQ(d_loss.download(), plain_loss);
      EXPECT_EQ(d_grad.download(), plain_grad);
      runs.push_back(d_totals.download().at(0));
      EXPECT_EQ(d_scratch.download().at(0).blocks_done, 0u) << "the ticket counter is left for the next launch";
    }
    EXPECT_EQ(d_flag.download().at(0), kAllFinite);
    for (const EvalTotals& got : runs) {
      EXPECT_EQ(got.correct, want.correct);
      EXPECT_EQ(got.count, want.count);
      EXPECT_NEAR(got.loss_sum, want.loss_sum, 1e-12 * want.loss_sum);
      EXPECT_EQ(got.loss_sum, runs[0].loss_sum) << "the sum's order depends on nothing but rows";
      for (const unsigned long long cell : got.confusion) EXPECT_EQ(cell, 0u);
    }
  }
}

}  // namespace
}  // namespace mnist
