// CPU twin of kernels/augment.cu: per image, its affine warp and (elastic) smoothed displacement
//   x[i, (u, v)] = bilinear(image / 255, c + R(-θ)·((u, v) - c - t) / s + α·G_σ∗n(u, v))
// through the same shared functions (ops/augment.h) in the same order as the kernel.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mnist/ops/augment.h"

namespace mnist::twin {

void warp_image(const std::uint8_t* image, const ImageWarp& warp, const float* ex, const float* ey, float* out) {
  for (int k = 0; k < kPixels; ++k)
    out[k] = warp_pixel(image, warp, k % kImageCols, k / kImageCols, ex ? ex[k] : 0.0f, ey ? ey[k] : 0.0f);
}

// The kernel's blur_at for every pixel at once, tap by tap: each output still adds its taps in the
// order t = -radius..radius from 0, so the sums are blur_at's to the bit, but the loops over x run
// along memory and vectorize.
void elastic_displacement(const AugmentParams& params, std::uint64_t step, std::uint64_t row, float* out) {
  float noise[2 * kPixels], smoothed_rows[2 * kPixels];
  for (int b = 0; b < kElasticNoiseBlocks; ++b) elastic_noise_block(params, step, row, b, noise);
  const int r = params.radius;
  for (int plane = 0; plane < 2; ++plane) {
    const float* in = noise + plane * kPixels;
    float* mid = smoothed_rows + plane * kPixels;
    float* result = out + plane * kPixels;
    for (int k = 0; k < kPixels; ++k) mid[k] = 0.0f;
    for (int t = -r; t <= r; ++t) {
      const float w = params.weights[t < 0 ? -t : t];
      const int x_first = t < 0 ? -t : 0, x_end = t > 0 ? kImageCols - t : kImageCols;
      for (int y = 0; y < kImageRows; ++y)
        for (int x = x_first; x < x_end; ++x) mid[y * kImageCols + x] += w * in[y * kImageCols + x + t];
    }
    for (int k = 0; k < kPixels; ++k) result[k] = 0.0f;
    for (int t = -r; t <= r; ++t) {
      const float w = params.weights[t < 0 ? -t : t];
      const int y_first = t < 0 ? -t : 0, y_end = t > 0 ? kImageRows - t : kImageRows;
      for (int y = y_first; y < y_end; ++y)
        for (int x = 0; x < kImageCols; ++x) result[y * kImageCols + x] += w * mid[(y + t) * kImageCols + x];
    }
    for (int k = 0; k < kPixels; ++k) result[k] = params.alpha * result[k];
  }
}

void gather_augmented_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices,
                            int count, const AugmentParams& params, float* x, std::uint8_t* y, std::int64_t* step) {
  const std::uint64_t s = static_cast<std::uint64_t>(++*step);
  std::vector<float> displacement(2 * kPixels);
  for (int row = 0; row < count; ++row) {
    const std::uint8_t* image = images + static_cast<std::size_t>(indices[row]) * kPixels;
    const ImageWarp warp = draw_warp(params, s, static_cast<std::uint64_t>(row));
    const float* ex = nullptr;
    const float* ey = nullptr;
    if (params.elastic) {
      elastic_displacement(params, s, static_cast<std::uint64_t>(row), displacement.data());
      ex = displacement.data();
      ey = displacement.data() + kPixels;
    }
    warp_image(image, warp, ex, ey, x + static_cast<std::size_t>(row) * kPixels);
    y[row] = labels[indices[row]];
  }
}

}  // namespace mnist::twin
