#pragma once
// The shape of a 2-D convolution (conv2d.h), NCHW: apart from the op's header, which needs
// cuDNN's, so that code that only lays out a CNN's parameters (checkpoints) needs no CUDA.
#include <cstddef>
#include <stdexcept>
#include <string>

namespace mnist {

struct Conv2dShape {
  int batch = 1;
  int in_channels = 1;
  int height = 1;
  int width = 1;
  int out_channels = 1;
  int kernel = 1;  // k: the kernel is k × k
  int pad = 0;     // zero padding on each side; k/2 for 'same'

  int out_height() const { return height + 2 * pad - kernel + 1; }
  int out_width() const { return width + 2 * pad - kernel + 1; }
  std::size_t x_size() const { return static_cast<std::size_t>(batch) * in_channels * height * width; }
  std::size_t w_size() const { return static_cast<std::size_t>(out_channels) * in_channels * kernel * kernel; }
  std::size_t y_size() const { return static_cast<std::size_t>(batch) * out_channels * out_height() * out_width(); }
};

// Throws std::invalid_argument unless every size is at least 1 and 0 <= pad < kernel (a pad of
// k or more only adds outputs that see nothing but zeros).
inline void validate(const Conv2dShape& s) {
  if (s.batch < 1 || s.in_channels < 1 || s.height < 1 || s.width < 1 || s.out_channels < 1 || s.kernel < 1 ||
      s.pad < 0 || s.pad >= s.kernel || s.out_height() < 1 || s.out_width() < 1)
    throw std::invalid_argument(
        "conv2d: bad shape (batch " + std::to_string(s.batch) + ", channels " + std::to_string(s.in_channels) +
        " -> " + std::to_string(s.out_channels) + ", image " + std::to_string(s.height) + "x" +
        std::to_string(s.width) + ", kernel " + std::to_string(s.kernel) + ", pad " + std::to_string(s.pad) + ")");
}

}  // namespace mnist
