#pragma once
// The MLP of mlp.h on the device: the twin of CpuMlp, as GpuCnn (gpu_cnn.h) is of CpuCnn. Flat
// parameters, gradients and Adam moments (ParamBuffers: one Adam launch updates them all) and the
// activations of one batch, in the layout of MlpShape, with the same He-uniform draw (uploaded
// from the host), dropout keys and Adam, run through the ops of include/mnist/ops:
//   hidden layers  a cuBLAS GEMM and the fused bias-ReLU-dropout
//   output, loss   the classifier head (the output layer fused with softmax-cross-entropy, and
//                  its backward through the last hidden layer's ReLU-dropout)
// Every call only enqueues work on the stream (the constructor's upload aside); the step
// counter is read on the device, so the steps can be captured into a CUDA graph.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "mnist/core/config.h"
#include "mnist/core/device.h"
#include "mnist/core/mnist.h"
#include "mnist/model/mlp.h"
#include "mnist/model/param_buffers.h"
#include "mnist/ops/adam.h"
#include "mnist/ops/gemm.h"
#include "mnist/ops/softmax_ce.h"

namespace mnist {

class GpuMlp {
 public:
  // Forward buffers hold max_batch rows (a training batch or an evaluation chunk), backward
  // buffers max_train_batch. `cublas` is the trainer's handle, bound to `stream`; both must
  // outlive the model.
  GpuMlp(MlpShape shape, const TrainConfig& config, int max_batch, int max_train_batch, cublasHandle_t cublas,
         cudaStream_t stream);

  // The hidden layers: z_l = a_l·W_l, a_{l+1} = dropout(relu(z_l + b_l)) keyed by (seed, *step, l).
  // The output layer is the classifier head's, fused with the loss (loss(), compute_logits()).
  void forward(const float* x, int rows, bool train, const std::int64_t* step);

  // The logits of the last forward pass (the classifier head without a loss), for prediction.
  void compute_logits(int rows);

  // The classifier head on the last forward pass: logits, per-sample loss, and the batch added
  // to `totals` (a device pointer). Training (gradient): delta = d(mean loss)/d(logits), the
  // totals' loss, correct and count, and a non-finite loss into the divergence flag `non_finite`
  // at *step, where one is given, all in the one launch. Evaluation: the metrics kernel adds the
  // confusion matrix and writes `predictions`.
  void loss(const std::uint8_t* labels, int rows, bool gradient, EvalTotals* totals, std::int32_t* predictions,
            const std::int64_t* step = nullptr, std::int64_t* non_finite = nullptr);

  // grads ← d(mean loss)/dθ from delta, as CpuMlp::compute_gradients does it. The head gives the
  // output layer's gradients and, through the ReLU-dropout of the last hidden layer, its delta and
  // bias gradient; then per hidden layer from the top, the weight gradient and, below it, the input
  // gradient taken through the ReLU-dropout of the layer below with that layer's bias gradient.
  void backward(int rows, const std::int64_t* step);

  const MlpShape& shape() const { return shape_; }
  // The logits of the last forward pass, [rows, classes] on the device.
  const float* logits() const { return pre_activations_.back().data(); }
  // The parameters, gradients and Adam moments on the device (optim/adam.h updates them).
  ParamBuffers<DeviceBuffer<float>>& buffers() { return buffers_; }
  const ParamBuffers<DeviceBuffer<float>>& buffers() const { return buffers_; }

 private:
  const float* weights(int l) const { return buffers_.params.data() + shape_.weight_offset(l); }
  const float* bias(int l) const { return buffers_.params.data() + shape_.bias_offset(l); }
  float* weight_grad(int l) { return buffers_.grads.data() + shape_.weight_offset(l); }
  float* bias_grad(int l) { return buffers_.grads.data() + shape_.bias_offset(l); }
  // What the classifier head reads: the last hidden layer's activations, or the input.
  const float* head_input() const {
    return shape_.layers() == 1 ? input_ : activations_[std::size_t(shape_.layers()) - 2].data();
  }

  MlpShape shape_;
  std::uint64_t seed_;
  float dropout_;
  float label_smoothing_;
  GemmMath math_;
  int max_batch_;        // rows of the forward buffers (training batch or evaluation chunk)
  int max_train_batch_;  // rows of the backward buffers
  cublasHandle_t cublas_;
  cudaStream_t stream_;
  ParamBuffers<DeviceBuffer<float>> buffers_;
  std::vector<DeviceBuffer<float>> pre_activations_;  // z_l; the last one becomes the logits
  std::vector<DeviceBuffer<float>> activations_;      // a_{l+1} for hidden layers
  DeviceBuffer<float> loss_, delta_, delta_prev_;
  DeviceBuffer<SoftmaxCeScratch> scratch_;  // of the training batch totals
  const float* input_ = nullptr;
};

}  // namespace mnist
