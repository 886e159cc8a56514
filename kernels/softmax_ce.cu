// loss[r] = log sum_c exp(z_rc - max_r) - sum_c t_c (z_rc - max_r),  t = (1 - s)·onehot(label) + s/classes
// dlogits[r, c] = (exp(z_rc - max_r) / sum_c' exp(z_rc' - max_r) - t_c) / rows
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "mnist/check.h"
#include "mnist/ops/finite_check.cuh"
#include "mnist/ops/softmax_ce.h"

namespace mnist::gpu {
namespace {

constexpr int kThreads = 256;

// One thread per row: classes is small (10), so a row is a few dozen bytes one thread reads
// three times (max; exp-sum and target dot; gradient). expf in float; the sum, the dot product,
// the log and the gradient in double, so the only float roundings are expf and the stores.
// The row is read in full before the first gradient store, and element c is read before it is
// overwritten: dlogits may alias logits. A label >= classes has no one-hot part. In training a
// non-finite loss goes into the divergence flag.
__global__ void softmax_ce_kernel(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits,
                                  int rows, int classes, float label_smoothing, const std::int64_t* step,
                                  std::int64_t* non_finite) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const float* z = logits + static_cast<std::size_t>(r) * classes;
  const int label = labels[r];
  const double off = static_cast<double>(label_smoothing) / classes;  // t_c for c != label
  const double on = 1.0 - static_cast<double>(label_smoothing) + off;  // t_label

  float zmax = z[0];
  for (int c = 1; c < classes; ++c) zmax = z[c] > zmax ? z[c] : zmax;

  double sum = 0.0, dot = 0.0;
  for (int c = 0; c < classes; ++c) {
    const float shifted = z[c] - zmax;
    sum += static_cast<double>(expf(shifted));
    dot += (c == label ? on : off) * static_cast<double>(shifted);
  }
  const float row_loss = static_cast<float>(log(sum) - dot);
  loss[r] = row_loss;
  if (non_finite != nullptr) record_non_finite(non_finite, *step, classify_finite(row_loss, kLossNaN));

  if (dlogits == nullptr) return;
  float* d = dlogits + static_cast<std::size_t>(r) * classes;
  for (int c = 0; c < classes; ++c) {
    const double p = static_cast<double>(expf(z[c] - zmax)) / sum;
    d[c] = static_cast<float>((p - (c == label ? on : off)) / rows);
  }
}

}  // namespace

void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing, cudaStream_t stream, const std::int64_t* step,
                           std::int64_t* non_finite) {
  if (classes < 1) throw std::invalid_argument("softmax_cross_entropy: classes must be at least 1");
  if (rows <= 0) return;
  if (non_finite != nullptr && step == nullptr)
    throw std::invalid_argument("softmax_cross_entropy: the divergence flag needs the step counter");
  const int blocks = (rows + kThreads - 1) / kThreads;
  softmax_ce_kernel<<<blocks, kThreads, 0, stream>>>(logits, labels, loss, dlogits, rows, classes, label_smoothing,
                                                      step, non_finite);
  MNIST_CHECK_LAUNCH();
}

}  // namespace mnist::gpu
