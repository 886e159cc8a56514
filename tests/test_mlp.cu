// The CPU model as a whole: initialisation, the data split, the epoch shuffle, and the
// gradient of the mean loss checked against finite differences of an independent
// double-precision forward pass (same Philox dropout masks).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "mnist/optim/adam.h"
#include "mnist/model/mlp.h"
#include "mnist/core/philox.h"
#include "mnist/train/trainer.h"
#include "test_util.h"

namespace mnist {
namespace {

// Mean cross-entropy of the MLP in double precision, written from the definitions and
// sharing nothing with CpuMlp but the Philox mask.
double reference_loss(const MlpShape& shape, const std::vector<double>& params, const std::vector<float>& x,
                      const std::vector<std::uint8_t>& labels, int rows, std::uint64_t seed, float p,
                      std::int64_t step) {
  std::vector<double> a(x.begin(), x.end());
  for (int l = 0; l < shape.layers(); ++l) {
    const int in = shape.in(l), out = shape.out(l);
    const double* w = params.data() + shape.weight_offset(l);
    const double* b = params.data() + shape.bias_offset(l);
    std::vector<double> z(std::size_t(rows) * out);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) {
        double sum = b[o];
        for (int i = 0; i < in; ++i) sum += a[std::size_t(r) * in + i] * w[std::size_t(i) * out + o];
        if (shape.is_hidden(l)) {
          const std::size_t index = std::size_t(r) * out + o;
          const bool keep = dropout_keep(seed, step, l, index, dropout_threshold(p));
          sum = keep ? std::max(sum, 0.0) / (1.0 - p) : 0.0;
        }
        z[std::size_t(r) * out + o] = sum;
      }
    a = std::move(z);
  }
  double total = 0;
  const int classes = shape.sizes.back();
  for (int r = 0; r < rows; ++r) {
    const double* logits = a.data() + std::size_t(r) * classes;
    const double max = *std::max_element(logits, logits + classes);
    double sum = 0;
    for (int c = 0; c < classes; ++c) sum += std::exp(logits[c] - max);
    total += std::log(sum) + max - logits[labels[r]];
  }
  return total / rows;
}

TEST(TwinMlp, GradientMatchesFiniteDifferences) {
  std::mt19937_64 rng(test::fresh_seed());
  const MlpShape shape(12, {9, 7}, 10);
  const int rows = 5;
  const float p = 0.3f;
  const std::uint64_t seed = rng();
  const std::int64_t step = 1 + rng() % 1000;
  CpuMlp model(shape, seed, p, 0.f, rows);
  // Random biases, not the initial zeros: a row whose inputs to a layer are all dead or dropped
  // (each of 9 units with probability ~0.65, so ~2% of rows) has z = b there, and at b = 0 the
  // ReLU sits exactly on its kink, where the central difference sees half a slope and the
  // analytic gradient none (18% of runs failed so). Away from the kink the chance of a
  // pre-activation within h of it is ~1e-4 per run.
  for (int l = 0; l < shape.layers(); ++l) {
    const std::vector<float> b = test::random_floats(rng, std::size_t(shape.out(l)), -0.5f, 0.5f);
    std::copy(b.begin(), b.end(), model.buffers().params.begin() + std::ptrdiff_t(shape.bias_offset(l)));
  }
  // Larger inputs than pixel values make the hidden pre-activations O(1), so the check
  // exercises ReLU and dropout in every layer.
  const std::vector<float> x = test::random_floats(rng, std::size_t(rows) * 12, -2.f, 2.f);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, rows);

  EvalTotals totals;
  model.compute_gradients(x.data(), labels.data(), rows, step, &totals);
  std::vector<double> params(model.buffers().params.begin(), model.buffers().params.end());
  const double loss = reference_loss(shape, params, x, labels, rows, seed, p, step);
  // Float forward against double forward: float rounding of O(10)-term dot products.
  EXPECT_NEAR(totals.loss_sum / rows, loss, 1e-5 * std::max(1.0, loss));

  // Central differences in double: truncation O(h²) and rounding O(1e-16/h) are both far
  // below the float error of the analytic gradient (~1e-7 absolute at these magnitudes).
  const double h = 1e-6;
  int checked = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const double saved = params[i];
    params[i] = saved + h;
    const double up = reference_loss(shape, params, x, labels, rows, seed, p, step);
    params[i] = saved - h;
    const double down = reference_loss(shape, params, x, labels, rows, seed, p, step);
    params[i] = saved;
    const double numeric = (up - down) / (2 * h);
    const double analytic = model.buffers().grads[i];
    ASSERT_TRUE(std::isfinite(analytic)) << "parameter " << i;
    EXPECT_NEAR(analytic, numeric, 1e-3 * std::fabs(numeric) + 1e-5) << "parameter " << i;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(shape.param_count()));
}

TEST(TwinMlp, AdamStepsMemoriseAFixedBatch) {
  std::mt19937_64 rng(test::fresh_seed());
  const MlpShape shape(20, {16}, 10);
  const int rows = 32;
  CpuMlp model(shape, rng(), 0.f, 0.f, rows);
  const std::vector<float> x = test::random_floats(rng, std::size_t(rows) * 20, 0.f, 1.f);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, rows);
  AdamConfig adam;
  adam.lr = 1e-2f;
  double first = 0, last = 0;
  for (int step = 1; step <= 200; ++step) {
    EvalTotals totals;
    model.compute_gradients(x.data(), labels.data(), rows, step, &totals);
    adam_update(adam, model.buffers(), step);
    (step == 1 ? first : last) = totals.loss_sum / rows;
  }
  // 32 random labels are memorised by 16 hidden units within 200 steps at lr 1e-2.
  EXPECT_LT(last, 0.5 * first) << "200 Adam steps on one batch should at least halve its loss";
}

TEST(TwinMlp, ParameterLayoutIsWeightsThenBiasPerLayer) {
  const MlpShape shape(784, {512, 512}, 10);
  EXPECT_EQ(shape.weight_offset(0), 0u);
  EXPECT_EQ(shape.bias_offset(0), 784u * 512);
  EXPECT_EQ(shape.weight_offset(1), 784u * 512 + 512);
  EXPECT_EQ(shape.param_count(), 784u * 512 + 512 + 512u * 512 + 512 + 512u * 10 + 10);
  EXPECT_EQ(shape.param_count(), 669706u);
}

TEST(TwinMlp, HeUniformInitHasTheRightBoundsAndVariance) {
  const std::uint64_t seed = test::fresh_seed();
  const MlpShape shape(784, {512}, 10);
  const std::vector<float> params = he_uniform_init(shape, seed);
  for (int l = 0; l < shape.layers(); ++l) {
    const double bound = std::sqrt(6.0 / shape.in(l));
    const std::size_t n = std::size_t(shape.in(l)) * shape.out(l);
    double sum = 0, sum_sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double w = params[shape.weight_offset(l) + i];
      ASSERT_LE(std::fabs(w), bound);
      sum += w;
      sum_sq += w * w;
    }
    // U(-a, a): mean 0, variance a²/3 = 2/fan_in. Tolerances: 6 standard errors of the estimates.
    const double variance = bound * bound / 3;
    EXPECT_NEAR(sum / n, 0.0, 6 * std::sqrt(variance / n));
    EXPECT_NEAR(sum_sq / n, variance, 6 * variance * std::sqrt(0.8 / n));
    for (int o = 0; o < shape.out(l); ++o) EXPECT_EQ(params[shape.bias_offset(l) + o], 0.f);
  }
  EXPECT_EQ(he_uniform_init(shape, seed), params);
  EXPECT_NE(he_uniform_init(shape, seed + 1), params);
}

TEST(TwinTrainer, ShuffleIsAPermutationThatChangesPerEpoch) {
  const std::uint64_t seed = test::fresh_seed();
  const int n = 54000;
  const std::vector<std::int32_t> first = shuffled_indices(n, seed, 1);
  std::vector<std::int32_t> sorted = first;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::int32_t> identity(n);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(first, identity);
  EXPECT_EQ(shuffled_indices(n, seed, 1), first);
  EXPECT_NE(shuffled_indices(n, seed, 2), first);
  // No position keeps its element much more often than 1/n would allow.
  int fixed_points = 0;
  for (int i = 0; i < n; ++i) fixed_points += first[i] == i;
  EXPECT_LT(fixed_points, 10);
}

Dataset fake_dataset(int train, int test) {
  Dataset d;
  d.train.pixels.assign(std::size_t(train) * kPixels, 0);
  d.train.labels.resize(train);
  for (int i = 0; i < train; ++i) d.train.labels[i] = static_cast<std::uint8_t>(i % 10);
  d.test.pixels.assign(std::size_t(test) * kPixels, 0);
  d.test.labels.assign(test, 0);
  return d;
}

TEST(TwinTrainer, ValidationIsTheHeldOutTailOfTheTrainingImages) {
  const Dataset d = fake_dataset(1000, 100);
  TrainConfig config;
  config.batch_size = 10;
  config.val_split = 0.1f;
  DataSplit split = split_dataset(d, config);
  EXPECT_EQ(split.train.count, 900);
  EXPECT_EQ(split.validation.count, 100);
  EXPECT_EQ(split.validation.labels, d.train.labels.data() + 900);
  EXPECT_EQ(split.validation.pixels, d.train.pixels.data() + 900 * kPixels);
  EXPECT_EQ(split.test.count, 100);

  config.train_subset = 300;
  split = split_dataset(d, config);
  EXPECT_EQ(split.train.count, 300);
  EXPECT_EQ(split.validation.count, 100) << "the subset must not move the validation images";

  config.train_subset = 901;
  EXPECT_THROW(split_dataset(d, config), ConfigError);
  config.train_subset = 0;
  config.batch_size = 901;
  EXPECT_THROW(split_dataset(d, config), ConfigError);
  config.batch_size = 10;
  config.val_split = 0.f;
  EXPECT_EQ(split_dataset(d, config).validation.count, 0);
}

}  // namespace
}  // namespace mnist
