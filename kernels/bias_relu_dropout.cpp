// CPU twin of kernels/bias_relu_dropout.cu: one plain loop per direction, over the dropout_keep
// bits drawn first (dropout_keep_mask: one Philox block per four elements, as on the GPU).
//   forward   y  = mask · relu(z + b) / (1 - p)        backward  dz = dy · mask / (1 - p) · [z + b > 0]
// and the backward's optional bias gradient db = bias_grad(dz), the twin of the fused GPU sum.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "mnist/core/cpu_clones.h"
#include "mnist/ops/bias_grad.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/core/philox.h"

namespace mnist::twin {
namespace {

void check_p(float p) {
  if (!(p >= 0.f && p < 1.f)) throw std::invalid_argument("bias_relu_dropout: dropout p must be in [0, 1)");
}

// 1 / (1 - p), or exactly 1 when dropout is off. The GPU launcher computes the same float.
float keep_scale(float p) { return p > 0.f ? 1.0f / (1.0f - p) : 1.0f; }

std::vector<std::uint8_t> keep_mask(const DropoutKey& key, std::int64_t step, int rows, int cols) {
  return dropout_keep_mask(key.seed, static_cast<std::uint64_t>(step), key.layer, dropout_threshold(key.p),
                           static_cast<std::size_t>(rows) * cols);
}

}  // namespace

// Selects, not branches on the random mask, with every float operation done unconditionally, let
// the loops vectorize. GCC if-converts them only under -fno-trapping-math (CMakeLists.txt builds
// this file so: nothing here reads the floating-point exception flags); the bits are the same.
MNIST_CPU_CLONES
void bias_relu_dropout_forward(const float* z, const float* bias, float* y, int rows, int cols, bool relu,
                               DropoutKey key, std::int64_t step) {
  check_p(key.p);
  const float scale = keep_scale(key.p);
  const std::vector<std::uint8_t> keep = keep_mask(key, step, rows, cols);
  for (int r = 0; r < rows; ++r) {
    const std::size_t row = static_cast<std::size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) {
      const float v = z[row + c] + bias[c];
      const float a = relu & !(v > 0.f) ? 0.f : v;  // ReLU; NaN becomes 0
      const float scaled = a * scale;
      y[row + c] = keep[row + c] != 0 ? scaled : 0.f;
    }
  }
}

MNIST_CPU_CLONES
void bias_relu_dropout_backward(const float* dy, const float* z, const float* bias, float* dz, int rows, int cols,
                                bool relu, DropoutKey key, std::int64_t step, float* db) {
  check_p(key.p);
  const float scale = keep_scale(key.p);
  const std::vector<std::uint8_t> keep = keep_mask(key, step, rows, cols);
  for (int r = 0; r < rows; ++r) {
    const std::size_t row = static_cast<std::size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) {
      const float v = z[row + c] + bias[c];
      const float scaled = dy[row + c] * scale;  // dy is read before dz is written: dz may alias dy
      const bool pass = (keep[row + c] != 0) & (!relu | (v > 0.f));
      dz[row + c] = pass ? scaled : 0.f;
    }
  }
  if (db != nullptr) bias_grad(dz, db, rows, cols);
}

}  // namespace mnist::twin
