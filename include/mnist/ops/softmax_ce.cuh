#pragma once
// The device side of softmax_ce.h, for the kernels that end in softmax-cross-entropy
// (softmax_ce.cu's own, and classifier_head.cu's, which computes the logits first): one row's
// loss, gradient and totals, and a block's share of the batch totals.
#include <cuda/atomic>

#include <cstddef>
#include <cstdint>

#include "mnist/ops/finite_check.cuh"
#include "mnist/ops/softmax_ce.h"

namespace mnist::gpu {

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
__device__ inline void softmax_ce_row(const float* logits, const std::uint8_t* labels, float* loss,
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

// The shared memory of add_to_batch_totals, declared by the calling kernel (a __shared__ in a
// function template would be a per-instantiation static, which the CPU emulator of the tests
// cannot renew per block).
template <int kBlockThreads>
struct BatchTotalsShared {
  static_assert((kBlockThreads & (kBlockThreads - 1)) == 0, "the tree needs a power of two");
  double loss[kBlockThreads];
  unsigned int correct[kBlockThreads], counted[kBlockThreads];
};

// The block's totals into the batch totals; every thread of the block calls it once, with what its
// rows added. A fixed shared-memory tree adds the block's threads; thread 0 stores the block's
// partial and takes a ticket; the block with the last ticket (acquire: it sees every partial)
// adds them in block order to the totals and resets the ticket counter for the next launch. So
// the sum is the same at every run, and no single-block launch follows the batch.
template <int kBlockThreads>
__device__ inline void add_to_batch_totals(const RowTotals& t, BatchTotalsShared<kBlockThreads>& shared,
                                           EvalTotals* totals, SoftmaxCeScratch* scratch) {
  double* loss = shared.loss;
  unsigned int* correct = shared.correct;
  unsigned int* counted = shared.counted;
  const int tid = threadIdx.x + threadIdx.y * blockDim.x;
  loss[tid] = t.loss;
  correct[tid] = t.correct;
  counted[tid] = t.counted;
  __syncthreads();
  for (int half = kBlockThreads / 2; half > 0; half /= 2) {
    if (tid < half) {
      loss[tid] += loss[tid + half];
      correct[tid] += correct[tid + half];
      counted[tid] += counted[tid + half];
    }
    __syncthreads();
  }
  if (tid != 0) return;

  const unsigned int block = blockIdx.x;
  scratch->loss[block] = loss[0];
  scratch->correct[block] = correct[0];
  scratch->counted[block] = counted[0];
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

}  // namespace mnist::gpu
