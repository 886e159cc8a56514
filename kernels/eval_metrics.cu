// pred[r] = argmax_c logits[r, c] (first maximum wins);  over rows with label < 10:
// totals += { sum_r loss[r], #(pred == label), #rows, confusion[label·10 + pred] += 1 }
#include <cstddef>
#include <cstdint>

#include "mnist/core/check.h"
#include "mnist/ops/eval_metrics.h"

namespace mnist::gpu {
namespace {

constexpr int kThreads = 1024;  // one block: the reduction order depends on nothing but rows

// A single block. Thread i takes rows i, i + 1024, ... and sums their loss in double in that
// order; a fixed shared-memory tree then adds the 1024 partial sums, so the total is bit-identical
// run to run. Counts are integers (shared atomics: order-independent). A row whose label is not
// below 10 is skipped in the totals (its prediction is still written), so nothing is written out
// of bounds and the confusion matrix always sums to count.
__global__ void __launch_bounds__(kThreads)
    eval_metrics_kernel(const float* logits, const std::uint8_t* labels, const float* loss, int rows,
                        EvalTotals* totals, std::int32_t* predictions) {
  __shared__ double partial[kThreads];
  __shared__ unsigned int confusion[kClasses * kClasses];
  __shared__ unsigned int counted, correct;
  const int tid = threadIdx.x;
  for (int i = tid; i < kClasses * kClasses; i += kThreads) confusion[i] = 0;
  if (tid == 0) counted = correct = 0;
  __syncthreads();

  double loss_sum = 0.0;
  unsigned int my_counted = 0, my_correct = 0;
  for (int r = tid; r < rows; r += kThreads) {
    const float* z = logits + static_cast<std::size_t>(r) * kClasses;
    int pred = 0;
    float best = z[0];
    for (int c = 1; c < kClasses; ++c) {
      if (z[c] > best) {  // strict: the first maximum wins
        best = z[c];
        pred = c;
      }
    }
    if (predictions != nullptr) predictions[r] = pred;
    const int label = labels[r];
    if (label >= kClasses) continue;
    loss_sum += static_cast<double>(loss[r]);
    ++my_counted;
    my_correct += pred == label ? 1u : 0u;
    atomicAdd(&confusion[label * kClasses + pred], 1u);
  }
  partial[tid] = loss_sum;
  atomicAdd(&counted, my_counted);
  atomicAdd(&correct, my_correct);
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (tid < half) partial[tid] += partial[tid + half];
    __syncthreads();
  }

  // One block, launches ordered on the stream: plain read-modify-write of the totals is safe.
  for (int i = tid; i < kClasses * kClasses; i += kThreads) totals->confusion[i] += confusion[i];
  if (tid == 0) {
    totals->loss_sum += partial[0];
    totals->correct += correct;
    totals->count += counted;
  }
}

}  // namespace

void accumulate_metrics(const float* logits, const std::uint8_t* labels, const float* loss, int rows,
                        EvalTotals* totals, std::int32_t* predictions, cudaStream_t stream) {
  if (rows <= 0) return;
  eval_metrics_kernel<<<1, kThreads, 0, stream>>>(logits, labels, loss, rows, totals, predictions);
  MNIST_CHECK_LAUNCH();
}

}  // namespace mnist::gpu
