// CPU twin of kernels/classifier_head.cu: the output layer's three GEMMs, bias and bias gradient,
// softmax-cross-entropy and the ReLU-dropout backward of the layer below, as the separate ops do
// them (the same calls in the same order as an unfused step, so the CPU trainer's bits stay).
#include <stdexcept>

#include "mnist/ops/bias_grad.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/ops/classifier_head.h"
#include "mnist/ops/gemm.h"

namespace mnist::twin {

void classifier_head_forward(const float* x, const float* w, const float* b, float* logits,
                             const std::uint8_t* labels, float* loss, float* dlogits, int rows, int in, int classes,
                             float label_smoothing, EvalTotals* totals, std::int64_t step, std::int64_t* non_finite) {
  if (classes < 1 || classes > kMaxHeadClasses) throw std::invalid_argument("classifier_head: classes must be in 1..16");
  dense_forward(x, w, logits, rows, in, classes);
  bias_relu_dropout_forward(logits, b, logits, rows, classes, false, DropoutKey{}, 0);
  if (labels == nullptr) return;
  softmax_cross_entropy(logits, labels, loss, dlogits, rows, classes, label_smoothing, totals, step, non_finite);
}

void classifier_head_backward(const float* x, const float* dlogits, const float* w, float* dw, float* db, int rows,
                              int in, int classes, const HiddenBelow* below, std::int64_t step) {
  if (classes < 1 || classes > kMaxHeadClasses) throw std::invalid_argument("classifier_head: classes must be in 1..16");
  dense_backward_weights(x, dlogits, dw, rows, in, classes);
  bias_grad(dlogits, db, rows, classes);
  if (below == nullptr) return;
  dense_backward_input(dlogits, w, below->dz, rows, in, classes);
  bias_relu_dropout_backward(below->dz, below->z, below->bias, below->dz, rows, in, true, below->key, step,
                             below->db);
}

}  // namespace mnist::twin
