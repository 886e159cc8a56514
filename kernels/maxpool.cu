// 2×2 max pooling, stride 2, NCHW, on the GPU (include/mnist/ops/maxpool.h): forward and backward
// kernels with the CPU twin's exact argmax rule (first maximum in row-major window order, a NaN
// beating any number), so the two agree bit for bit. No atomics: every output element is written
// by exactly one thread, so the result is the same every run.
#include <cstddef>
#include <stdexcept>
#include <string>

#include "mnist/core/check.h"
#include "mnist/core/launch.h"
#include "mnist/ops/maxpool.h"

namespace mnist {
namespace {


// {0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right} of the first maximum.
__device__ __forceinline__ int window_argmax(float v0, float v1, float v2, float v3) {
  int best = 0;
  float m = v0;
  // a later element wins only if strictly larger, or if it is the first NaN
  if (v1 > m || (isnan(v1) && !isnan(m))) { best = 1; m = v1; }
  if (v2 > m || (isnan(v2) && !isnan(m))) { best = 2; m = v2; }
  if (v3 > m || (isnan(v3) && !isnan(m))) { best = 3; }
  return best;
}

// One thread per output y[p, i, j] (p = n·C + c): reads its 2×2 window.
__global__ void maxpool_forward_kernel(const float* __restrict__ x, float* __restrict__ y, std::size_t total,
                                       int height, int width, int out_h, int out_w) {
  for (std::size_t k = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t p = k / (static_cast<std::size_t>(out_h) * out_w);
    const int r = static_cast<int>(k % (static_cast<std::size_t>(out_h) * out_w));
    const int i = r / out_w, j = r % out_w;
    const float* top = x + (p * height + 2 * i) * width + 2 * j;
    const float v0 = top[0], v1 = top[1], v2 = top[width], v3 = top[width + 1];
    // selects, not an array indexed at run time, which nvcc puts in local memory (a stack frame)
    const int a = window_argmax(v0, v1, v2, v3);
    y[k] = a == 0 ? v0 : a == 1 ? v1 : a == 2 ? v2 : v3;
  }
}

// One thread per input element dx[p, h, w]: it recomputes its window's argmax and takes the
// window's dy if it is the argmax, else 0 (also 0 on a dropped odd row or column). Every dx is
// written, by one thread; the four threads of a window read the same x and dy (cached).
__global__ void maxpool_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                        float* __restrict__ dx, std::size_t total, int height, int width, int out_h,
                                        int out_w) {
  for (std::size_t k = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t p = k / (static_cast<std::size_t>(height) * width);
    const int r = static_cast<int>(k % (static_cast<std::size_t>(height) * width));
    const int h = r / width, w = r % width;
    const int i = h / 2, j = w / 2;
    float g = 0.f;
    if (i < out_h && j < out_w) {
      const float* top = x + (p * height + 2 * i) * width + 2 * j;
      const int a = window_argmax(top[0], top[1], top[width], top[width + 1]);
      if (a == (h % 2) * 2 + (w % 2)) g = dy[(p * out_h + i) * out_w + j];
    }
    dx[k] = g;
  }
}

void check_dims(const char* op, int batch, int channels, int height, int width) {
  if (batch < 0 || channels < 0 || height < 0 || width < 0)
    throw std::invalid_argument(std::string(op) + ": negative dimension (" + std::to_string(batch) + "x" +
                                std::to_string(channels) + "x" + std::to_string(height) + "x" +
                                std::to_string(width) + ")");
}

}  // namespace

namespace gpu {

void maxpool2x2_forward(const float* x, float* y, int batch, int channels, int height, int width,
                        cudaStream_t stream) {
  check_dims("gpu::maxpool2x2_forward", batch, channels, height, width);
  const int out_h = height / 2, out_w = width / 2;
  const std::size_t total = static_cast<std::size_t>(batch) * channels * out_h * out_w;
  if (total == 0) return;
  maxpool_forward_kernel<<<grid_blocks(std::int64_t(total)), kBlockThreads, 0, stream>>>(x, y, total, height, width,
                                                                                          out_h, out_w);
  MNIST_CHECK_LAUNCH();
}

void maxpool2x2_backward(const float* x, const float* dy, float* dx, int batch, int channels, int height, int width,
                         cudaStream_t stream) {
  check_dims("gpu::maxpool2x2_backward", batch, channels, height, width);
  const int out_h = height / 2, out_w = width / 2;
  const std::size_t total = static_cast<std::size_t>(batch) * channels * height * width;
  if (total == 0) return;
  maxpool_backward_kernel<<<grid_blocks(std::int64_t(total)), kBlockThreads, 0, stream>>>(x, dy, dx, total, height,
                                                                                           width, out_h, out_w);
  MNIST_CHECK_LAUNCH();
}

}  // namespace gpu
}  // namespace mnist
