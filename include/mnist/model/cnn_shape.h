#pragma once
// The CNN's shape (cnn.h): its sizes and where each parameter lies in the flat buffer. Apart
// from the model, so that the checkpoint reader needs no CUDA headers.
#include <array>
#include <cstddef>
#include <vector>

#include "mnist/ops/conv2d_shape.h"

namespace mnist {

struct CnnShape {
  int in_channels = 1;  // the input image: [in_channels, height, width]
  int height = 28;
  int width = 28;
  std::array<int, 2> channels{{32, 64}};  // filters of conv1 and conv2
  int kernel = 5;                         // k×k kernels, odd; pad k/2 keeps the image size ('same')
  int hidden = 1024;                      // units of dense1
  int classes = 10;

  static constexpr int kLayers = 4;        // conv1, conv2, dense1, dense2
  static constexpr int kDropoutLayer = 2;  // dense1: the layer of the dropout key
  static constexpr int kSizes = 8;         // the numbers of sizes()

  // The shape as a checkpoint stores it (model.h): in_channels, height, width, channels[0],
  // channels[1], kernel, hidden, classes. from_sizes is its inverse; it throws
  // std::invalid_argument unless there are kSizes numbers that validate().
  std::vector<int> sizes() const;
  static CnnShape from_sizes(const std::vector<int>& sizes);

  // Throws std::invalid_argument unless every size is at least 1, the kernel is odd and each
  // pooled map is at least 1×1.
  void validate() const;

  int pad() const { return kernel / 2; }
  int inputs() const { return in_channels * height * width; }  // floats per image
  // Convolution l (0 or 1) over `batch` images: its input is the image (l = 0) or the pooled
  // output of conv1 (l = 1).
  Conv2dShape conv(int l, int batch) const;
  int pooled_height(int l) const { return conv(l, 1).out_height() / 2; }
  int pooled_width(int l) const { return conv(l, 1).out_width() / 2; }
  int flat() const { return channels[1] * pooled_height(1) * pooled_width(1); }  // inputs of dense1
  // The floats of the largest convolution input or output of one image (conv1's output for
  // MNIST), and so the most images one cuDNN call may take: cuDNN limits a tensor to 2
  // Giga-elements (cudnnSetTensor4dDescriptor), (2^31 - 1) / that: 85,598 for the default 32-64
  // filters, 1,337 for 2048 filters in conv1.
  std::size_t largest_conv_tensor() const;
  int cudnn_batch_limit() const;

  bool is_conv(int layer) const { return layer < 2; }
  int fan_in(int layer) const;  // C_in·k·k for a convolution, in for a dense layer
  std::size_t weight_size(int layer) const;
  std::size_t bias_size(int layer) const;
  std::size_t weight_offset(int layer) const;
  std::size_t bias_offset(int layer) const { return weight_offset(layer) + weight_size(layer); }
  std::size_t param_count() const { return weight_offset(kLayers); }
};

}  // namespace mnist
