// The CNN on the CPU (include/mnist/model/cnn.h): the He-uniform initialisation, the im2col
// convolution, and CpuCnn, the twin of GpuCnn (host/model/gpu_cnn.cu).
//
// Every step is one of the reference ops of include/mnist/ops, except the convolution, which
// runs as im2col + GEMM (below) because twin::conv2d's direct double loops are ~6× slower (conv2's
// forward at batch 128 on 2 cores: 290 ms against 47 ms); the test holds the two to the same
// results up to float rounding.
#include "mnist/model/cnn.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/ops/classifier_head.h"
#include "mnist/ops/gemm.h"
#include "mnist/ops/maxpool.h"
#include "mnist/ops/softmax_ce.h"
#include "mnist/core/philox.h"

namespace mnist {

// ---------------------------------------------------------------------------------------------
// The initialisation (the shape and its layout: host/model/cnn_shape.cpp).

std::vector<float> he_uniform_init(const CnnShape& shape, std::uint64_t seed) {
  shape.validate();
  std::vector<float> params(shape.param_count(), 0.f);  // biases stay zero
  for (int l = 0; l < CnnShape::kLayers; ++l) {
    const float bound = std::sqrt(6.f / static_cast<float>(shape.fan_in(l)));
    float* w = params.data() + shape.weight_offset(l);
    const std::size_t n = shape.weight_size(l);
    for (std::size_t i = 0; i < n; ++i)
      w[i] = (2.f * philox_uniform(seed, 0, kInitStream + l, i) - 1.f) * bound;
  }
  return params;
}

// ---------------------------------------------------------------------------------------------
// The convolution as im2col + GEMM. For one image, with K = C_in·k·k and P = OH·OW:
//   col[(c·k + u)·k + v, i·OW + j] = x[c, i+u-pad, j+v-pad]   (0 in the padding)
//   forward          y[O, P]   = W[O, K] · col[K, P]            (+ b[o] on row o)
//   backward data    dcol[K, P] = W[O, K]^T · dy[O, P], then dx = col2im(dcol), the transpose of im2col
//   backward filter  dW[O, K] += dy[O, P] · col[K, P]^T        (summed over the images)
// The image's NCHW output [O, OH, OW] is exactly the row-major [O, P] of the GEMM, so nothing is
// transposed. The GEMMs are the dense layer's three (twin::dense_*), with W or col as the "batch".

namespace im2col {
namespace {

std::size_t image_in(const Conv2dShape& s) { return std::size_t(s.in_channels) * s.height * s.width; }
std::size_t image_out(const Conv2dShape& s) { return std::size_t(s.out_channels) * s.out_height() * s.out_width(); }
int col_rows(const Conv2dShape& s) { return s.in_channels * s.kernel * s.kernel; }
int col_cols(const Conv2dShape& s) { return s.out_height() * s.out_width(); }

// Scratch for one image: the column matrix, then (for backward_filter) one image's dW.
float* scratch_for(const Conv2dShape& s, std::vector<float>& scratch) {
  const std::size_t need = std::size_t(col_rows(s)) * col_cols(s) + std::size_t(s.out_channels) * col_rows(s);
  if (scratch.size() < need) scratch.resize(need);
  return scratch.data();
}

void im2col_image(const float* x, float* col, const Conv2dShape& s) {
  const int H = s.height, W = s.width, OH = s.out_height(), OW = s.out_width(), K = s.kernel, pad = s.pad;
  for (int c = 0; c < s.in_channels; ++c)
    for (int u = 0; u < K; ++u)
      for (int v = 0; v < K; ++v) {
        float* row = col + (std::size_t(c * K + u) * K + v) * OH * OW;
        for (int i = 0; i < OH; ++i) {
          float* out = row + std::size_t(i) * OW;
          const int h = i + u - pad;
          if (h < 0 || h >= H) {
            std::fill(out, out + OW, 0.f);
            continue;
          }
          const float* xrow = x + (std::size_t(c) * H + h) * W;
          for (int j = 0; j < OW; ++j) {
            const int w = j + v - pad;
            out[j] = w >= 0 && w < W ? xrow[w] : 0.f;
          }
        }
      }
}

// dx = col2im(dcol): every entry of the column matrix goes back to the pixel it was copied from.
void col2im_image(const float* dcol, float* dx, const Conv2dShape& s) {
  const int H = s.height, W = s.width, OH = s.out_height(), OW = s.out_width(), K = s.kernel, pad = s.pad;
  std::fill(dx, dx + image_in(s), 0.f);
  for (int c = 0; c < s.in_channels; ++c)
    for (int u = 0; u < K; ++u)
      for (int v = 0; v < K; ++v) {
        const float* row = dcol + (std::size_t(c * K + u) * K + v) * OH * OW;
        for (int i = 0; i < OH; ++i) {
          const int h = i + u - pad;
          if (h < 0 || h >= H) continue;
          const float* in = row + std::size_t(i) * OW;
          float* dxrow = dx + (std::size_t(c) * H + h) * W;
          const int lo = std::max(0, pad - v), hi = std::min(OW, W + pad - v);  // w = j + v - pad in [0, W)
          for (int j = lo; j < hi; ++j) dxrow[j + v - pad] += in[j];
        }
      }
}

}  // namespace

void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dShape& s,
                    std::vector<float>& scratch) {
  validate(s);
  float* col = scratch_for(s, scratch);
  const int P = col_cols(s);
  for (int n = 0; n < s.batch; ++n) {
    im2col_image(x + n * image_in(s), col, s);
    float* yn = y + n * image_out(s);
    twin::dense_forward(w, col, yn, s.out_channels, col_rows(s), P);
    if (b)
      for (int o = 0; o < s.out_channels; ++o)
        for (int p = 0; p < P; ++p) yn[std::size_t(o) * P + p] += b[o];
  }
}

void conv2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dShape& s,
                          std::vector<float>& scratch) {
  validate(s);
  float* dcol = scratch_for(s, scratch);
  for (int n = 0; n < s.batch; ++n) {
    twin::dense_backward_weights(w, dy + n * image_out(s), dcol, s.out_channels, col_rows(s), col_cols(s));
    col2im_image(dcol, dx + n * image_in(s), s);
  }
}

void conv2d_backward_filter(const float* x, const float* dy, float* dw, const Conv2dShape& s,
                            std::vector<float>& scratch) {
  validate(s);
  float* col = scratch_for(s, scratch);
  float* dw_image = col + std::size_t(col_rows(s)) * col_cols(s);
  const std::size_t n_w = s.w_size();
  std::fill(dw, dw + n_w, 0.f);
  for (int n = 0; n < s.batch; ++n) {
    im2col_image(x + n * image_in(s), col, s);
    twin::dense_backward_input(dy + n * image_out(s), col, dw_image, s.out_channels, col_rows(s), col_cols(s));
    for (std::size_t i = 0; i < n_w; ++i) dw[i] += dw_image[i];
  }
}

}  // namespace im2col

// ---------------------------------------------------------------------------------------------
// The model.

namespace {

// ReLU of the conv outputs, in place: the fused op with a zero bias, no dropout, over the rows
// N·C of the maps [N·C, H·W]. Its backward reads the ReLU's output, which is positive exactly
// where its input was.
void relu_forward(float* c, const float* zeros, int maps, int plane) {
  twin::bias_relu_dropout_forward(c, zeros, c, maps, plane, true, DropoutKey{}, 0);
}
void relu_backward(float* dc, const float* c, const float* zeros, int maps, int plane) {
  twin::bias_relu_dropout_backward(dc, c, zeros, dc, maps, plane, true, DropoutKey{}, 0);
}

void grow(std::vector<float>& buffer, std::size_t size) {
  if (buffer.size() < size) buffer.resize(size);
}

}  // namespace

CpuCnn::CpuCnn(CnnShape shape, std::uint64_t seed, float dropout, float label_smoothing, int max_batch)
    : shape_(shape),
      seed_(seed),
      dropout_(dropout),
      label_smoothing_(label_smoothing),
      max_batch_(max_batch),
      buffers_(shape_.param_count()) {
  if (max_batch < 1) throw std::invalid_argument("CpuCnn: max_batch must be at least 1");
  buffers_.params = he_uniform_init(shape_, seed);
  const std::size_t n = std::size_t(max_batch);
  c1_.resize(shape_.conv(0, max_batch).y_size());
  p1_.resize(shape_.conv(1, max_batch).x_size());
  c2_.resize(shape_.conv(1, max_batch).y_size());
  p2_.resize(n * shape_.flat());
  z3_.resize(n * shape_.hidden);
  a3_.resize(n * shape_.hidden);
  logits_.resize(n * shape_.classes);
  loss_.resize(n);
  zeros_.assign(std::size_t(shape_.height) * shape_.width, 0.f);  // the larger of the two planes
}

void CpuCnn::forward(const float* x, int rows, bool train, std::int64_t step) {
  if (rows < 1 || rows > max_batch_)
    throw std::invalid_argument("CpuCnn: a batch of " + std::to_string(rows) + " images (1 to " +
                                std::to_string(max_batch_) + " fit the workspace)");
  const Conv2dShape s1 = shape_.conv(0, rows), s2 = shape_.conv(1, rows);
  const int c1 = s1.out_channels, c2 = s2.out_channels;

  im2col::conv2d_forward(x, weights(0), bias(0), c1_.data(), s1, scratch_);
  relu_forward(c1_.data(), zeros_.data(), rows * c1, s1.out_height() * s1.out_width());
  twin::maxpool2x2_forward(c1_.data(), p1_.data(), rows, c1, s1.out_height(), s1.out_width());

  im2col::conv2d_forward(p1_.data(), weights(1), bias(1), c2_.data(), s2, scratch_);
  relu_forward(c2_.data(), zeros_.data(), rows * c2, s2.out_height() * s2.out_width());
  twin::maxpool2x2_forward(c2_.data(), p2_.data(), rows, c2, s2.out_height(), s2.out_width());

  // p2 [rows, C2, H/4, W/4] read as [rows, flat]: the flatten is free.
  twin::dense_forward(p2_.data(), weights(2), z3_.data(), rows, shape_.flat(), shape_.hidden);
  const DropoutKey key{seed_, CnnShape::kDropoutLayer, train ? dropout_ : 0.f};
  twin::bias_relu_dropout_forward(z3_.data(), bias(2), a3_.data(), rows, shape_.hidden, true, key, step);

  twin::dense_forward(a3_.data(), weights(3), logits_.data(), rows, shape_.hidden, shape_.classes);
  twin::bias_relu_dropout_forward(logits_.data(), bias(3), logits_.data(), rows, shape_.classes, false,
                                 DropoutKey{}, step);
}

void CpuCnn::compute_gradients(const float* x, const std::uint8_t* labels, int rows, std::int64_t step,
                               EvalTotals* totals) {
  forward(x, rows, true, step);
  const Conv2dShape s1 = shape_.conv(0, rows), s2 = shape_.conv(1, rows);
  const int c1 = s1.out_channels, c2 = s2.out_channels, hidden = shape_.hidden, classes = shape_.classes;
  grow(d_logits_, std::size_t(rows) * classes);
  grow(d_a3_, std::size_t(rows) * hidden);
  grow(d_p2_, std::size_t(rows) * shape_.flat());
  grow(d_c2_, s2.y_size());
  grow(d_p1_, s2.x_size());
  grow(d_c1_, s1.y_size());
  const auto dw = [&](int l) { return buffers_.grads.data() + shape_.weight_offset(l); };
  const auto db = [&](int l) { return buffers_.grads.data() + shape_.bias_offset(l); };

  twin::softmax_cross_entropy(logits_.data(), labels, loss_.data(), d_logits_.data(), rows, classes, label_smoothing_,
                             totals);

  // dense2 (the classifier head): logits = a3·W3 + b3 with a3 = dropout(relu(p2·W2 + b2)); its
  // backward gives W3's and b3's gradients, dL/dz3 in d_a3 and b2's gradient, as on the GPU.
  const HiddenBelow below{z3_.data(), bias(2), DropoutKey{seed_, CnnShape::kDropoutLayer, dropout_}, d_a3_.data(),
                          db(2)};
  twin::classifier_head_backward(a3_.data(), d_logits_.data(), weights(3), dw(3), db(3), rows, hidden, classes,
                                &below, step);

  // dense1: z3 = p2·W2 + b2.
  twin::dense_backward_weights(p2_.data(), d_a3_.data(), dw(2), rows, shape_.flat(), hidden);
  twin::dense_backward_input(d_a3_.data(), weights(2), d_p2_.data(), rows, shape_.flat(), hidden);

  // conv2 → ReLU → pool.
  twin::maxpool2x2_backward(c2_.data(), d_p2_.data(), d_c2_.data(), rows, c2, s2.out_height(), s2.out_width());
  relu_backward(d_c2_.data(), c2_.data(), zeros_.data(), rows * c2, s2.out_height() * s2.out_width());
  im2col::conv2d_backward_filter(p1_.data(), d_c2_.data(), dw(1), s2, scratch_);
  twin::conv2d_backward_bias(d_c2_.data(), db(1), s2);
  im2col::conv2d_backward_data(d_c2_.data(), weights(1), d_p1_.data(), s2, scratch_);

  // conv1 → ReLU → pool (the input needs no gradient).
  twin::maxpool2x2_backward(c1_.data(), d_p1_.data(), d_c1_.data(), rows, c1, s1.out_height(), s1.out_width());
  relu_backward(d_c1_.data(), c1_.data(), zeros_.data(), rows * c1, s1.out_height() * s1.out_width());
  im2col::conv2d_backward_filter(x, d_c1_.data(), dw(0), s1, scratch_);
  twin::conv2d_backward_bias(d_c1_.data(), db(0), s1);
}

void CpuCnn::evaluate_batch(const float* x, const std::uint8_t* labels, int rows, EvalTotals* totals,
                            std::int32_t* predictions) {
  forward(x, rows, false, 0);
  twin::softmax_cross_entropy(logits_.data(), labels, loss_.data(), nullptr, rows, shape_.classes, label_smoothing_);
  twin::accumulate_metrics(logits_.data(), labels, loss_.data(), rows, totals, predictions);
}

}  // namespace mnist
