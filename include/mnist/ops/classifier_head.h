#pragma once
// The classifier head: the last dense layer fused with softmax-cross-entropy, forward and backward,
// for a batch x [rows, in] and weights W [in, classes], b [classes] (row-major, classes ≤ 16):
//   forward   logits = x·W + b, then softmax_ce.h on them (loss, dlogits, training totals, divergence flag)
//   backward  dW = x^T·dlogits,  db = sum_r dlogits[r]
//             and where x = dropout(relu(z' + b')) of a hidden layer (bias_relu_dropout.h), through it:
//             dz' = (dlogits·W^T) · mask / (1 - p) · [z' + b' > 0],  db' = sum_r dz'[r]
// The output layer's GEMMs have a side of 10 (the classes): on a GPU each is a launch's latency
// with almost no arithmetic, so one launch does the layer and the loss, and one its whole backward.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/ops/softmax_ce.h"

namespace mnist {

constexpr int kMaxHeadClasses = 16;

// The hidden layer under the head, whose activations are x: its pre-activation z' and bias b'
// [in], the key of its dropout mask, and where its gradients go (dz' [rows, in], db' [in]).
struct HiddenBelow {
  const float* z = nullptr;
  const float* bias = nullptr;
  DropoutKey key;
  float* dz = nullptr;
  float* db = nullptr;
};

namespace twin {
// labels null: the logits only. dlogits null: no gradient (evaluation). The rest as
// softmax_cross_entropy (softmax_ce.h), which this is followed by.
void classifier_head_forward(const float* x, const float* w, const float* b, float* logits,
                             const std::uint8_t* labels, float* loss, float* dlogits, int rows, int in, int classes,
                             float label_smoothing, EvalTotals* totals = nullptr, std::int64_t step = 0,
                             std::int64_t* non_finite = nullptr);
// below null: x is the input, no gradient flows further down.
void classifier_head_backward(const float* x, const float* dlogits, const float* w, float* dw, float* db, int rows,
                              int in, int classes, const HiddenBelow* below = nullptr, std::int64_t step = 0);
}  // namespace twin

namespace gpu {
// Device pointers; `step` is the device step counter (read only with dropout below, and with
// the divergence flag). dz' must not alias x or dlogits.
void classifier_head_forward(const float* x, const float* w, const float* b, float* logits,
                             const std::uint8_t* labels, float* loss, float* dlogits, int rows, int in, int classes,
                             float label_smoothing, cudaStream_t stream, const SoftmaxCeTraining& training = {});
void classifier_head_backward(const float* x, const float* dlogits, const float* w, float* dw, float* db, int rows,
                              int in, int classes, cudaStream_t stream, const HiddenBelow* below = nullptr,
                              const std::int64_t* step = nullptr);
}  // namespace gpu

}  // namespace mnist
