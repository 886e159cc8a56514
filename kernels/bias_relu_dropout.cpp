// CPU twin of kernels/bias_relu_dropout.cu: one plain loop per direction.
//   forward   y  = mask · relu(z + b) / (1 - p)        backward  dz = dy · mask / (1 - p) · [z + b > 0]
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/philox.h"

namespace mnist::ref {
namespace {

void check_p(float p) {
  if (!(p >= 0.f && p < 1.f)) throw std::invalid_argument("bias_relu_dropout: dropout p must be in [0, 1)");
}

// 1 / (1 - p), or exactly 1 when dropout is off. The GPU launcher computes the same float.
float keep_scale(float p) { return p > 0.f ? 1.0f / (1.0f - p) : 1.0f; }

}  // namespace

void bias_relu_dropout_forward(const float* z, const float* bias, float* y, int rows, int cols, bool relu,
                               DropoutKey key, std::int64_t step) {
  check_p(key.p);
  const std::uint32_t threshold = dropout_threshold(key.p);
  const float scale = keep_scale(key.p);
  // threshold 0 keeps every element (dropout_keep agrees); the test skips the Philox call.
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r) * cols + c;
      float v = z[i] + bias[c];
      if (relu && !(v > 0.f)) v = 0.f;
      const bool keep =
          threshold == 0 || dropout_keep(key.seed, static_cast<std::uint64_t>(step), key.layer, i, threshold);
      y[i] = keep ? v * scale : 0.f;
    }
  }
}

void bias_relu_dropout_backward(const float* dy, const float* z, const float* bias, float* dz, int rows, int cols,
                                bool relu, DropoutKey key, std::int64_t step) {
  check_p(key.p);
  const std::uint32_t threshold = dropout_threshold(key.p);
  const float scale = keep_scale(key.p);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r) * cols + c;
      const float v = z[i] + bias[c];
      const bool keep =
          threshold == 0 || dropout_keep(key.seed, static_cast<std::uint64_t>(step), key.layer, i, threshold);
      const bool pass = keep && (!relu || v > 0.f);
      dz[i] = pass ? dy[i] * scale : 0.f;  // dy[i] is read before dz[i] is written: dz may alias dy
    }
  }
}

}  // namespace mnist::ref
