#pragma once
// Comparisons of evaluation totals and predictions between two devices (the GPU against its CPU
// twin), shared by the trainer and CNN tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mnist/ops/eval_metrics.h"

namespace mnist::test {

// A prediction may flip between devices where an image's two largest logits are within rounding
// of each other (cuBLAS's and cuDNN's sums against the CPU's; in the trainer tests' setup about
// 6·δ of the images have a top-two gap below δ, relative, measured on the CPU trainer over 200
// seeds): 1 image in 100 (at least 1) may. A wrong layout or formula moves most of them.
inline long long allowed_flips(unsigned long long images) {
  return std::max<long long>(1, static_cast<long long>(images) / 100);
}

// The metrics of the same images from logits equal up to rounding: the loss within 1e-5
// relative, the counts and confusion cells up to allowed_flips() moved predictions.
inline void expect_totals_close(const EvalTotals& got, const EvalTotals& want) {
  EXPECT_EQ(got.count, want.count);
  const long long flips = allowed_flips(want.count);
  EXPECT_LE(std::llabs(static_cast<long long>(got.correct) - static_cast<long long>(want.correct)), flips);
  long long moved = 0;  // each flipped prediction leaves one cell and enters another
  for (int i = 0; i < kClasses * kClasses; ++i)
    moved += std::llabs(static_cast<long long>(got.confusion[i]) - static_cast<long long>(want.confusion[i]));
  EXPECT_LE(moved, 2 * flips) << "confusion cells moved by " << moved;
  EXPECT_NEAR(got.loss_sum, want.loss_sum, 1e-5 * std::fabs(want.loss_sum));
}

// The same predictions, up to allowed_flips().
inline void expect_predictions_close(const std::vector<std::int32_t>& got, const std::vector<std::int32_t>& want) {
  ASSERT_EQ(got.size(), want.size());
  long long disagree = 0;
  for (std::size_t i = 0; i < got.size(); ++i) disagree += got[i] != want[i];
  EXPECT_LE(disagree, allowed_flips(want.size())) << disagree << " of " << want.size() << " predictions differ";
}

}  // namespace mnist::test
