// x[i, k] = images[indices[i], k] / 255     y[i] = labels[indices[i]]     ++*step (training)
// (true IEEE division on both sides, so GPU and CPU batches are bit-identical)
#include <cstdint>

#include "mnist/core/check.h"
#include "mnist/core/launch.h"
#include "mnist/ops/gather.h"

namespace mnist {
namespace {

// nvcc divides with IEEE rounding unless built with fast math (-prec-div=true is the default).
__device__ __forceinline__ float to_unit(unsigned char p) { return static_cast<float>(p) / 255.0f; }

// The labels, and the step counter by the grid's first thread (nothing else in the launch reads it).
__device__ __forceinline__ void gather_labels(const std::uint8_t* labels, const std::int32_t* indices, int count,
                                              std::uint8_t* y, std::int64_t* step) {
  if (step != nullptr && blockIdx.x == 0 && threadIdx.x == 0) ++*step;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = labels[indices[i]];
}

// pixels % 4 == 0, images 4-byte and x 16-byte aligned: four pixels per thread (uchar4 in, float4 out).
__global__ void gather_vec4(const uchar4* images, const std::uint8_t* labels, const std::int32_t* indices, int count,
                            int pixels4, float4* x, std::uint8_t* y, std::int64_t* step) {
  gather_labels(labels, indices, count, y, step);
  const std::int64_t groups = static_cast<std::int64_t>(count) * pixels4;
  for (std::int64_t g = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = g / pixels4;
    const std::int64_t k4 = g - row * pixels4;
    const uchar4 p = images[static_cast<std::int64_t>(indices[row]) * pixels4 + k4];
    x[g] = make_float4(to_unit(p.x), to_unit(p.y), to_unit(p.z), to_unit(p.w));
  }
}

// Any shape or alignment: one output element per thread.
__global__ void gather_scalar(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices,
                              int count, int pixels, float* x, std::uint8_t* y, std::int64_t* step) {
  gather_labels(labels, indices, count, y, step);
  const std::int64_t n = static_cast<std::int64_t>(count) * pixels;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = e / pixels;
    const std::int64_t k = e - row * pixels;
    x[e] = to_unit(images[static_cast<std::int64_t>(indices[row]) * pixels + k]);
  }
}

}  // namespace

namespace gpu {

void gather_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices, int count,
                  int pixels, float* x, std::uint8_t* y, cudaStream_t stream, std::int64_t* step) {
  if (count <= 0 && step == nullptr) return;
  if (count < 0) count = 0;
  if (pixels < 0) pixels = 0;
  const bool vec = pixels % 4 == 0 && reinterpret_cast<std::uintptr_t>(images) % 4 == 0 &&
                   reinterpret_cast<std::uintptr_t>(x) % 16 == 0;
  const std::int64_t per_thread = vec ? 4 : 1;
  const std::int64_t work = static_cast<std::int64_t>(count) * pixels / per_thread;
  const int blocks = grid_blocks(work > count ? work : count);
  if (vec) {
    gather_vec4<<<blocks, kBlockThreads, 0, stream>>>(reinterpret_cast<const uchar4*>(images), labels, indices, count,
                                                 pixels / 4, reinterpret_cast<float4*>(x), y, step);
  } else {
    gather_scalar<<<blocks, kBlockThreads, 0, stream>>>(images, labels, indices, count, pixels, x, y, step);
  }
  MNIST_CHECK_LAUNCH();
}

}  // namespace gpu
}  // namespace mnist
