// loss[r] = log sum_c exp(z_rc - max_r) - sum_c t_c (z_rc - max_r),  t = (1 - s)·onehot(label) + s/classes
// dlogits[r, c] = (exp(z_rc - max_r) / sum_c' exp(z_rc' - max_r) - t_c) / rows
// training: totals += { sum_r loss[r], #(argmax z_r == label), #rows } over rows with label < classes
#include <cuda/atomic>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "mnist/check.h"
#include "mnist/ops/finite_check.cuh"
#include "mnist/ops/softmax_ce.h"

namespace mnist::gpu {
namespace {

constexpr int kThreads = 256;

// What one thread's rows add to the batch totals.
struct RowTotals {
  double loss = 0.0;
  unsigned int correct = 0, counted = 0;
  int code = kNonFiniteCodes;  // the lowest divergence code of its losses
};

// Row r: classes is small (10), so a row is a few dozen bytes one thread reads three times (max
// and argmax; exp-sum and target dot; gradient). expf in float; the sum, the dot product, the log
// and the gradient in double, so the only float roundings are expf and the stores. The row is
// read in full before the first gradient store, and element c is read before it is overwritten:
// dlogits may alias logits. A label >= classes has no one-hot part and is not counted.
__device__ __forceinline__ void softmax_ce_row(const float* logits, const std::uint8_t* labels, float* loss,
                                               float* dlogits, int r, int rows, int classes, float label_smoothing,
                                               RowTotals& t) {
  const float* z = logits + static_cast<std::size_t>(r) * classes;
  const int label = labels[r];
  const double off = static_cast<double>(label_smoothing) / classes;  // t_c for c != label
  const double on = 1.0 - static_cast<double>(label_smoothing) + off;  // t_label

  float zmax = z[0];
  int pred = 0;
  for (int c = 1; c < classes; ++c) {
    if (z[c] > zmax) {  // strict: the first maximum wins, as eval_metrics decides
      zmax = z[c];
      pred = c;
    }
  }

  double sum = 0.0, dot = 0.0;
  for (int c = 0; c < classes; ++c) {
    const float shifted = z[c] - zmax;
    sum += static_cast<double>(expf(shifted));
    dot += (c == label ? on : off) * static_cast<double>(shifted);
  }
  const float row_loss = static_cast<float>(log(sum) - dot);
  loss[r] = row_loss;
  t.code = min(t.code, classify_finite(row_loss, kLossNaN));
  if (label < classes) {
    t.loss += static_cast<double>(row_loss);
    t.counted += 1;
    t.correct += pred == label ? 1u : 0u;
  }

  if (dlogits == nullptr) return;
  float* d = dlogits + static_cast<std::size_t>(r) * classes;
  for (int c = 0; c < classes; ++c) {
    const double p = static_cast<double>(expf(z[c] - zmax)) / sum;
    d[c] = static_cast<float>((p - (c == label ? on : off)) / rows);
  }
}

// Evaluation (and a training batch without totals): a thread per row, grid-stride.
__global__ void softmax_ce_kernel(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits,
                                  int rows, int classes, float label_smoothing, const std::int64_t* step,
                                  std::int64_t* non_finite) {
  RowTotals t;
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x)
    softmax_ce_row(logits, labels, loss, dlogits, r, rows, classes, label_smoothing, t);
  if (non_finite != nullptr) record_non_finite(non_finite, *step, t.code);
}

// A training batch with its totals. Each thread sums its rows in order; a fixed shared-memory
// tree adds the block's threads; thread 0 stores the block's partial and takes a ticket; the
// block with the last ticket (acquire: it sees every partial) adds them in block order to the
// totals and resets the ticket counter for the next launch. So the sum is the same at every run,
// and no single-block launch follows the batch.
__global__ void __launch_bounds__(kThreads)
    softmax_ce_totals_kernel(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                             int classes, float label_smoothing, const std::int64_t* step, std::int64_t* non_finite,
                             EvalTotals* totals, SoftmaxCeScratch* scratch) {
  __shared__ double partial[kThreads];
  __shared__ unsigned int correct, counted;
  const int tid = threadIdx.x;
  if (tid == 0) correct = counted = 0;
  __syncthreads();

  RowTotals t;
  for (int r = blockIdx.x * blockDim.x + tid; r < rows; r += gridDim.x * blockDim.x)
    softmax_ce_row(logits, labels, loss, dlogits, r, rows, classes, label_smoothing, t);
  if (non_finite != nullptr) record_non_finite(non_finite, *step, t.code);

  partial[tid] = t.loss;
  atomicAdd(&correct, t.correct);
  atomicAdd(&counted, t.counted);
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (tid < half) partial[tid] += partial[tid + half];
    __syncthreads();
  }
  if (tid != 0) return;

  const int block = blockIdx.x;
  scratch->loss[block] = partial[0];
  scratch->correct[block] = correct;
  scratch->counted[block] = counted;
  cuda::atomic_ref<unsigned int, cuda::thread_scope_device> done(scratch->blocks_done);
  if (done.fetch_add(1, cuda::memory_order_acq_rel) != gridDim.x - 1) return;
  double loss_sum = 0.0;
  unsigned long long correct_sum = 0, counted_sum = 0;
  for (unsigned int b = 0; b < gridDim.x; ++b) {
    loss_sum += scratch->loss[b];
    correct_sum += scratch->correct[b];
    counted_sum += scratch->counted[b];
  }
  // The one writer of the totals in this launch, and launches are ordered on the stream.
  totals->loss_sum += loss_sum;
  totals->correct += correct_sum;
  totals->count += counted_sum;
  done.store(0, cuda::memory_order_relaxed);
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
  const int blocks = std::min((rows + kThreads - 1) / kThreads, SoftmaxCeScratch::kMaxBlocks);
  if (training.totals != nullptr) {
    softmax_ce_totals_kernel<<<blocks, kThreads, 0, stream>>>(logits, labels, loss, dlogits, rows, classes,
                                                              label_smoothing, training.step, training.non_finite,
                                                              training.totals, training.scratch);
  } else {
    softmax_ce_kernel<<<blocks, kThreads, 0, stream>>>(logits, labels, loss, dlogits, rows, classes, label_smoothing,
                                                       training.step, training.non_finite);
  }
  MNIST_CHECK_LAUNCH();
}

}  // namespace mnist::gpu
