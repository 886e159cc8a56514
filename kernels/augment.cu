// x[i, (u, v)] = bilinear(image / 255, c + R(-θ)·((u, v) - c - t) / s + α·G_σ∗n(u, v))   y[i] = label
// One block per image: the noise planes and their row-smoothed copy live in shared memory.
#include <cuda/atomic>

#include <cstdint>

#include "mnist/core/check.h"
#include "mnist/core/launch.h"
#include "mnist/ops/augment.h"

namespace mnist {
namespace {

constexpr int kMaxBlocks = 1024;  // one block an image, grid-stride over images beyond this

__global__ void gather_augmented(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices,
                                 int count, AugmentParams p, float* x, std::uint8_t* y, std::int64_t* step,
                                 gpu::AugmentScratch* scratch) {
  __shared__ float noise[2 * kPixels];
  __shared__ float smoothed_rows[2 * kPixels];
  const std::uint64_t s = static_cast<std::uint64_t>(*step) + 1;  // the step this batch is for
  for (int row = blockIdx.x; row < count; row += gridDim.x) {
    const std::uint8_t* image = images + static_cast<std::int64_t>(indices[row]) * kPixels;
    const ImageWarp warp = draw_warp(p, s, static_cast<std::uint64_t>(row));
    if (p.elastic) {
      for (int b = threadIdx.x; b < kElasticNoiseBlocks; b += blockDim.x) elastic_noise_block(p, s, row, b, noise);
      __syncthreads();
      for (int k = threadIdx.x; k < 2 * kPixels; k += blockDim.x)
        smoothed_rows[k] = blur_at(p, noise + (k / kPixels) * kPixels, k % kPixels, false);
      __syncthreads();
    }
    for (int k = threadIdx.x; k < kPixels; k += blockDim.x) {
      float ex = 0.0f, ey = 0.0f;
      if (p.elastic) {
        ex = p.alpha * blur_at(p, smoothed_rows, k, true);
        ey = p.alpha * blur_at(p, smoothed_rows + kPixels, k, true);
      }
      x[static_cast<std::int64_t>(row) * kPixels + k] = warp_pixel(image, warp, k % kImageCols, k / kImageCols, ex, ey);
    }
    if (threadIdx.x == 0) y[row] = labels[indices[row]];
    __syncthreads();  // the planes are rewritten for the next image
  }
  // Every block has read *step (above); the last one to arrive advances it and resets the ticket.
  __syncthreads();
  if (threadIdx.x != 0) return;
  cuda::atomic_ref<unsigned int, cuda::thread_scope_device> done(scratch->blocks_done);
  if (done.fetch_add(1, cuda::memory_order_acq_rel) != gridDim.x - 1) return;
  *step = static_cast<std::int64_t>(s);
  done.store(0, cuda::memory_order_relaxed);
}

}  // namespace

namespace gpu {

void gather_augmented_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices,
                            int count, const AugmentParams& params, float* x, std::uint8_t* y, std::int64_t* step,
                            AugmentScratch* scratch, cudaStream_t stream) {
  if (count < 0) count = 0;
  const int blocks = count < 1 ? 1 : count < kMaxBlocks ? count : kMaxBlocks;
  gather_augmented<<<blocks, kBlockThreads, 0, stream>>>(images, labels, indices, count, params, x, y, step, scratch);
  MNIST_CHECK_LAUNCH();
}

}  // namespace gpu
}  // namespace mnist
