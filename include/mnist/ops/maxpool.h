#pragma once
// 2×2 max pooling with stride 2 over NCHW maps [N, C, H, W] -> [N, C, H/2, W/2] (H/2, W/2 rounded
// down, as PyTorch's MaxPool2d(2): an odd last row or column is dropped):
//   forward   y[n,c,i,j] = x[n,c, 2i+a*, 2j+b*]     (a*, b*) = argmax over the window (a, b) in {0,1}²
//   backward  dx[n,c,2i+a,2j+b] = dy[n,c,i,j] where (a, b) = (a*, b*), else 0 (and 0 on a dropped row/column)
// The argmax is the FIRST maximum in row-major window order (top-left, top-right, bottom-left,
// bottom-right): a tie sends the whole gradient to one element, the earliest. A NaN counts as
// larger than any number (the first NaN wins), so a diverged activation propagates as in PyTorch
// instead of being hidden. The backward pass recomputes the argmax from x (no index buffer).
//
// GPU: a custom kernel rather than cudnnPoolingForward/Backward. cuDNN does not document which
// element of a tied window gets the gradient, and its CUDNN_POOLING_MAX backward may use atomics
// (only CUDNN_POOLING_MAX_DETERMINISTIC avoids them); the kernel here has the twin's exact rule, so
// the GPU matches the CPU bit for bit on any input, ties and NaNs included, needs no handle or
// descriptors, and is deterministic by construction (each thread writes its own outputs, no
// atomics). The operation is a pure memory copy with compares: nothing for cuDNN to speed up.
#include <cuda_runtime_api.h>

namespace mnist {
namespace twin {
// Sizes >= 0; a map smaller than 2×2 gives an empty y (and an all-zero dx).
void maxpool2x2_forward(const float* x, float* y, int batch, int channels, int height, int width);
void maxpool2x2_backward(const float* x, const float* dy, float* dx, int batch, int channels, int height, int width);
}  // namespace twin
namespace gpu {
// Device pointers; y and dx are written, never read, and must not alias the inputs.
void maxpool2x2_forward(const float* x, float* y, int batch, int channels, int height, int width,
                        cudaStream_t stream);
void maxpool2x2_backward(const float* x, const float* dy, float* dx, int batch, int channels, int height,
                         int width, cudaStream_t stream);
}  // namespace gpu
}  // namespace mnist
