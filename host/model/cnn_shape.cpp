// CnnShape (include/mnist/model/cnn_shape.h): the CNN's sizes and where each layer's parameters
// lie in the flat buffer. Apart from the model (host/model/cnn.cpp) so that the checkpoint reader,
// which needs only the layout, builds without CUDA headers and links without the CPU model and
// its BLAS (tests/fuzz builds it alone).
#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "mnist/model/cnn_shape.h"

namespace mnist {

void CnnShape::validate() const {
  const bool sizes_ok = in_channels >= 1 && height >= 1 && width >= 1 && channels[0] >= 1 && channels[1] >= 1 &&
                        kernel >= 1 && kernel % 2 == 1 && hidden >= 1 && classes >= 1;
  // With an odd kernel and pad k/2 a convolution keeps the map's size, so only pooling shrinks it.
  if (!sizes_ok || height / 4 < 1 || width / 4 < 1)
    throw std::invalid_argument("CnnShape: bad shape (input " + std::to_string(in_channels) + "x" +
                                std::to_string(height) + "x" + std::to_string(width) + ", channels " +
                                std::to_string(channels[0]) + "," + std::to_string(channels[1]) + ", kernel " +
                                std::to_string(kernel) + ", hidden " + std::to_string(hidden) + ", classes " +
                                std::to_string(classes) +
                                "): sizes must be at least 1, the kernel odd and the image at least 4x4");
}

std::vector<int> CnnShape::sizes() const {
  return {in_channels, height, width, channels[0], channels[1], kernel, hidden, classes};
}

CnnShape CnnShape::from_sizes(const std::vector<int>& sizes) {
  if (sizes.size() != std::size_t(kSizes))
    throw std::invalid_argument("CnnShape: " + std::to_string(sizes.size()) + " sizes, not " +
                                std::to_string(kSizes));
  CnnShape shape;
  shape.in_channels = sizes[0];
  shape.height = sizes[1];
  shape.width = sizes[2];
  shape.channels = {{sizes[3], sizes[4]}};
  shape.kernel = sizes[5];
  shape.hidden = sizes[6];
  shape.classes = sizes[7];
  shape.validate();
  return shape;
}

std::size_t CnnShape::largest_conv_tensor() const {
  std::size_t floats = 1;
  for (int l = 0; l < 2; ++l) floats = std::max({floats, conv(l, 1).x_size(), conv(l, 1).y_size()});
  return floats;
}

int CnnShape::cudnn_batch_limit() const {
  constexpr std::size_t kMaxElements = 2147483647;  // 2^31 - 1
  return static_cast<int>(kMaxElements / largest_conv_tensor());
}

Conv2dShape CnnShape::conv(int l, int batch) const {
  Conv2dShape s;
  s.batch = batch;
  s.in_channels = l == 0 ? in_channels : channels[0];
  s.height = height;
  s.width = width;
  if (l == 1) {  // conv2 reads conv1's pooled output
    const Conv2dShape first = conv(0, batch);
    s.height = first.out_height() / 2;
    s.width = first.out_width() / 2;
  }
  s.out_channels = channels[l];
  s.kernel = kernel;
  s.pad = pad();
  return s;
}

int CnnShape::fan_in(int layer) const {
  switch (layer) {
    case 0: return in_channels * kernel * kernel;
    case 1: return channels[0] * kernel * kernel;
    case 2: return flat();
    default: return hidden;
  }
}

std::size_t CnnShape::weight_size(int layer) const {
  switch (layer) {
    case 0:
    case 1: return conv(layer, 1).w_size();
    case 2: return std::size_t(flat()) * hidden;
    default: return std::size_t(hidden) * classes;
  }
}

std::size_t CnnShape::bias_size(int layer) const {
  switch (layer) {
    case 0:
    case 1: return std::size_t(channels[layer]);
    case 2: return std::size_t(hidden);
    default: return std::size_t(classes);
  }
}

std::size_t CnnShape::weight_offset(int layer) const {
  std::size_t offset = 0;
  for (int l = 0; l < layer; ++l) offset += weight_size(l) + bias_size(l);
  return offset;
}

}  // namespace mnist
