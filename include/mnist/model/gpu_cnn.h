#pragma once
// The CNN of cnn.h on the device: the twin of CpuCnn, as GpuMlp (gpu_mlp.h) is the twin of CpuMlp.
// Same parameter layout (CnnShape), same He-uniform draw (uploaded from the host), same
// dropout key, same Adam, run through the ops of include/mnist/ops on one stream:
//   convolutions   gpu::Conv2d (cuDNN, deterministic algorithms), one plan per layer and batch size
//   ReLU           the fused bias-ReLU-dropout op with a zero bias and no dropout
//   pooling        gpu::maxpool2x2 (the CPU twin's tie rule, bit for bit)
//   dense1         a cuBLAS GEMM and the fused bias-ReLU-dropout
//   dense2, loss   the classifier head (dense2 fused with softmax-cross-entropy, and its backward
//                  through dense1's ReLU-dropout), as the MLP's output layer
//   metrics, Adam: the same launchers as the MLP
//
// Every call only enqueues work on the stream, except prepare() (and the first batch of a new
// size), the download_*/upload_state copies and the constructor. The optimizer step lives on the
// device, so the step, and with it the dropout mask and Adam's bias correction, are read there:
// the steps can be captured into a CUDA graph once the plans of every batch size are prepared.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mnist/model/cnn.h"
#include "mnist/model/param_buffers.h"
#include "mnist/core/device.h"
#include "mnist/ops/adam.h"
#include "mnist/ops/conv2d.h"
#include "mnist/ops/eval_metrics.h"
#include "mnist/ops/gemm.h"
#include "mnist/ops/softmax_ce.h"

namespace mnist {

class GpuCnn {
 public:
  // Forward buffers hold max(max_batch, max_train_batch) images (an evaluation chunk), backward
  // buffers max_train_batch. The cuBLAS and cuDNN handles are the model's own, bound to `stream`,
  // which must outlive the model. The convolution plans of both batch sizes are built here
  // (forward-only for a batch larger than max_train_batch, which is never trained on).
  // math: kFp32 (the default) keeps the convolutions and GEMMs in fp32; kTf32 allows TF32.
  GpuCnn(CnnShape shape, std::uint64_t seed, float dropout, float label_smoothing, int max_batch,
         int max_train_batch, cudaStream_t stream, GemmMath math = GemmMath::kFp32);
  GpuCnn(const GpuCnn&) = delete;
  GpuCnn& operator=(const GpuCnn&) = delete;

  // Builds the convolution plans for batches of `rows` images unless they exist: cuDNN's algorithm
  // choice and a workspace allocation, so not while a graph is being captured. forward() builds
  // them on first use; call this first for every batch size a captured graph will run (e.g. the
  // last, partial batch of an epoch).
  void prepare(int rows);

  // --- the steps of a training step or evaluation, as GpuMlp has them (device pointers). `step`
  // is a device step counter; evaluation (train = false) does not read it.
  // x: [rows, inputs()] floats, up to the hidden dense layer; the output layer is the classifier
  // head's (classifier_head.h), which loss() and compute_logits() run.
  void forward(const float* x, int rows, bool train, const std::int64_t* step);
  // The logits of the last forward pass (logits()), without a loss: for prediction.
  void compute_logits(int rows);
  // The logits and per-sample loss of the last forward pass and, when `gradient`, d(mean loss)/d(logits); the
  // batch is added to `totals` (a device pointer, may be null) and, with totals, the predictions
  // (device, may be null) written. A non-finite loss goes into the divergence flag `non_finite`
  // (device, may be null) at *step.
  void loss(const std::uint8_t* labels, int rows, bool gradient, EvalTotals* totals, std::int32_t* predictions,
            const std::int64_t* step = nullptr, std::int64_t* non_finite = nullptr);
  // buffers().grads ← d(mean loss)/dθ from the last forward pass and loss(gradient = true).
  void backward(int rows, const std::int64_t* step);

  // --- the CpuCnn API on the model's own step counter step() (device, 0 at construction).
  // ++step, then forward (dropout keyed by the new step), loss and backward. totals: device, may be null.
  void compute_gradients(const float* x, const std::uint8_t* labels, int rows, EvalTotals* totals);
  // Forward without dropout, loss and metrics (totals: device pointer, required).
  void evaluate_batch(const float* x, const std::uint8_t* labels, int rows, EvalTotals* totals,
                      std::int32_t* predictions = nullptr);

  // --- state. The downloads and the upload wait for the stream.
  std::vector<float> download_params() const;
  std::vector<float> download_grads() const;
  std::vector<float> download_adam_m() const;
  std::vector<float> download_adam_v() const;
  std::int64_t download_step() const;
  std::vector<float> download_logits(int rows) const;  // [rows, classes] of the last forward pass
  // CpuCnn::conv_delta and hidden_delta of the last backward pass over `rows` images.
  std::vector<float> download_conv_delta(int l, int rows) const;
  std::vector<float> download_hidden_delta(int rows) const;
  // Sizes must be param_count(); throws std::invalid_argument otherwise.
  void upload_state(const std::vector<float>& params, const std::vector<float>& adam_m,
                    const std::vector<float>& adam_v, std::int64_t step);

  const CnnShape& shape() const { return shape_; }
  cudaStream_t stream() const { return stream_; }
  const float* logits() const { return logits_.data(); }
  const float* losses() const { return loss_.data(); }  // [rows] per-sample losses of the last loss()
  // The parameters, gradients and Adam moments on the device (optim/adam.h updates them).
  ParamBuffers<DeviceBuffer<float>>& buffers() { return buffers_; }
  const ParamBuffers<DeviceBuffer<float>>& buffers() const { return buffers_; }
  std::int64_t* step() { return step_.data(); }
  // The convolution algorithms chosen for batches of `rows` (prepared) images, e.g. for a log.
  std::string describe(int rows) const;

 private:
  struct ConvPlans {
    gpu::Conv2d conv1, conv2;
  };
  ConvPlans& plans(int rows);
  const float* weights(int l) const { return buffers_.params.data() + shape_.weight_offset(l); }
  const float* bias(int l) const { return buffers_.params.data() + shape_.bias_offset(l); }
  float* weight_grad(int l) { return buffers_.grads.data() + shape_.weight_offset(l); }
  float* bias_grad(int l) { return buffers_.grads.data() + shape_.bias_offset(l); }

  CnnShape shape_;
  std::uint64_t seed_;
  float dropout_;
  float label_smoothing_;
  GemmMath math_;
  int max_batch_;        // rows of the forward buffers
  int max_train_batch_;  // rows of the backward buffers
  cudaStream_t stream_;
  // Declaration order is construction order: the handles before the plans that borrow them
  // (and, in reverse, the plans are destroyed first); the cuBLAS workspace outlives its handle.
  DeviceBuffer<char> cublas_workspace_;
  CublasHandle cublas_;
  CudnnHandle cudnn_;
  std::map<int, ConvPlans> plans_;  // by batch size; a map keeps every plan at its address
  ParamBuffers<DeviceBuffer<float>> buffers_;
  DeviceBuffer<std::int64_t> step_;
  // Forward: conv outputs after ReLU (c), pooled (p), dense1 before (z3) and after (a3) its
  // bias-ReLU-dropout, the logits, the per-sample loss. Backward: the gradients of the same.
  DeviceBuffer<float> c1_, p1_, c2_, p2_, z3_, a3_, logits_, loss_;
  DeviceBuffer<float> d_logits_, d_a3_, d_p2_, d_c2_, d_p1_, d_c1_;
  DeviceBuffer<float> zeros_;  // the zero bias of the ReLU-only use of the fused op
  DeviceBuffer<SoftmaxCeScratch> scratch_;  // of the training batch totals
  const float* input_ = nullptr;  // x of the last forward pass (conv1's weight gradient reads it)
};

}  // namespace mnist
