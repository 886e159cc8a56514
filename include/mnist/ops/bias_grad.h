#pragma once
// Bias gradient: db[c] = sum over rows r of dz[r, c] (column sums of a row-major matrix),
// summed in a fixed order (no atomics) so the result is the same run to run.
#include <cuda_runtime_api.h>

namespace mnist {
namespace twin {
void bias_grad(const float* dz, float* db, int rows, int cols);
}
namespace gpu {
void bias_grad(const float* dz, float* db, int rows, int cols, cudaStream_t stream);
}
}  // namespace mnist
