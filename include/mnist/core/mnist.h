#pragma once
// MNIST's shape, which every layer shares, and the totals an evaluation adds up.
namespace mnist {

constexpr int kImageRows = 28;
constexpr int kImageCols = 28;
constexpr int kPixels = kImageRows * kImageCols;
constexpr int kClasses = 10;

// Sums over evaluated images: the loss, the correct predictions, the count and the confusion
// matrix. Integers count exactly, so totals add up the same in any order.
struct EvalTotals {
  double loss_sum = 0.0;
  unsigned long long correct = 0;
  unsigned long long count = 0;
  unsigned long long confusion[kClasses * kClasses] = {};  // [true][predicted]
};

}  // namespace mnist
