// GpuCnn (include/mnist/model/gpu_cnn.h): the CNN's forward pass, loss, backward pass and Adam on one
// stream, step for step the computation of CpuCnn (host/model/cnn.cpp), with cuDNN in place of the
// im2col GEMMs and the GPU launchers in place of their CPU twins.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mnist/core/check.h"
#include "mnist/model/gpu_cnn.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/ops/classifier_head.h"
#include "mnist/ops/maxpool.h"
#include "mnist/ops/softmax_ce.h"

namespace mnist {
namespace {

// ReLU of the conv outputs, in place: the fused op with a zero bias and no dropout over the maps
// [N·C, H·W] (H·W a multiple of 4 takes its float4 path). With p = 0 the step is not read. Its
// backward reads the ReLU's output, which is positive exactly where its input was.
void relu_forward(float* c, const float* zeros, int maps, int plane, cudaStream_t stream) {
  gpu::bias_relu_dropout_forward(c, zeros, c, maps, plane, true, DropoutKey{}, nullptr, stream);
}
void relu_backward(float* dc, const float* c, const float* zeros, int maps, int plane, cudaStream_t stream) {
  gpu::bias_relu_dropout_backward(dc, c, zeros, dc, maps, plane, true, DropoutKey{}, nullptr, stream);
}

}  // namespace

GpuCnn::GpuCnn(CnnShape shape, std::uint64_t seed, float dropout, float label_smoothing, int max_batch,
               int max_train_batch, cudaStream_t stream, GemmMath math)
    : shape_(shape),
      seed_(seed),
      dropout_(dropout),
      label_smoothing_(label_smoothing),
      math_(math),
      max_batch_(std::max(max_batch, max_train_batch)),
      max_train_batch_(max_train_batch),
      stream_(stream),
      cublas_workspace_(kCublasWorkspaceBytes),
      cublas_(stream),
      cudnn_(stream) {
  shape_.validate();
  if (max_train_batch < 1) throw std::invalid_argument("GpuCnn: max_train_batch must be at least 1");
  // After the stream: cublasSetStream resets the handle to its default workspace pool.
  MNIST_CHECK(cublasSetWorkspace(cublas_.get(), cublas_workspace_.data(), cublas_workspace_.bytes()));

  const std::size_t n = std::size_t(max_batch_), t = std::size_t(max_train_batch_);
  const Conv2dShape s1 = shape_.conv(0, 1), s2 = shape_.conv(1, 1);
  c1_ = DeviceBuffer<float>(n * s1.y_size());
  p1_ = DeviceBuffer<float>(n * s2.x_size());
  c2_ = DeviceBuffer<float>(n * s2.y_size());
  p2_ = DeviceBuffer<float>(n * shape_.flat());
  z3_ = DeviceBuffer<float>(n * shape_.hidden);
  a3_ = DeviceBuffer<float>(n * shape_.hidden);
  logits_ = DeviceBuffer<float>(n * shape_.classes);
  loss_ = DeviceBuffer<float>(n);
  d_logits_ = DeviceBuffer<float>(t * shape_.classes);
  d_a3_ = DeviceBuffer<float>(t * shape_.hidden);
  d_p2_ = DeviceBuffer<float>(t * shape_.flat());
  d_c2_ = DeviceBuffer<float>(t * s2.y_size());
  d_p1_ = DeviceBuffer<float>(t * s2.x_size());
  d_c1_ = DeviceBuffer<float>(t * s1.y_size());

  const std::size_t count = shape_.param_count();
  buffers_ = ParamBuffers<DeviceBuffer<float>>(count);
  step_ = DeviceBuffer<std::int64_t>(1);
  zeros_ = DeviceBuffer<float>(std::size_t(shape_.height) * shape_.width);  // the larger of the two planes
  scratch_ = DeviceBuffer<SoftmaxCeScratch>(1);
  MNIST_CHECK(cudaMemsetAsync(scratch_.data(), 0, scratch_.bytes(), stream_));

  // The same initial weights as the CPU: drawn on the host from Philox, uploaded once.
  const std::vector<float> init = he_uniform_init(shape_, seed_);
  copy_to_device(buffers_.params.data(), init.data(), init.size(), stream_);
  MNIST_CHECK(cudaMemsetAsync(buffers_.grads.data(), 0, buffers_.grads.bytes(), stream_));
  MNIST_CHECK(cudaMemsetAsync(buffers_.adam_m.data(), 0, buffers_.adam_m.bytes(), stream_));
  MNIST_CHECK(cudaMemsetAsync(buffers_.adam_v.data(), 0, buffers_.adam_v.bytes(), stream_));
  MNIST_CHECK(cudaMemsetAsync(step_.data(), 0, step_.bytes(), stream_));
  MNIST_CHECK(cudaMemsetAsync(zeros_.data(), 0, zeros_.bytes(), stream_));

  prepare(max_train_batch_);
  prepare(max_batch_);
  MNIST_CHECK(cudaStreamSynchronize(stream_));
}

void GpuCnn::prepare(int rows) {
  if (rows < 1 || rows > max_batch_)
    throw std::invalid_argument("GpuCnn: a batch of " + std::to_string(rows) + " images (1 to " +
                                std::to_string(max_batch_) + " fit the workspace)");
  if (plans_.count(rows)) return;
  // A batch larger than the backward buffers is only ever evaluated: cuDNN need not find
  // backward algorithms (nor workspace) for it, which at 10,000 images may be the largest.
  const auto passes = rows <= max_train_batch_ ? gpu::Conv2d::Passes::kForwardAndBackward
                                               : gpu::Conv2d::Passes::kForwardOnly;
  plans_.emplace(rows, ConvPlans{gpu::Conv2d(cudnn_.get(), shape_.conv(0, rows), math_, passes),
                                 gpu::Conv2d(cudnn_.get(), shape_.conv(1, rows), math_, passes)});
}

GpuCnn::ConvPlans& GpuCnn::plans(int rows) {
  prepare(rows);
  return plans_.at(rows);
}

std::string GpuCnn::describe(int rows) const {
  const auto found = plans_.find(rows);
  if (found == plans_.end()) return "no plans for batches of " + std::to_string(rows);
  return "conv1: " + found->second.conv1.describe() + "; conv2: " + found->second.conv2.describe();
}

void GpuCnn::forward(const float* x, int rows, bool train, const std::int64_t* step) {
  ConvPlans& plan = plans(rows);  // checks rows
  input_ = x;
  const Conv2dShape s1 = shape_.conv(0, rows), s2 = shape_.conv(1, rows);
  const int c1 = s1.out_channels, c2 = s2.out_channels;

  plan.conv1.forward(x, weights(0), bias(0), c1_.data());
  relu_forward(c1_.data(), zeros_.data(), rows * c1, s1.out_height() * s1.out_width(), stream_);
  gpu::maxpool2x2_forward(c1_.data(), p1_.data(), rows, c1, s1.out_height(), s1.out_width(), stream_);

  plan.conv2.forward(p1_.data(), weights(1), bias(1), c2_.data());
  relu_forward(c2_.data(), zeros_.data(), rows * c2, s2.out_height() * s2.out_width(), stream_);
  gpu::maxpool2x2_forward(c2_.data(), p2_.data(), rows, c2, s2.out_height(), s2.out_width(), stream_);

  // p2 [rows, C2, H/4, W/4] read as [rows, flat]: the flatten is free.
  gpu::dense_forward(cublas_.get(), p2_.data(), weights(2), z3_.data(), rows, shape_.flat(), shape_.hidden, math_);
  const DropoutKey key{seed_, CnnShape::kDropoutLayer, train ? dropout_ : 0.f};
  gpu::bias_relu_dropout_forward(z3_.data(), bias(2), a3_.data(), rows, shape_.hidden, true, key, step, stream_);
  // dense2 (the logits) is the classifier head's, fused with the loss: loss(), compute_logits().
}

void GpuCnn::compute_logits(int rows) {
  gpu::classifier_head_forward(a3_.data(), weights(3), bias(3), logits_.data(), nullptr, nullptr, nullptr, rows,
                               shape_.hidden, shape_.classes, label_smoothing_, stream_);
}

void GpuCnn::loss(const std::uint8_t* labels, int rows, bool gradient, EvalTotals* totals,
                  std::int32_t* predictions, const std::int64_t* step, std::int64_t* non_finite) {
  if (rows < 1 || rows > (gradient ? max_train_batch_ : max_batch_))
    throw std::invalid_argument("GpuCnn: batch larger than the workspace");
  if (gradient) {  // the batch totals (no confusion matrix, no predictions) in the same launch
    gpu::classifier_head_forward(a3_.data(), weights(3), bias(3), logits_.data(), labels, loss_.data(),
                                 d_logits_.data(), rows, shape_.hidden, shape_.classes, label_smoothing_, stream_,
                                 {totals, scratch_.data(), step, non_finite});
    return;
  }
  gpu::classifier_head_forward(a3_.data(), weights(3), bias(3), logits_.data(), labels, loss_.data(), nullptr, rows,
                               shape_.hidden, shape_.classes, label_smoothing_, stream_);
  if (totals)  // the metrics kernel adds to totals, so it needs them
    gpu::accumulate_metrics(logits_.data(), labels, loss_.data(), rows, totals, predictions, stream_);
}

void GpuCnn::backward(int rows, const std::int64_t* step) {
  if (rows < 1 || rows > max_train_batch_) throw std::invalid_argument("GpuCnn: batch larger than the workspace");
  ConvPlans& plan = plans(rows);
  const Conv2dShape s1 = shape_.conv(0, rows), s2 = shape_.conv(1, rows);
  const int c1 = s1.out_channels, c2 = s2.out_channels, hidden = shape_.hidden, classes = shape_.classes;
  cublasHandle_t cublas = cublas_.get();

  // dense2 (the classifier head): logits = a3·W3 + b3 with a3 = dropout(relu(p2·W2 + b2)); one launch
  // gives W3's and b3's gradients, dL/dz3 in d_a3 and b2's gradient.
  const DropoutKey key{seed_, CnnShape::kDropoutLayer, dropout_};
  const HiddenBelow below{z3_.data(), bias(2), key, d_a3_.data(), bias_grad(2)};
  gpu::classifier_head_backward(a3_.data(), d_logits_.data(), weights(3), weight_grad(3), bias_grad(3), rows, hidden,
                                classes, stream_, &below, step);
  // dense1: z3 = p2·W2 + b2.
  gpu::dense_backward_weights(cublas, p2_.data(), d_a3_.data(), weight_grad(2), rows, shape_.flat(), hidden, math_);
  gpu::dense_backward_input(cublas, d_a3_.data(), weights(2), d_p2_.data(), rows, shape_.flat(), hidden, math_);

  // conv2 → ReLU → pool.
  gpu::maxpool2x2_backward(c2_.data(), d_p2_.data(), d_c2_.data(), rows, c2, s2.out_height(), s2.out_width(),
                           stream_);
  relu_backward(d_c2_.data(), c2_.data(), zeros_.data(), rows * c2, s2.out_height() * s2.out_width(), stream_);
  plan.conv2.backward_filter(p1_.data(), d_c2_.data(), weight_grad(1));
  plan.conv2.backward_bias(d_c2_.data(), bias_grad(1));
  plan.conv2.backward_data(d_c2_.data(), weights(1), d_p1_.data());

  // conv1 → ReLU → pool (the input needs no gradient).
  gpu::maxpool2x2_backward(c1_.data(), d_p1_.data(), d_c1_.data(), rows, c1, s1.out_height(), s1.out_width(),
                           stream_);
  relu_backward(d_c1_.data(), c1_.data(), zeros_.data(), rows * c1, s1.out_height() * s1.out_width(), stream_);
  plan.conv1.backward_filter(input_, d_c1_.data(), weight_grad(0));
  plan.conv1.backward_bias(d_c1_.data(), bias_grad(0));
}

void GpuCnn::compute_gradients(const float* x, const std::uint8_t* labels, int rows, EvalTotals* totals) {
  gpu::advance_step(step_.data(), stream_);  // ++step before the step, as the trainers do
  forward(x, rows, /*train=*/true, step_.data());
  loss(labels, rows, /*gradient=*/true, totals, nullptr);
  backward(rows, step_.data());
}

void GpuCnn::evaluate_batch(const float* x, const std::uint8_t* labels, int rows, EvalTotals* totals,
                            std::int32_t* predictions) {
  if (totals == nullptr) throw std::invalid_argument("GpuCnn::evaluate_batch: totals is required");
  forward(x, rows, /*train=*/false, step_.data());
  loss(labels, rows, /*gradient=*/false, totals, predictions);
}

std::vector<float> GpuCnn::download_params() const {
  return copy_to_host(buffers_.params.data(), buffers_.params.size(), stream_);
}
std::vector<float> GpuCnn::download_grads() const {
  return copy_to_host(buffers_.grads.data(), buffers_.grads.size(), stream_);
}
std::vector<float> GpuCnn::download_adam_m() const {
  return copy_to_host(buffers_.adam_m.data(), buffers_.adam_m.size(), stream_);
}
std::vector<float> GpuCnn::download_adam_v() const {
  return copy_to_host(buffers_.adam_v.data(), buffers_.adam_v.size(), stream_);
}
std::int64_t GpuCnn::download_step() const { return copy_to_host(step_.data(), 1, stream_).at(0); }

std::vector<float> GpuCnn::download_logits(int rows) const {
  if (rows < 0 || rows > max_batch_) throw std::invalid_argument("GpuCnn::download_logits: bad row count");
  return copy_to_host(logits_.data(), std::size_t(rows) * shape_.classes, stream_);
}

std::vector<float> GpuCnn::download_conv_delta(int l, int rows) const {
  if (l < 0 || l > 1 || rows < 0 || rows > max_train_batch_)
    throw std::invalid_argument("GpuCnn::download_conv_delta: bad layer or row count");
  return copy_to_host((l == 0 ? d_c1_ : d_c2_).data(), shape_.conv(l, 1).y_size() * rows, stream_);
}

std::vector<float> GpuCnn::download_hidden_delta(int rows) const {
  if (rows < 0 || rows > max_train_batch_) throw std::invalid_argument("GpuCnn::download_hidden_delta: bad row count");
  return copy_to_host(d_a3_.data(), std::size_t(rows) * shape_.hidden, stream_);
}

void GpuCnn::upload_state(const std::vector<float>& params, const std::vector<float>& adam_m,
                          const std::vector<float>& adam_v, std::int64_t step) {
  const std::size_t n = buffers_.params.size();
  if (params.size() != n || adam_m.size() != n || adam_v.size() != n)
    throw std::invalid_argument("GpuCnn::upload_state: the state does not match the model's shape");
  // Into the same buffers: a captured graph stays valid.
  copy_to_device(buffers_.params.data(), params.data(), n, stream_);
  copy_to_device(buffers_.adam_m.data(), adam_m.data(), n, stream_);
  copy_to_device(buffers_.adam_v.data(), adam_v.data(), n, stream_);
  copy_to_device(step_.data(), &step, 1, stream_);
}

}  // namespace mnist
