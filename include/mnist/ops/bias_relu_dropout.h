#pragma once
// Fused bias + ReLU + inverted dropout, forward and backward (row-major [rows, cols]):
//   forward   y  = mask · relu(z + b) / (1 - p)        (relu optional: the output layer only adds b)
//   backward  dz = dy · mask / (1 - p) · [z + b > 0],  and where db is given db[c] = sum_r dz[r, c]
// The mask is recomputed from Philox keyed by (seed, step, layer, element index), never stored.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mnist {

struct DropoutKey {
  std::uint64_t seed = 0;
  std::uint32_t layer = 0;
  float p = 0.f;  // drop probability in [0, 1); 0 disables dropout (evaluation)
};

namespace twin {
void bias_relu_dropout_forward(const float* z, const float* bias, float* y, int rows, int cols, bool relu,
                               DropoutKey key, std::int64_t step);
// db: the layer's bias gradient (bias_grad of dz), or null.
void bias_relu_dropout_backward(const float* dy, const float* z, const float* bias, float* dz, int rows, int cols,
                                bool relu, DropoutKey key, std::int64_t step, float* db = nullptr);
}  // namespace twin

namespace gpu {
// `step` points to the device-side step counter (see adam.h), so a captured graph replays
// with a fresh mask each step. y may alias z; dz may alias dy. With db, one launch also sums the
// bias gradient (in its own fixed order: see tests/test_bias_relu_dropout.cu for the tolerance).
void bias_relu_dropout_forward(const float* z, const float* bias, float* y, int rows, int cols, bool relu,
                               DropoutKey key, const std::int64_t* step, cudaStream_t stream);
void bias_relu_dropout_backward(const float* dy, const float* z, const float* bias, float* dz, int rows, int cols,
                                bool relu, DropoutKey key, const std::int64_t* step, cudaStream_t stream,
                                float* db = nullptr);
}  // namespace gpu

}  // namespace mnist
