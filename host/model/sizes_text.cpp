// A model's sizes in words, for messages and model descriptions (model.h). Apart from model.cpp:
// the checkpoint reader needs these and nothing else of the model layer.
#include <string>
#include <vector>

#include "mnist/model/cnn_shape.h"
#include "mnist/model/model.h"

namespace mnist {

std::string describe_cnn_sizes(const std::vector<int>& s) {
  if (s.size() != std::size_t(CnnShape::kSizes)) return format_sizes(s);
  return "input " + std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]) + ", conv " +
         std::to_string(s[5]) + "x" + std::to_string(s[5]) + " " + std::to_string(s[3]) + "-" + std::to_string(s[4]) +
         ", dense " + std::to_string(s[6]) + ", " + std::to_string(s[7]) + " classes";
}

std::string format_sizes(const std::vector<int>& sizes) {
  std::string text;
  for (std::size_t i = 0; i < sizes.size(); ++i) text += (i ? "-" : "") + std::to_string(sizes[i]);
  return text;
}

}  // namespace mnist
