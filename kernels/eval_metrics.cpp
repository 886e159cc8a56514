// CPU twin of kernels/eval_metrics.cu: argmax with the first maximum winning, the batch's loss
// summed in double and then added to the totals, integer counts. Rows whose label is not below 10
// are left out of the totals (their prediction is still written).
#include <cstddef>
#include <cstdint>

#include "mnist/ops/eval_metrics.h"

namespace mnist::twin {

void accumulate_metrics(const float* logits, const std::uint8_t* labels, const float* loss, int rows,
                        EvalTotals* totals, std::int32_t* predictions) {
  double batch_loss = 0.0;
  for (int r = 0; r < rows; ++r) {
    const float* z = logits + static_cast<std::size_t>(r) * kClasses;
    int pred = 0;
    for (int c = 1; c < kClasses; ++c)
      if (z[c] > z[pred]) pred = c;  // strict: the first maximum wins
    if (predictions != nullptr) predictions[r] = pred;

    const int label = labels[r];
    if (label >= kClasses) continue;
    batch_loss += static_cast<double>(loss[r]);
    totals->count += 1;
    totals->correct += pred == label ? 1 : 0;
    totals->confusion[label * kClasses + pred] += 1;
  }
  totals->loss_sum += batch_loss;
}

}  // namespace mnist::twin
