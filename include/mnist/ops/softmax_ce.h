#pragma once
// Fused softmax + cross-entropy over rows of logits [rows, classes] with integer labels:
//   target t = (1 - s)·onehot(label) + s/classes       (s: label smoothing, 0 = plain CE)
//   loss[r]  = logsumexp(z_r) - sum_c t_c z_rc          (max subtracted first: stable for |z| ~ 1e4)
//   dlogits  = (softmax(z_r) - t) / rows                 (the gradient of the mean loss)
// and, for a training batch, in the same pass: its totals (sum of loss[r], rows whose argmax is
// the label, rows counted; rows with a label >= classes are left out) added to a running
// EvalTotals, and a NaN or infinite loss[r] recorded in the divergence flag (finite_check.h).
// (Evaluation's totals, with predictions and the confusion matrix, are eval_metrics.h's.)
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mnist/ops/eval_metrics.h"

namespace mnist {

// Device scratch of the batch totals: one partial sum per block of the launch and the count of
// blocks done, so that the last block adds the partials in block order (the same sum at every
// run, whatever order the blocks ran in). Zeroed once; every launch leaves it zeroed again.
struct SoftmaxCeScratch {
  static constexpr int kMaxBlocks = 256;  // rows beyond 256·256 are taken grid-stride
  double loss[kMaxBlocks];
  unsigned long long correct[kMaxBlocks];
  unsigned long long counted[kMaxBlocks];
  unsigned int blocks_done;
};

// What a training batch adds, all on the device; a null member is not done. `scratch` comes
// with `totals`; `step` (the device step counter) with `non_finite`.
struct SoftmaxCeTraining {
  EvalTotals* totals = nullptr;
  SoftmaxCeScratch* scratch = nullptr;
  const std::int64_t* step = nullptr;
  std::int64_t* non_finite = nullptr;
};

namespace twin {
// dlogits may be null (evaluation). dlogits may alias logits. totals: the host totals to add the
// batch to, or null; non_finite: the divergence flag to fold the losses into at `step`, or null.
void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing, EvalTotals* totals = nullptr, std::int64_t step = 0,
                           std::int64_t* non_finite = nullptr);
}
namespace gpu {
void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing, cudaStream_t stream,
                           const SoftmaxCeTraining& training = {});
}
}  // namespace mnist
