#pragma once
// The MLP's shape (mlp.h): its layer widths and where each parameter lies in the flat buffer.
#include <cstddef>
#include <vector>

namespace mnist {

struct MlpShape {
  std::vector<int> sizes;  // input, hidden..., classes

  MlpShape(int inputs, const std::vector<int>& hidden, int classes);
  int layers() const { return static_cast<int>(sizes.size()) - 1; }
  int in(int layer) const { return sizes[layer]; }
  int out(int layer) const { return sizes[layer + 1]; }
  bool is_hidden(int layer) const { return layer < layers() - 1; }
  std::size_t weight_offset(int layer) const;
  std::size_t bias_offset(int layer) const { return weight_offset(layer) + std::size_t(in(layer)) * out(layer); }
  std::size_t param_count() const { return weight_offset(layers()); }
  int max_width() const;
};

}  // namespace mnist
