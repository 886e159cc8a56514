#pragma once
// Batch gather with data augmentation, for training batches only:
//   x[i, (u, v)] = bilinear(images[indices[i]] / 255, c + R(-θ)·((u, v) - c - t) / s + α·G_σ∗n(u, v))
//   y[i] = labels[indices[i]]     ++*step
// with c = (13.5, 13.5) the image centre, and per image a shift t ∈ [-shift, shift]², a rotation
// θ ∈ [-rotate, rotate], a scale s ∈ [1 - scale, 1 + scale] and (elastic) a displacement field: two
// planes n of uniform noise in [-1, 1) smoothed by a Gaussian of σ pixels and scaled by α (Simard
// et al. 2003). Pixels outside the image read as 0. All draws come from Philox keyed by (seed, step,
// row in the batch), so a run and its resume see the same images on both devices.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#include "mnist/core/hd.h"
#include "mnist/core/mnist.h"
#include "mnist/core/philox.h"

namespace mnist {

constexpr int kMaxElasticRadius = 30;          // taps of the Gaussian: ±ceil(3σ), σ ≤ 10
constexpr std::uint32_t kAugmentStream = 0x3000u;  // Philox stream of the per-image affine draws
constexpr std::uint32_t kElasticStream = 0x3001u;  // Philox stream of the displacement noise

// What the kernel and its twin need, by value (a kernel parameter of ~150 bytes).
struct AugmentParams {
  std::uint64_t seed = 0;
  float shift = 0.f;   // pixels
  float rotate = 0.f;  // radians
  float scale = 0.f;   // relative
  int elastic = 0;     // 0: affine only
  float alpha = 0.f;   // pixels per unit of smoothed noise
  int radius = 0;      // Gaussian taps -radius..radius
  float weights[kMaxElasticRadius + 1] = {};  // weights[|t|], summing to 1 over -radius..radius
};

// The params for the options (degrees, pixels); weights computed once here, in double.
inline AugmentParams make_augment_params(std::uint64_t seed, float shift, float rotate_degrees, float scale,
                                         bool elastic, float alpha, float sigma) {
  AugmentParams p;
  p.seed = seed;
  p.shift = shift;
  p.rotate = static_cast<float>(rotate_degrees * 3.14159265358979323846 / 180.0);
  p.scale = scale;
  p.elastic = elastic ? 1 : 0;
  if (!elastic) return p;
  p.alpha = alpha;
  p.radius = static_cast<int>(std::ceil(3.0 * sigma));
  if (p.radius > kMaxElasticRadius) p.radius = kMaxElasticRadius;
  double w[kMaxElasticRadius + 1], total = 0.0;
  for (int t = 0; t <= p.radius; ++t) {
    w[t] = std::exp(-0.5 * t * t / (double(sigma) * sigma));
    total += t == 0 ? w[t] : 2.0 * w[t];
  }
  for (int t = 0; t <= p.radius; ++t) p.weights[t] = static_cast<float>(w[t] / total);
  return p;
}

// A Philox word as a uniform float in [-1, 1) (24 bits; exact: k·2^-23 - 1).
MNIST_HD float symmetric_unit(std::uint32_t word) {
  return static_cast<float>(word >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

// One image's affine map, drawn from one Philox block.
struct ImageWarp {
  float cos_a = 1.f, sin_a = 0.f, inv_scale = 1.f, dx = 0.f, dy = 0.f;
};

MNIST_HD ImageWarp make_warp(float dx, float dy, float angle, float scale) {
  ImageWarp w;
  w.cos_a = cosf(angle);
  w.sin_a = sinf(angle);
  w.inv_scale = 1.0f / scale;
  w.dx = dx;
  w.dy = dy;
  return w;
}

MNIST_HD ImageWarp draw_warp(const AugmentParams& p, std::uint64_t step, std::uint64_t row) {
  const Philox4x32 r = philox_block(p.seed, step, kAugmentStream, row);
  return make_warp(p.shift * symmetric_unit(r.v[0]), p.shift * symmetric_unit(r.v[1]),
                   p.rotate * symmetric_unit(r.v[2]), 1.0f + p.scale * symmetric_unit(r.v[3]));
}

// Pixel (x, y) of a uint8 image as a float in [0, 1], 0 outside (the same division as the gather).
MNIST_HD float pixel_or_zero(const std::uint8_t* image, int x, int y) {
  if (x < 0 || x >= kImageCols || y < 0 || y >= kImageRows) return 0.0f;
  return static_cast<float>(image[y * kImageCols + x]) / 255.0f;
}

// Bilinear interpolation at (sx, sy) in pixel units (pixel centres at whole numbers). Whole
// coordinates read the pixel exactly; coordinates far outside are clamped first (all zeros there).
MNIST_HD float sample_bilinear(const std::uint8_t* image, float sx, float sy) {
  sx = fminf(fmaxf(sx, -2.0f), static_cast<float>(kImageCols + 1));
  sy = fminf(fmaxf(sy, -2.0f), static_cast<float>(kImageRows + 1));
  const float fx0 = floorf(sx), fy0 = floorf(sy);
  const int x0 = static_cast<int>(fx0), y0 = static_cast<int>(fy0);
  const float fx = sx - fx0, fy = sy - fy0;
  const float top = (1.0f - fx) * pixel_or_zero(image, x0, y0) + fx * pixel_or_zero(image, x0 + 1, y0);
  const float bottom = (1.0f - fx) * pixel_or_zero(image, x0, y0 + 1) + fx * pixel_or_zero(image, x0 + 1, y0 + 1);
  return (1.0f - fy) * top + fy * bottom;
}

// Output pixel (u, v): where it reads from in the source, plus the displacement (ex, ey).
MNIST_HD float warp_pixel(const std::uint8_t* image, const ImageWarp& w, int u, int v, float ex, float ey) {
  constexpr float c = 0.5f * (kImageCols - 1);
  const float px = static_cast<float>(u) - c - w.dx;
  const float py = static_cast<float>(v) - c - w.dy;
  const float sx = c + (w.cos_a * px + w.sin_a * py) * w.inv_scale + ex;
  const float sy = c + (w.cos_a * py - w.sin_a * px) * w.inv_scale + ey;
  return sample_bilinear(image, sx, sy);
}

// Noise of the displacement field: 2·kPixels values (x plane, then y plane) per image, four per
// Philox block; block b holds elements 4b .. 4b + 3.
constexpr int kElasticNoiseBlocks = 2 * kPixels / 4;
MNIST_HD void elastic_noise_block(const AugmentParams& p, std::uint64_t step, std::uint64_t row, int block,
                                  float* noise) {
  const Philox4x32 r = philox_block(p.seed, step, kElasticStream, row * kElasticNoiseBlocks + block);
  for (int j = 0; j < 4; ++j) noise[4 * block + j] = symmetric_unit(r.v[j]);
}

// The Gaussian along a row (along_column false) or a column of one 28×28 plane, at pixel k: taps
// t = -radius..radius in that order, those that fall outside the plane left out (they read 0).
MNIST_HD float blur_at(const AugmentParams& p, const float* plane, int k, bool along_column) {
  const int at = along_column ? k / kImageCols : k % kImageCols;
  const int size = along_column ? kImageRows : kImageCols;
  const int stride = along_column ? kImageCols : 1;
  const int first = at - p.radius < 0 ? -at : -p.radius;
  const int last = at + p.radius >= size ? size - 1 - at : p.radius;
  float sum = 0.0f;
  for (int t = first; t <= last; ++t) sum += p.weights[t < 0 ? -t : t] * plane[k + t * stride];
  return sum;
}

namespace twin {
// `step` (required): advanced first; the draws use the advanced value, as dropout does.
void gather_augmented_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices,
                            int count, const AugmentParams& params, float* x, std::uint8_t* y, std::int64_t* step);
// The displacement planes α·G_σ∗n of image `row` at `step`: x plane, then y plane (2·kPixels).
void elastic_displacement(const AugmentParams& params, std::uint64_t step, std::uint64_t row, float* out);
// One image through one warp and (elastic) displacement planes ex, ey of kPixels each (null: none).
void warp_image(const std::uint8_t* image, const ImageWarp& warp, const float* ex, const float* ey, float* out);
}  // namespace twin

namespace gpu {
// Scratch of a launch: a ticket counter, 0 between launches (the last block resets it).
struct AugmentScratch {
  unsigned int blocks_done;
};
// `step` (required): read by every block, advanced by the last one to finish, so the draws use
// the advanced value as the twin's do. `scratch`: zeroed device memory, one per stream.
void gather_augmented_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices,
                            int count, const AugmentParams& params, float* x, std::uint8_t* y, std::int64_t* step,
                            AugmentScratch* scratch, cudaStream_t stream);
}  // namespace gpu
}  // namespace mnist
