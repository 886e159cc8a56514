#pragma once
// The multilayer perceptron (Keras mnist_mlp by default): 784 → hidden (ReLU, dropout)… → 10, softmax.
// All parameters live in one flat buffer, layer by layer (W then b), so one Adam launch
// updates the whole model and a checkpoint is one array. Layer l maps sizes[l] → sizes[l+1]
// with W_l stored row-major [in, out].
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mnist/model/mlp_shape.h"
#include "mnist/model/param_buffers.h"
#include "mnist/ops/eval_metrics.h"

namespace mnist {


// He (Kaiming) uniform for ReLU layers: W ~ U(-sqrt(6/fan_in), sqrt(6/fan_in)), b = 0, drawn
// from Philox so that every platform starts from the same weights for the same seed.
std::vector<float> he_uniform_init(const MlpShape& shape, std::uint64_t seed);

// The model trained on the CPU twins: parameters, Adam state and the activations of
// one batch. The GPU trainer mirrors it with device buffers.
class CpuMlp {
 public:
  CpuMlp(MlpShape shape, std::uint64_t seed, float dropout, float label_smoothing, int max_batch);

  // Forward and backward for one batch of `rows` images; grads() then holds d(mean loss)/dθ.
  // Dropout masks are keyed by (seed, step, layer). Adds the batch to `totals` when given.
  void compute_gradients(const float* x, const std::uint8_t* labels, int rows, std::int64_t step,
                         EvalTotals* totals);
  // Forward without dropout; per-sample losses and metrics added to `totals`.
  void evaluate_batch(const float* x, const std::uint8_t* labels, int rows, EvalTotals* totals,
                      std::int32_t* predictions = nullptr);

  const MlpShape& shape() const { return shape_; }
  // The parameters, gradients and Adam moments (optim/adam.h updates them).
  ParamBuffers<std::vector<float>>& buffers() { return buffers_; }
  const ParamBuffers<std::vector<float>>& buffers() const { return buffers_; }
  const float* logits() const { return pre_activations_.back().data(); }

 private:
  void forward(const float* x, int rows, bool train, std::int64_t step);

  MlpShape shape_;
  std::uint64_t seed_;
  float dropout_;
  float label_smoothing_;
  int max_batch_;
  ParamBuffers<std::vector<float>> buffers_;
  std::vector<std::vector<float>> pre_activations_;  // z_l = a_l·W_l; the last one becomes the logits
  std::vector<std::vector<float>> activations_;      // a_{l+1} = dropout(relu(z_l + b_l)) for hidden layers
  std::vector<float> loss_, delta_, delta_prev_;
  const float* input_ = nullptr;
};

}  // namespace mnist
