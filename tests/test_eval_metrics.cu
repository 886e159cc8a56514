// Evaluation reductions: the CPU twin on hand-made batches (known argmax, ties, skipped labels,
// accumulation), then the GPU kernel against it, and its determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/eval_metrics.h"
#include "test_util.h"

namespace mnist {
namespace {

using test::fresh_seed;
using test::random_floats;
using test::random_labels;

void expect_counts_equal(const EvalTotals& got, const EvalTotals& want) {
  EXPECT_EQ(got.correct, want.correct);
  EXPECT_EQ(got.count, want.count);
  for (int i = 0; i < kClasses * kClasses; ++i)
    EXPECT_EQ(got.confusion[i], want.confusion[i]) << "confusion[" << i / kClasses << "][" << i % kClasses << "]";
}

// |got - want| / |want| (want != 0); NaN fails.
double rel_diff(double got, double want) {
  if (!std::isfinite(got)) return std::numeric_limits<double>::infinity();
  return std::fabs(got - want) / std::fmax(std::fabs(want), 1e-300);
}

// Random logits; every other row drawn from {0, 1, 2, 3} so that ties are common.
std::vector<float> logits_with_ties(std::mt19937_64& rng, int rows) {
  auto logits = random_floats(rng, static_cast<std::size_t>(rows) * kClasses, -3.f, 3.f);
  std::uniform_int_distribution<int> small(0, 3);
  for (int r = 0; r < rows; r += 2)
    for (int c = 0; c < kClasses; ++c) logits[static_cast<std::size_t>(r) * kClasses + c] = static_cast<float>(small(rng));
  return logits;
}

// A non-trivial starting point, so the tests see that totals are added to, not overwritten.
EvalTotals some_totals(std::mt19937_64& rng) {
  EvalTotals t;
  std::uniform_int_distribution<int> small(0, 1000);
  t.loss_sum = 17.25;
  for (auto& c : t.confusion) c = static_cast<unsigned long long>(small(rng));
  for (int i = 0; i < kClasses; ++i) t.correct += t.confusion[i * kClasses + i];
  for (const auto c : t.confusion) t.count += c;
  return t;
}

// ---- CPU twin --------------------------------------------------------------------------------

TEST(TwinEvalMetrics, HandMadeLogitsWithKnownArgmax) {
  std::vector<float> logits(4 * kClasses, 0.f);
  logits[0 * kClasses + 0] = 0.1f;  // row 0: max 0.9 at class 1, label 1: right
  logits[0 * kClasses + 1] = 0.9f;
  logits[0 * kClasses + 2] = 0.2f;
  logits[1 * kClasses + 7] = 3.f;   // row 1: max at 7, label 2: wrong
  const float row2[kClasses] = {-5, -4, -3, -2, -1, -6, -7, -8, -9, -10};  // max at 4, label 4: right
  for (int c = 0; c < kClasses; ++c) logits[2 * kClasses + c] = row2[c];
  for (int c = 0; c < kClasses; ++c) logits[3 * kClasses + c] = 1.f;       // max at 9 alone, label 9: right
  logits[3 * kClasses + 9] = 2.f;
  const std::vector<std::uint8_t> labels = {1, 2, 4, 9};
  const std::vector<float> loss = {0.5f, 2.25f, 0.125f, 1.0f};  // sum 3.875, exact

  EvalTotals totals;
  std::vector<std::int32_t> predictions(4, -1);
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), 4, &totals, predictions.data());
  EXPECT_EQ(predictions, (std::vector<std::int32_t>{1, 7, 4, 9}));
  EXPECT_EQ(totals.correct, 3u);
  EXPECT_EQ(totals.count, 4u);
  EXPECT_EQ(totals.loss_sum, 3.875);
  EvalTotals want;
  want.correct = 3;
  want.count = 4;
  want.confusion[1 * kClasses + 1] = 1;
  want.confusion[2 * kClasses + 7] = 1;
  want.confusion[4 * kClasses + 4] = 1;
  want.confusion[9 * kClasses + 9] = 1;
  expect_counts_equal(totals, want);
}

TEST(TwinEvalMetrics, TiesGoToTheFirstMaximum) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::vector<float>> rows = {
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},            // all equal: 0
      {0, 5, 5, 0, 0, 0, 0, 0, 0, 5},            // 1
      {1, 2, 3, 9, 0, 0, 0, 0, 0, 9},            // 3
      {-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf},  // all -inf: 0
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 1e-30f},       // a strictly larger last element: 9
      {-1, -1, -1, -1, -1, -1, -1, -1, -0.5f, -0.5f},  // 8
  };
  const std::vector<std::int32_t> want = {0, 1, 3, 0, 9, 8};
  std::vector<float> logits;
  for (const auto& row : rows) logits.insert(logits.end(), row.begin(), row.end());
  const int n = static_cast<int>(rows.size());
  const std::vector<std::uint8_t> labels(n, 0);
  const std::vector<float> loss(n, 1.f);
  EvalTotals totals;
  std::vector<std::int32_t> predictions(n, -1);
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), n, &totals, predictions.data());
  EXPECT_EQ(predictions, want);
  EXPECT_EQ(totals.correct, 2u);  // rows 0 and 3 predict label 0
}

TEST(TwinEvalMetrics, ConfusionMarginalsMatchLabelsAndPredictions) {
  std::mt19937_64 rng(fresh_seed());
  const int rows = 1000;
  const auto logits = logits_with_ties(rng, rows);
  const auto labels = random_labels(rng, rows);
  const auto loss = random_floats(rng, rows, 0.f, 5.f);
  EvalTotals totals;
  std::vector<std::int32_t> predictions(rows, -1);
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), rows, &totals, predictions.data());

  unsigned long long sum = 0, trace = 0;
  for (int i = 0; i < kClasses * kClasses; ++i) sum += totals.confusion[i];
  for (int i = 0; i < kClasses; ++i) trace += totals.confusion[i * kClasses + i];
  EXPECT_EQ(sum, totals.count);
  EXPECT_EQ(totals.count, static_cast<unsigned long long>(rows));
  EXPECT_EQ(trace, totals.correct);
  // Row c of the matrix counts label c, column c counts prediction c.
  for (int c = 0; c < kClasses; ++c) {
    unsigned long long label_count = 0, pred_count = 0, row_sum = 0, col_sum = 0;
    for (int r = 0; r < rows; ++r) {
      label_count += labels[r] == c;
      pred_count += predictions[r] == c;
    }
    for (int k = 0; k < kClasses; ++k) {
      row_sum += totals.confusion[c * kClasses + k];
      col_sum += totals.confusion[k * kClasses + c];
    }
    EXPECT_EQ(row_sum, label_count) << c;
    EXPECT_EQ(col_sum, pred_count) << c;
  }
  double loss_sum = 0.0;
  for (const float l : loss) loss_sum += l;
  EXPECT_LE(rel_diff(totals.loss_sum, loss_sum), 1e-12);
}

TEST(TwinEvalMetrics, TwoCallsEqualOneCallOnTheConcatenation) {
  std::mt19937_64 rng(fresh_seed());
  const int rows = 777, split = 300;
  const auto logits = logits_with_ties(rng, rows);
  const auto labels = random_labels(rng, rows);
  const auto loss = random_floats(rng, rows, 0.f, 5.f);
  const EvalTotals start = some_totals(rng);

  EvalTotals whole = start;
  std::vector<std::int32_t> whole_pred(rows, -1);
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), rows, &whole, whole_pred.data());
  EvalTotals parts = start;
  std::vector<std::int32_t> parts_pred(rows, -1);
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), split, &parts, parts_pred.data());
  twin::accumulate_metrics(logits.data() + split * kClasses, labels.data() + split, loss.data() + split, rows - split,
                          &parts, parts_pred.data() + split);
  expect_counts_equal(parts, whole);
  EXPECT_EQ(parts_pred, whole_pred);
  // The batch sums are added to the total: the split only regroups double additions.
  EXPECT_LE(rel_diff(parts.loss_sum, whole.loss_sum), 1e-12);
  EXPECT_EQ(whole.count, start.count + rows);
}

TEST(TwinEvalMetrics, LabelsAboveNineAreSkippedButPredicted) {
  std::vector<float> logits(4 * kClasses, 0.f);
  for (int r = 0; r < 4; ++r) logits[r * kClasses + 3] = 1.f;  // every row predicts 3
  const std::vector<std::uint8_t> labels = {3, 10, 255, 5};
  const std::vector<float> loss = {1.f, 100.f, 1000.f, 2.f};
  EvalTotals totals;
  std::vector<std::int32_t> predictions(4, -1);
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), 4, &totals, predictions.data());
  EXPECT_EQ(predictions, (std::vector<std::int32_t>{3, 3, 3, 3}));
  EvalTotals want;
  want.count = 2;
  want.correct = 1;
  want.confusion[3 * kClasses + 3] = 1;
  want.confusion[5 * kClasses + 3] = 1;
  expect_counts_equal(totals, want);
  EXPECT_EQ(totals.loss_sum, 3.0);
}

TEST(TwinEvalMetrics, PredictionsMayBeNull) {
  std::mt19937_64 rng(fresh_seed());
  const int rows = 50;
  const auto logits = logits_with_ties(rng, rows);
  const auto labels = random_labels(rng, rows);
  const auto loss = random_floats(rng, rows, 0.f, 5.f);
  EvalTotals with, without;
  std::vector<std::int32_t> predictions(rows);
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), rows, &with, predictions.data());
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), rows, &without, nullptr);
  expect_counts_equal(without, with);
  EXPECT_EQ(without.loss_sum, with.loss_sum);
}

// ---- GPU kernel against the CPU twin ------------------------------------------------------------

// Tolerances (GPU vs CPU): predictions, counts and the confusion matrix are integers: exact. The
// loss sum is the same float values summed in double in a different order (tree vs sequential):
// relative difference < rows · 2^-53 ~ 7e-12 for 60000 rows; checked at 1e-6 relative.
constexpr double kLossSumTolerance = 1e-6;

struct GpuRun {
  EvalTotals totals;
  std::vector<std::int32_t> predictions;
};

GpuRun run_gpu(const std::vector<float>& logits, const std::vector<std::uint8_t>& labels,
               const std::vector<float>& loss, const EvalTotals& start, bool with_predictions) {
  const int rows = static_cast<int>(labels.size());
  const DeviceBuffer<float> d_logits(logits), d_loss(loss);
  const DeviceBuffer<std::uint8_t> d_labels(labels);
  DeviceBuffer<EvalTotals> d_totals(std::vector<EvalTotals>{start});
  DeviceBuffer<std::int32_t> d_pred(rows);
  d_pred.fill_bytes(0xFF);
  gpu::accumulate_metrics(d_logits.data(), d_labels.data(), d_loss.data(), rows, d_totals.data(),
                          with_predictions ? d_pred.data() : nullptr, nullptr);
  MNIST_CHECK(cudaDeviceSynchronize());
  return {d_totals.download()[0], d_pred.download()};
}

void check_gpu_against_cpu(std::mt19937_64& rng, int rows, bool bad_labels) {
  SCOPED_TRACE(::testing::Message() << "rows " << rows << (bad_labels ? " with labels > 9" : ""));
  const auto logits = logits_with_ties(rng, rows);
  auto labels = random_labels(rng, rows);
  if (bad_labels)
    for (int r = 0; r < rows; r += 5) labels[r] = static_cast<std::uint8_t>(r % 2 ? 10 : 255);
  const auto loss = random_floats(rng, rows, 0.f, 5.f);
  const EvalTotals start = some_totals(rng);

  EvalTotals want = start;
  std::vector<std::int32_t> want_pred(rows, -1);
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), rows, &want, want_pred.data());
  const GpuRun got = run_gpu(logits, labels, loss, start, true);
  EXPECT_EQ(got.predictions, want_pred);
  expect_counts_equal(got.totals, want);
  EXPECT_LE(rel_diff(got.totals.loss_sum, want.loss_sum), kLossSumTolerance);
}

TEST(GpuEvalMetrics, MatchesCpuTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (const int rows : {1, 7, 127, 128, 129, 1000, 1023, 1024, 1025, 10000, 60000}) check_gpu_against_cpu(rng, rows, false);
}

TEST(GpuEvalMetrics, SkipsLabelsAboveNineLikeTheCpu) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (const int rows : {1, 129, 60000}) check_gpu_against_cpu(rng, rows, true);
}

TEST(GpuEvalMetrics, BitIdenticalRunToRun) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  const int rows = 60000;
  const auto logits = logits_with_ties(rng, rows);
  const auto labels = random_labels(rng, rows);
  const auto loss = random_floats(rng, rows, 0.f, 5.f);
  const EvalTotals start = some_totals(rng);
  const GpuRun first = run_gpu(logits, labels, loss, start, true);
  const GpuRun second = run_gpu(logits, labels, loss, start, true);
  EXPECT_EQ(std::memcmp(&first.totals, &second.totals, sizeof(EvalTotals)), 0);
  EXPECT_EQ(first.predictions, second.predictions);
}

TEST(GpuEvalMetrics, AccumulatesAcrossLaunchesAndPredictionsMayBeNull) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  const int rows = 5000, split = 1234;
  const auto logits = logits_with_ties(rng, rows);
  const auto labels = random_labels(rng, rows);
  const auto loss = random_floats(rng, rows, 0.f, 5.f);
  const EvalTotals start = some_totals(rng);
  EvalTotals want = start;
  twin::accumulate_metrics(logits.data(), labels.data(), loss.data(), rows, &want, nullptr);

  const DeviceBuffer<float> d_logits(logits), d_loss(loss);
  const DeviceBuffer<std::uint8_t> d_labels(labels);
  DeviceBuffer<EvalTotals> d_totals(std::vector<EvalTotals>{start});
  gpu::accumulate_metrics(d_logits.data(), d_labels.data(), d_loss.data(), split, d_totals.data(), nullptr, nullptr);
  gpu::accumulate_metrics(d_logits.data() + split * kClasses, d_labels.data() + split, d_loss.data() + split,
                          rows - split, d_totals.data(), nullptr, nullptr);
  const EvalTotals got = d_totals.download()[0];
  expect_counts_equal(got, want);
  EXPECT_LE(rel_diff(got.loss_sum, want.loss_sum), kLossSumTolerance);
}

}  // namespace
}  // namespace mnist
