// CPU twin of kernels/conv2d.cu (formulas in include/mnist/ops/conv2d.h), NCHW, stride 1.
// Direct loops. Each output is a sum in double of exact float × float products, rounded once to
// float. The innermost loops run along an image row, so they read and write contiguous memory.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "mnist/ops/conv2d.h"

namespace mnist::twin {
namespace {

// The output positions o in [0, out) whose input position o + u - pad lies in [0, in): the
// rest of a kernel offset u reads padding (zeros) and is skipped.
struct Range {
  int lo, hi;
};
Range valid_outputs(int u, int pad, int in, int out) { return {std::max(0, pad - u), std::min(out, in + pad - u)}; }

std::size_t plane(int n, int c, int channels, int height, int width) {
  return (static_cast<std::size_t>(n) * channels + c) * height * width;
}

}  // namespace

void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dShape& s) {
  validate(s);
  const int H = s.height, W = s.width, OH = s.out_height(), OW = s.out_width(), K = s.kernel, pad = s.pad;
  std::vector<double> acc(static_cast<std::size_t>(OH) * OW);
  for (int n = 0; n < s.batch; ++n) {
    for (int o = 0; o < s.out_channels; ++o) {
      std::fill(acc.begin(), acc.end(), b ? static_cast<double>(b[o]) : 0.0);
      for (int c = 0; c < s.in_channels; ++c) {
        const float* xp = x + plane(n, c, s.in_channels, H, W);
        for (int u = 0; u < K; ++u) {
          const Range rows = valid_outputs(u, pad, H, OH);
          for (int v = 0; v < K; ++v) {
            const Range cols = valid_outputs(v, pad, W, OW);
            const double wv = w[((static_cast<std::size_t>(o) * s.in_channels + c) * K + u) * K + v];
            for (int i = rows.lo; i < rows.hi; ++i) {
              const float* xrow = xp + static_cast<std::size_t>(i + u - pad) * W;
              double* arow = acc.data() + static_cast<std::size_t>(i) * OW;
              for (int j = cols.lo; j < cols.hi; ++j) arow[j] += wv * xrow[j + v - pad];
            }
          }
        }
      }
      float* yp = y + plane(n, o, s.out_channels, OH, OW);
      for (std::size_t k = 0; k < acc.size(); ++k) yp[k] = static_cast<float>(acc[k]);
    }
  }
}

// The transpose of the forward pass: each output y[n,o,i,j] sends dy[n,o,i,j]·w[o,c,u,v] back to
// the input x[n,c,i+u-pad,j+v-pad] it read, with the same index map and the same skipped padding.
void conv2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dShape& s) {
  validate(s);
  const int H = s.height, W = s.width, OH = s.out_height(), OW = s.out_width(), K = s.kernel, pad = s.pad;
  std::vector<double> acc(static_cast<std::size_t>(H) * W);
  for (int n = 0; n < s.batch; ++n) {
    for (int c = 0; c < s.in_channels; ++c) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int o = 0; o < s.out_channels; ++o) {
        const float* dyp = dy + plane(n, o, s.out_channels, OH, OW);
        for (int u = 0; u < K; ++u) {
          const Range rows = valid_outputs(u, pad, H, OH);
          for (int v = 0; v < K; ++v) {
            const Range cols = valid_outputs(v, pad, W, OW);
            const double wv = w[((static_cast<std::size_t>(o) * s.in_channels + c) * K + u) * K + v];
            for (int i = rows.lo; i < rows.hi; ++i) {
              const float* dyrow = dyp + static_cast<std::size_t>(i) * OW;
              double* arow = acc.data() + static_cast<std::size_t>(i + u - pad) * W;
              for (int j = cols.lo; j < cols.hi; ++j) arow[j + v - pad] += wv * dyrow[j];
            }
          }
        }
      }
      float* dxp = dx + plane(n, c, s.in_channels, H, W);
      for (std::size_t k = 0; k < acc.size(); ++k) dxp[k] = static_cast<float>(acc[k]);
    }
  }
}

void conv2d_backward_filter(const float* x, const float* dy, float* dw, const Conv2dShape& s) {
  validate(s);
  const int H = s.height, W = s.width, OH = s.out_height(), OW = s.out_width(), K = s.kernel, pad = s.pad;
  for (int o = 0; o < s.out_channels; ++o) {
    for (int c = 0; c < s.in_channels; ++c) {
      for (int u = 0; u < K; ++u) {
        const Range rows = valid_outputs(u, pad, H, OH);
        for (int v = 0; v < K; ++v) {
          const Range cols = valid_outputs(v, pad, W, OW);
          double acc = 0.0;
          for (int n = 0; n < s.batch; ++n) {
            const float* xp = x + plane(n, c, s.in_channels, H, W);
            const float* dyp = dy + plane(n, o, s.out_channels, OH, OW);
            for (int i = rows.lo; i < rows.hi; ++i) {
              const float* xrow = xp + static_cast<std::size_t>(i + u - pad) * W;
              const float* dyrow = dyp + static_cast<std::size_t>(i) * OW;
              for (int j = cols.lo; j < cols.hi; ++j) acc += static_cast<double>(dyrow[j]) * xrow[j + v - pad];
            }
          }
          dw[((static_cast<std::size_t>(o) * s.in_channels + c) * K + u) * K + v] = static_cast<float>(acc);
        }
      }
    }
  }
}

void conv2d_backward_bias(const float* dy, float* db, const Conv2dShape& s) {
  validate(s);
  const std::size_t plane_size = static_cast<std::size_t>(s.out_height()) * s.out_width();
  for (int o = 0; o < s.out_channels; ++o) {
    double acc = 0.0;
    for (int n = 0; n < s.batch; ++n) {
      const float* dyp = dy + plane(n, o, s.out_channels, s.out_height(), s.out_width());
      for (std::size_t k = 0; k < plane_size; ++k) acc += dyp[k];
    }
    db[o] = static_cast<float>(acc);
  }
}

}  // namespace mnist::twin
