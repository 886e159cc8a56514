// CPU twin of kernels/maxpool.cu (include/mnist/ops/maxpool.h): 2×2 windows, stride 2, NCHW.
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "mnist/ops/maxpool.h"

namespace mnist::twin {
namespace {

void check_dims(const char* op, int batch, int channels, int height, int width) {
  if (batch < 0 || channels < 0 || height < 0 || width < 0)
    throw std::invalid_argument(std::string(op) + ": negative dimension (" + std::to_string(batch) + "x" +
                                std::to_string(channels) + "x" + std::to_string(height) + "x" +
                                std::to_string(width) + ")");
}

// Index in {0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right} of the first maximum;
// a NaN beats any number, and the first NaN beats later ones.
int window_argmax(const float v[4]) {
  int best = 0;
  for (int k = 1; k < 4; ++k)
    if (v[k] > v[best] || (std::isnan(v[k]) && !std::isnan(v[best]))) best = k;
  return best;
}

}  // namespace

void maxpool2x2_forward(const float* x, float* y, int batch, int channels, int height, int width) {
  check_dims("twin::maxpool2x2_forward", batch, channels, height, width);
  const int OH = height / 2, OW = width / 2;
  for (std::size_t p = 0; p < static_cast<std::size_t>(batch) * channels; ++p) {
    const float* xp = x + p * height * width;
    float* yp = y + p * OH * OW;
    for (int i = 0; i < OH; ++i)
      for (int j = 0; j < OW; ++j) {
        const float* top = xp + static_cast<std::size_t>(2 * i) * width + 2 * j;
        const float v[4] = {top[0], top[1], top[width], top[width + 1]};
        yp[static_cast<std::size_t>(i) * OW + j] = v[window_argmax(v)];
      }
  }
}

void maxpool2x2_backward(const float* x, const float* dy, float* dx, int batch, int channels, int height, int width) {
  check_dims("twin::maxpool2x2_backward", batch, channels, height, width);
  const int OH = height / 2, OW = width / 2;
  for (std::size_t p = 0; p < static_cast<std::size_t>(batch) * channels; ++p) {
    const float* xp = x + p * height * width;
    const float* dyp = dy + p * OH * OW;
    float* dxp = dx + p * height * width;
    for (std::size_t k = 0; k < static_cast<std::size_t>(height) * width; ++k) dxp[k] = 0.f;
    for (int i = 0; i < OH; ++i)
      for (int j = 0; j < OW; ++j) {
        const std::size_t top = static_cast<std::size_t>(2 * i) * width + 2 * j;
        const float v[4] = {xp[top], xp[top + 1], xp[top + width], xp[top + width + 1]};
        const int a = window_argmax(v);
        dxp[top + static_cast<std::size_t>(a / 2) * width + a % 2] = dyp[static_cast<std::size_t>(i) * OW + j];
      }
  }
}

}  // namespace mnist::twin
