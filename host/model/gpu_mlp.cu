// GpuMlp (include/mnist/model/gpu_mlp.h): the MLP's forward, loss, backward and Adam on the
// device, op for op as CpuMlp (host/model/mlp.cpp) runs them on the CPU.
#include "mnist/model/gpu_mlp.h"

#include <stdexcept>
#include <utility>

#include "mnist/core/check.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/ops/classifier_head.h"
#include "mnist/ops/eval_metrics.h"

namespace mnist {

GpuMlp::GpuMlp(MlpShape shape, const TrainConfig& config, int max_batch, int max_train_batch, cublasHandle_t cublas,
               cudaStream_t stream)
    : shape_(std::move(shape)),
      seed_(config.seed),
      dropout_(config.dropout),
      label_smoothing_(config.label_smoothing),
      math_(config.tf32 ? GemmMath::kTf32 : GemmMath::kFp32),
      max_batch_(max_batch),
      max_train_batch_(max_train_batch),
      cublas_(cublas),
      stream_(stream),
      buffers_(shape_.param_count()),
      loss_(std::size_t(max_batch)),
      delta_(std::size_t(max_train_batch) * shape_.max_width()),
      delta_prev_(std::size_t(max_train_batch) * shape_.max_width()),
      scratch_(1) {
  for (int l = 0; l < shape_.layers(); ++l) {
    pre_activations_.emplace_back(std::size_t(max_batch) * shape_.out(l));
    if (shape_.is_hidden(l)) activations_.emplace_back(std::size_t(max_batch) * shape_.out(l));
  }
  // The same initial weights as the CPU: drawn on the host from Philox, uploaded once.
  const std::vector<float> init = he_uniform_init(shape_, seed_);
  copy_to_device(buffers_.params.data(), init.data(), init.size(), stream_);
  MNIST_CHECK(cudaMemsetAsync(buffers_.grads.data(), 0, buffers_.grads.bytes(), stream_));
  MNIST_CHECK(cudaMemsetAsync(buffers_.adam_m.data(), 0, buffers_.adam_m.bytes(), stream_));
  MNIST_CHECK(cudaMemsetAsync(buffers_.adam_v.data(), 0, buffers_.adam_v.bytes(), stream_));
  MNIST_CHECK(cudaMemsetAsync(scratch_.data(), 0, scratch_.bytes(), stream_));
}

void GpuMlp::forward(const float* x, int rows, bool train, const std::int64_t* step) {
  if (rows > max_batch_) throw std::invalid_argument("GpuMlp: batch larger than the workspace");
  input_ = x;
  const float* a = x;
  for (int l = 0; l + 1 < shape_.layers(); ++l) {
    float* z = pre_activations_[l].data();
    gpu::dense_forward(cublas_, a, weights(l), z, rows, shape_.in(l), shape_.out(l), math_);
    const DropoutKey key{seed_, static_cast<std::uint32_t>(l), train ? dropout_ : 0.f};
    gpu::bias_relu_dropout_forward(z, bias(l), activations_[l].data(), rows, shape_.out(l), true, key, step,
                                   stream_);
    a = activations_[l].data();
  }
}

void GpuMlp::compute_logits(int rows) {
  const int last = shape_.layers() - 1;
  gpu::classifier_head_forward(head_input(), weights(last), bias(last), pre_activations_[last].data(), nullptr,
                               nullptr, nullptr, rows, shape_.in(last), shape_.out(last), label_smoothing_, stream_);
}

void GpuMlp::loss(const std::uint8_t* labels, int rows, bool gradient, EvalTotals* totals, std::int32_t* predictions,
                  const std::int64_t* step, std::int64_t* non_finite) {
  if (gradient && rows > max_train_batch_) throw std::invalid_argument("GpuMlp: batch larger than the workspace");
  const int last = shape_.layers() - 1;
  float* logits = pre_activations_[last].data();
  if (gradient) {
    gpu::classifier_head_forward(head_input(), weights(last), bias(last), logits, labels, loss_.data(),
                                 delta_.data(), rows, shape_.in(last), shape_.out(last), label_smoothing_, stream_,
                                 {totals, scratch_.data(), step, non_finite});
  } else {
    gpu::classifier_head_forward(head_input(), weights(last), bias(last), logits, labels, loss_.data(), nullptr,
                                 rows, shape_.in(last), shape_.out(last), label_smoothing_, stream_);
    gpu::accumulate_metrics(logits, labels, loss_.data(), rows, totals, predictions, stream_);
  }
}

void GpuMlp::backward(int rows, const std::int64_t* step) {
  const int last = shape_.layers() - 1;
  if (last == 0) {
    gpu::classifier_head_backward(input_, delta_.data(), weights(0), weight_grad(0), bias_grad(0), rows,
                                  shape_.in(0), shape_.out(0), stream_);
    return;
  }
  const int top = last - 1;  // the last hidden layer
  const HiddenBelow below{pre_activations_[top].data(), bias(top), DropoutKey{seed_, std::uint32_t(top), dropout_},
                          delta_prev_.data(), bias_grad(top)};
  gpu::classifier_head_backward(activations_[top].data(), delta_.data(), weights(last), weight_grad(last),
                                bias_grad(last), rows, shape_.in(last), shape_.out(last), stream_, &below, step);
  float* delta = delta_prev_.data();  // dL/dz_l of the layer l below
  float* spare = delta_.data();
  for (int l = top; l >= 0; --l) {
    const float* a = l == 0 ? input_ : activations_[l - 1].data();
    gpu::dense_backward_weights(cublas_, a, delta, weight_grad(l), rows, shape_.in(l), shape_.out(l), math_);
    if (l == 0) break;
    gpu::dense_backward_input(cublas_, delta, weights(l), spare, rows, shape_.in(l), shape_.out(l), math_);
    // Through the dropout and ReLU of hidden layer l-1, in place: dL/da_l → dL/dz_{l-1}.
    const DropoutKey key{seed_, static_cast<std::uint32_t>(l - 1), dropout_};
    gpu::bias_relu_dropout_backward(spare, pre_activations_[l - 1].data(), bias(l - 1), spare, rows,
                                    shape_.out(l - 1), true, key, step, stream_, bias_grad(l - 1));
    std::swap(delta, spare);
  }
}


}  // namespace mnist
