#include "mnist/model/mlp.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

#include "mnist/ops/classifier_head.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/ops/gemm.h"
#include "mnist/ops/softmax_ce.h"
#include "mnist/core/philox.h"

namespace mnist {

MlpShape::MlpShape(int inputs, const std::vector<int>& hidden, int classes) {
  sizes.push_back(inputs);
  sizes.insert(sizes.end(), hidden.begin(), hidden.end());
  sizes.push_back(classes);
}

std::size_t MlpShape::weight_offset(int layer) const {
  std::size_t offset = 0;
  for (int l = 0; l < layer; ++l) offset += std::size_t(in(l)) * out(l) + out(l);
  return offset;
}

int MlpShape::max_width() const { return *std::max_element(sizes.begin(), sizes.end()); }

std::vector<float> he_uniform_init(const MlpShape& shape, std::uint64_t seed) {
  std::vector<float> params(shape.param_count(), 0.f);  // biases stay zero
  for (int l = 0; l < shape.layers(); ++l) {
    const float bound = std::sqrt(6.f / static_cast<float>(shape.in(l)));
    float* w = params.data() + shape.weight_offset(l);
    const std::size_t n = std::size_t(shape.in(l)) * shape.out(l);
    for (std::size_t i = 0; i < n; ++i)
      w[i] = (2.f * philox_uniform(seed, 0, kInitStream + l, i) - 1.f) * bound;
  }
  return params;
}

CpuMlp::CpuMlp(MlpShape shape, std::uint64_t seed, float dropout, float label_smoothing, int max_batch)
    : shape_(std::move(shape)),
      seed_(seed),
      dropout_(dropout),
      label_smoothing_(label_smoothing),
      max_batch_(max_batch),
      buffers_(shape_.param_count()),
      loss_(max_batch),
      delta_(std::size_t(max_batch) * shape_.max_width()),
      delta_prev_(std::size_t(max_batch) * shape_.max_width()) {
  buffers_.params = he_uniform_init(shape_, seed);
  for (int l = 0; l < shape_.layers(); ++l) {
    pre_activations_.emplace_back(std::size_t(max_batch) * shape_.out(l));
    if (shape_.is_hidden(l)) activations_.emplace_back(std::size_t(max_batch) * shape_.out(l));
  }
}

void CpuMlp::forward(const float* x, int rows, bool train, std::int64_t step) {
  if (rows > max_batch_) throw std::invalid_argument("CpuMlp: batch larger than the workspace");
  input_ = x;
  const float* a = x;
  for (int l = 0; l < shape_.layers(); ++l) {
    float* z = pre_activations_[l].data();
    const float* w = buffers_.params.data() + shape_.weight_offset(l);
    const float* b = buffers_.params.data() + shape_.bias_offset(l);
    twin::dense_forward(a, w, z, rows, shape_.in(l), shape_.out(l));
    if (shape_.is_hidden(l)) {
      const DropoutKey key{seed_, static_cast<std::uint32_t>(l), train ? dropout_ : 0.f};
      twin::bias_relu_dropout_forward(z, b, activations_[l].data(), rows, shape_.out(l), true, key, step);
      a = activations_[l].data();
    } else {
      // Output layer: logits = z + b, in place (its z is not needed by the backward pass).
      twin::bias_relu_dropout_forward(z, b, z, rows, shape_.out(l), false, DropoutKey{}, step);
    }
  }
}

void CpuMlp::compute_gradients(const float* x, const std::uint8_t* labels, int rows, std::int64_t step,
                               EvalTotals* totals) {
  forward(x, rows, true, step);
  const int last = shape_.layers() - 1;
  float* logits = pre_activations_[last].data();
  // delta = d(mean loss)/d(logits), and the batch's loss, correct and count added to totals.
  twin::softmax_cross_entropy(logits, labels, loss_.data(), delta_.data(), rows, shape_.out(last), label_smoothing_,
                             totals);

  // The classifier head's backward: the output layer's gradients and, through the ReLU-dropout of
  // the last hidden layer, its delta and bias gradient. Then per hidden layer from the top, the
  // weight gradient and, below it, the input gradient taken through the ReLU-dropout of the layer
  // below with that layer's bias gradient: the twin of GpuMlp::backward, op for op.
  const auto weight_grad = [&](int l) { return buffers_.grads.data() + shape_.weight_offset(l); };
  const auto bias_grad = [&](int l) { return buffers_.grads.data() + shape_.bias_offset(l); };
  const auto weights = [&](int l) { return buffers_.params.data() + shape_.weight_offset(l); };
  const auto bias = [&](int l) { return buffers_.params.data() + shape_.bias_offset(l); };
  if (last == 0) {
    twin::classifier_head_backward(input_, delta_.data(), weights(0), weight_grad(0), bias_grad(0), rows,
                                  shape_.in(0), shape_.out(0));
    return;
  }
  const int top = last - 1;  // the last hidden layer
  const HiddenBelow below{pre_activations_[top].data(), bias(top), DropoutKey{seed_, std::uint32_t(top), dropout_},
                          delta_prev_.data(), bias_grad(top)};
  twin::classifier_head_backward(activations_[top].data(), delta_.data(), weights(last), weight_grad(last),
                                bias_grad(last), rows, shape_.in(last), shape_.out(last), &below, step);
  float* delta = delta_prev_.data();  // dL/dz_l of the layer l below
  float* spare = delta_.data();
  for (int l = top; l >= 0; --l) {
    const float* a = l == 0 ? input_ : activations_[l - 1].data();
    twin::dense_backward_weights(a, delta, weight_grad(l), rows, shape_.in(l), shape_.out(l));
    if (l == 0) break;
    twin::dense_backward_input(delta, weights(l), spare, rows, shape_.in(l), shape_.out(l));
    // Through the dropout and ReLU of hidden layer l-1, in place: dL/da_l → dL/dz_{l-1}.
    const DropoutKey key{seed_, static_cast<std::uint32_t>(l - 1), dropout_};
    twin::bias_relu_dropout_backward(spare, pre_activations_[l - 1].data(), bias(l - 1), spare, rows,
                                    shape_.out(l - 1), true, key, step, bias_grad(l - 1));
    std::swap(delta, spare);
  }
}

void CpuMlp::evaluate_batch(const float* x, const std::uint8_t* labels, int rows, EvalTotals* totals,
                            std::int32_t* predictions) {
  forward(x, rows, false, 0);
  const int last = shape_.layers() - 1;
  const float* logits = pre_activations_[last].data();
  twin::softmax_cross_entropy(logits, labels, loss_.data(), nullptr, rows, shape_.out(last), label_smoothing_);
  twin::accumulate_metrics(logits, labels, loss_.data(), rows, totals, predictions);
}

}  // namespace mnist
