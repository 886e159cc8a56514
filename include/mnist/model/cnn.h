#pragma once
// The convolutional network (--model cnn), on cuDNN on the GPU, NCHW fp32:
//
//   x [N, 1, 28, 28]  (a gathered [N, 784] batch is already this tensor)
//   conv 5×5, 32 filters, pad 2 → ReLU → max-pool 2×2     [N, 32, 14, 14]
//   conv 5×5, 64 filters, pad 2 → ReLU → max-pool 2×2     [N, 64, 7, 7] = [N, 3136] (flatten: a no-op)
//   dense 3136 → 1024, fused bias + ReLU + dropout (p = 0.5 by default)
//   dense 1024 → 10 → softmax cross-entropy
//
// Four parameter layers, numbered 0..3 (conv1, conv2, dense1, dense2). All parameters live in one
// flat buffer, layer by layer, weights then bias, so that one Adam launch updates the whole model
// and a checkpoint is one array, as for the MLP (mlp.h):
//   conv l:   W [C_out, C_in, k, k] (PyTorch's layout), b [C_out]
//   dense l:  W [in, out] row-major (the MLP's layout), b [out]
// The dropout mask of dense1 is keyed by DropoutKey{seed, layer 2, p} and the element index
// r·hidden + c, as the fused op draws it. The ReLUs after the convolutions have no dropout.
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mnist/model/cnn_shape.h"
#include "mnist/model/param_buffers.h"
#include "mnist/ops/conv2d.h"
#include "mnist/ops/eval_metrics.h"

namespace mnist {


// He (Kaiming) uniform for ReLU layers: W ~ U(-sqrt(6/fan_in), sqrt(6/fan_in)), b = 0, weight i of
// layer l drawn as philox_uniform(seed, 0, kInitStream + l, i), as he_uniform_init does for the MLP.
std::vector<float> he_uniform_init(const CnnShape& shape, std::uint64_t seed);

// The convolution of twin::conv2d_* (same shapes, same formulas: include/mnist/ops/conv2d.h)
// computed as im2col + one OpenBLAS GEMM per image, the fast path of the CPU model; twin::conv2d's
// direct double loops are what it is tested against. Sums are float (BLAS), not double.
// `scratch` holds one image's column matrix [C_in·k·k, OH·OW] and a [C_out, C_in·k·k] product;
// it grows on first use and is reused.
namespace im2col {
void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dShape& shape,
                    std::vector<float>& scratch);
void conv2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dShape& shape,
                          std::vector<float>& scratch);
void conv2d_backward_filter(const float* x, const float* dy, float* dw, const Conv2dShape& shape,
                            std::vector<float>& scratch);
}  // namespace im2col

// The CNN trained on the CPU: parameters, Adam state and the activations of one batch, with the
// API of CpuMlp. The GPU twin is GpuCnn (gpu_cnn.h).
class CpuCnn {
 public:
  // Forward buffers are allocated for max_batch images; the backward buffers grow to the largest
  // batch compute_gradients has seen (an evaluation chunk may be much larger than a training batch).
  CpuCnn(CnnShape shape, std::uint64_t seed, float dropout, float label_smoothing, int max_batch);

  // Forward and backward for one batch of `rows` images ([rows, inputs()] floats); buffers().grads then
  // holds d(mean loss)/dθ. The dense1 dropout mask is keyed by (seed, step, layer 2). Adds the
  // batch to `totals` when given.
  void compute_gradients(const float* x, const std::uint8_t* labels, int rows, std::int64_t step,
                         EvalTotals* totals);
  // Forward without dropout; per-sample losses and metrics added to `totals`.
  void evaluate_batch(const float* x, const std::uint8_t* labels, int rows, EvalTotals* totals,
                      std::int32_t* predictions = nullptr);

  const CnnShape& shape() const { return shape_; }
  // The parameters, gradients and Adam moments (optim/adam.h updates them).
  ParamBuffers<std::vector<float>>& buffers() { return buffers_; }
  const ParamBuffers<std::vector<float>>& buffers() const { return buffers_; }
  const float* logits() const { return logits_.data(); }  // [rows, classes] of the last forward pass
  // For tests and debugging, from the last compute_gradients: d(mean loss)/d(output of conv l)
  // [rows, C_l, H_l, W_l], 0 wherever its ReLU or max-pool passed nothing back, and d(mean loss)/dz
  // of dense1 [rows, hidden], 0 wherever its ReLU or dropout did. Their zeros are the routing
  // decisions of the backward pass.
  const float* conv_delta(int l) const { return l == 0 ? d_c1_.data() : d_c2_.data(); }
  const float* hidden_delta() const { return d_a3_.data(); }

 private:
  void forward(const float* x, int rows, bool train, std::int64_t step);
  const float* weights(int l) const { return buffers_.params.data() + shape_.weight_offset(l); }
  const float* bias(int l) const { return buffers_.params.data() + shape_.bias_offset(l); }

  CnnShape shape_;
  std::uint64_t seed_;
  float dropout_;
  float label_smoothing_;
  int max_batch_;
  ParamBuffers<std::vector<float>> buffers_;
  // Forward: conv outputs after ReLU (c), pooled (p), dense1 before (z3) and after (a3) its fused
  // bias-ReLU-dropout, the logits. The ReLU runs in place: relu(z) > 0 exactly where z > 0, so its
  // backward needs only the output.
  std::vector<float> c1_, p1_, c2_, p2_, z3_, a3_, logits_, loss_;
  // Backward: d(mean loss)/d(...) of the same tensors (grown on demand).
  std::vector<float> d_logits_, d_a3_, d_p2_, d_c2_, d_p1_, d_c1_;
  std::vector<float> zeros_;    // the zero bias of the ReLU-only use of the fused op
  std::vector<float> scratch_;  // im2col
};

}  // namespace mnist
