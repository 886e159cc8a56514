// loss[r] = log sum_c exp(z_rc - max_r) - sum_c t_c (z_rc - max_r),  t = (1 - s)·onehot(label) + s/classes
// dlogits[r, c] = (exp(z_rc - max_r) / sum_c' exp(z_rc' - max_r) - t_c) / rows
// training: totals += { sum_r loss[r], #(argmax z_r == label), #rows } over rows with label < classes
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "mnist/core/check.h"
#include "mnist/core/launch.h"
#include "mnist/ops/finite_check.cuh"
#include "mnist/ops/softmax_ce.cuh"

namespace mnist::gpu {
namespace {


// Evaluation (and a training batch without totals): a thread per row, grid-stride.
__global__ void softmax_ce_kernel(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits,
                                  int rows, int classes, float label_smoothing, const std::int64_t* step,
                                  std::int64_t* non_finite) {
  RowTotals t;
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x)
    softmax_ce_row(logits, labels, loss, dlogits, r, rows, classes, label_smoothing, t);
  if (non_finite != nullptr) record_non_finite(non_finite, *step, t.code);
}

// A training batch with its totals: the same rows, then the block's share into the totals
// (add_to_batch_totals: fixed order, no single-block launch after the batch).
__global__ void __launch_bounds__(kBlockThreads)
    softmax_ce_totals_kernel(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                             int classes, float label_smoothing, const std::int64_t* step, std::int64_t* non_finite,
                             EvalTotals* totals, SoftmaxCeScratch* scratch) {
  __shared__ BatchTotalsShared<kBlockThreads> shared;
  RowTotals t;
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x)
    softmax_ce_row(logits, labels, loss, dlogits, r, rows, classes, label_smoothing, t);
  if (non_finite != nullptr) record_non_finite(non_finite, *step, t.code);
  add_to_batch_totals(t, shared, totals, scratch);
}

}  // namespace

void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing, cudaStream_t stream,
                           const SoftmaxCeTraining& training) {
  if (classes < 1) throw std::invalid_argument("softmax_cross_entropy: classes must be at least 1");
  if (training.non_finite != nullptr && training.step == nullptr)
    throw std::invalid_argument("softmax_cross_entropy: the divergence flag needs the step counter");
  if (training.totals != nullptr && training.scratch == nullptr)
    throw std::invalid_argument("softmax_cross_entropy: the batch totals need their scratch");
  if (rows <= 0) return;
  const int blocks = std::min((rows + kBlockThreads - 1) / kBlockThreads, SoftmaxCeScratch::kMaxBlocks);
  if (training.totals != nullptr) {
    softmax_ce_totals_kernel<<<blocks, kBlockThreads, 0, stream>>>(logits, labels, loss, dlogits, rows, classes,
                                                              label_smoothing, training.step, training.non_finite,
                                                              training.totals, training.scratch);
  } else {
    softmax_ce_kernel<<<blocks, kBlockThreads, 0, stream>>>(logits, labels, loss, dlogits, rows, classes, label_smoothing,
                                                       training.step, training.non_finite);
  }
  MNIST_CHECK_LAUNCH();
}

}  // namespace mnist::gpu
