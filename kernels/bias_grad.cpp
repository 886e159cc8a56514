// CPU twin of kernels/bias_grad.cu: db[c] = sum_r dz[r, c], each column summed in row order in
// double and rounded once to float (a reference more accurate than any float order).
#include <cstddef>
#include <vector>

#include "mnist/ops/bias_grad.h"

namespace mnist::twin {

void bias_grad(const float* dz, float* db, int rows, int cols) {
  if (cols <= 0) return;
  std::vector<double> sum(static_cast<std::size_t>(cols), 0.0);
  for (int r = 0; r < rows; ++r)  // row-major walk: the inner loop reads one row contiguously
    for (int c = 0; c < cols; ++c) sum[c] += dz[static_cast<std::size_t>(r) * cols + c];
  for (int c = 0; c < cols; ++c) db[c] = static_cast<float>(sum[c]);
}

}  // namespace mnist::twin
