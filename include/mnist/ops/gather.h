#pragma once
// Batch assembly from the resident uint8 dataset through a (shuffled) index list:
//   x[i, k] = images[indices[i], k] / 255     y[i] = labels[indices[i]]
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mnist {
namespace ref {
void gather_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices, int count,
                  int pixels, float* x, std::uint8_t* y);
}
namespace gpu {
void gather_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices, int count,
                  int pixels, float* x, std::uint8_t* y, cudaStream_t stream);
}
}  // namespace mnist
