// CPU twin of kernels/gather.cu:
//   x[i, k] = images[indices[i], k] / 255     y[i] = labels[indices[i]]     ++*step (training)
#include <cstddef>
#include <cstdint>

#include "mnist/ops/gather.h"

namespace mnist::twin {

void gather_batch(const std::uint8_t* images, const std::uint8_t* labels, const std::int32_t* indices, int count,
                  int pixels, float* x, std::uint8_t* y, std::int64_t* step) {
  if (step != nullptr) ++*step;
  for (int i = 0; i < count; ++i) {
    const std::size_t src = static_cast<std::size_t>(indices[i]) * pixels;
    for (int k = 0; k < pixels; ++k)
      x[static_cast<std::size_t>(i) * pixels + k] = static_cast<float>(images[src + k]) / 255.0f;  // true division
    y[i] = labels[indices[i]];
  }
}

}  // namespace mnist::twin
