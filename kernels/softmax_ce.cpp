// CPU twin of kernels/softmax_ce.cu: the same arithmetic (expf in float; sum, dot product, log and
// gradient in double), written as plain loops over rows and classes. The batch's loss sum is
// added in row order (the kernel's order differs: the two agree to double rounding).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "mnist/ops/finite_check.h"
#include "mnist/ops/softmax_ce.h"

namespace mnist::twin {

void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing, EvalTotals* totals, std::int64_t step,
                           std::int64_t* non_finite) {
  if (classes < 1) throw std::invalid_argument("softmax_cross_entropy: classes must be at least 1");
  const double off = static_cast<double>(label_smoothing) / classes;  // target of every class but the label
  const double on = 1.0 - static_cast<double>(label_smoothing) + off;  // target of the label
  std::vector<float> e(static_cast<std::size_t>(classes));            // exp(z - max) of the current row
  double batch_loss = 0.0;

  for (int r = 0; r < rows; ++r) {
    const float* z = logits + static_cast<std::size_t>(r) * classes;
    const int label = labels[r];  // a label >= classes has no one-hot part: every target is `off`

    float zmax = z[0];
    int pred = 0;
    for (int c = 1; c < classes; ++c) {
      if (z[c] > zmax) {  // strict: the first maximum wins
        zmax = z[c];
        pred = c;
      }
    }

    double sum = 0.0, dot = 0.0;
    for (int c = 0; c < classes; ++c) {
      const float shifted = z[c] - zmax;
      e[c] = std::exp(shifted);
      sum += static_cast<double>(e[c]);
      dot += (c == label ? on : off) * static_cast<double>(shifted);
    }
    loss[r] = static_cast<float>(std::log(sum) - dot);
    if (totals != nullptr && label < classes) {
      batch_loss += static_cast<double>(loss[r]);
      totals->count += 1;
      totals->correct += pred == label ? 1 : 0;
    }

    // The row has been read in full (into e): safe to overwrite it when dlogits aliases logits.
    if (dlogits == nullptr) continue;
    float* d = dlogits + static_cast<std::size_t>(r) * classes;
    for (int c = 0; c < classes; ++c) {
      const double p = static_cast<double>(e[c]) / sum;
      d[c] = static_cast<float>((p - (c == label ? on : off)) / rows);
    }
  }
  if (totals != nullptr) totals->loss_sum += batch_loss;
  if (non_finite != nullptr && rows > 0)
    *non_finite = std::min(*non_finite, finite_check(loss, static_cast<std::size_t>(rows), nullptr, 0, step));
}

}  // namespace mnist::twin
