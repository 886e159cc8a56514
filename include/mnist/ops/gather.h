#pragma once
// Batch assembly from the resident uint8 dataset through a (shuffled) index list:
//   x[i, k] = images[indices[i], k] / 255     y[i] = labels[indices[i]]     ++*step (training)
// A training step begins with its batch, so the gather also advances the step counter: on the
// device it is one launch fewer per step, and a captured graph still replays a fresh step.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mnist {
namespace twin {
void gather_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices, int count,
                  int pixels, float* x, std::uint8_t* y, std::int64_t* step = nullptr);
}
namespace gpu {
// `step`: the device step counter, advanced once by the launch (null: evaluation, no step).
void gather_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices, int count,
                  int pixels, float* x, std::uint8_t* y, cudaStream_t stream, std::int64_t* step = nullptr);
}
}  // namespace mnist
