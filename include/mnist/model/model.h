#pragma once
// The two models of `mnist train --model` and how the rest of the program names one: its kind
// and a list of sizes that, with the kind, fixes the place of every parameter in the flat buffer.
//   MLP (kind 1, mlp.h):  sizes = 784, hidden..., 10                         (MlpShape::sizes)
//   CNN (kind 2, cnn.h):  sizes = in_channels, height, width, conv1 filters, conv2 filters,
//                         kernel, dense width, classes = 1, 28, 28, 32, 64, 5, 1024, 10 by default
//                                                                            (CnnShape::sizes)
// Checkpoints store exactly these (checkpoint.h), so the numbers of the kind are part of the
// file format.
#include <cstdint>
#include <string>
#include <vector>

#include "mnist/core/config.h"
#include "mnist/model/cnn_shape.h"
#include "mnist/model/mlp_shape.h"

namespace mnist {

enum class ModelKind : std::uint32_t { kMlp = 1, kCnn = 2 };

// Everything a checkpoint must hold to continue training exactly where it stopped.
struct ModelState {
  ModelKind kind = ModelKind::kMlp;
  std::vector<int> sizes;  // MLP: 784, hidden..., 10; CNN: CnnShape::sizes (below)
  std::vector<float> params, adam_m, adam_v;
  std::int64_t step = 0;  // optimizer steps taken so far
};

const char* model_name(ModelKind kind);  // "MLP", "CNN"

// The model a (validated) configuration asks for.
ModelKind model_kind(const TrainConfig& config);
std::vector<int> model_sizes(const TrainConfig& config);
MlpShape mlp_shape(const TrainConfig& config);  // 784 → --hidden → 10
CnnShape cnn_shape(const TrainConfig& config);  // --channels, --kernel, --hidden (one width) on 1×28×28

// The options that make `mnist train` build this model again, e.g. for evaluate, or for the
// advice of a mismatched --resume: the inverse of model_kind/model_sizes for what --model
// trains. Throws ConfigError when the sizes are not such a model.
void set_model(TrainConfig& config, ModelKind kind, const std::vector<int>& sizes);
// "--model mlp --hidden 512,512" (MLP), "--model cnn --channels 32,64 --kernel 5 --hidden 1024" (CNN).
std::string model_options(ModelKind kind, const std::vector<int>& sizes);
// A model's shape as ModelState names it.
inline ModelKind kind_of(const MlpShape&) { return ModelKind::kMlp; }
inline ModelKind kind_of(const CnnShape&) { return ModelKind::kCnn; }
inline std::vector<int> sizes_of(const MlpShape& shape) { return shape.sizes; }
inline std::vector<int> sizes_of(const CnnShape& shape) { return shape.sizes(); }

// "784-512-512-10"
std::string format_sizes(const std::vector<int>& sizes);
// A CNN's sizes in words: "input 1x28x28, conv 5x5 32-64, dense 1024, 10 classes".
std::string describe_cnn_sizes(const std::vector<int>& sizes);
// "784-512-512-10 MLP", "CNN input 1x28x28, conv 5x5 32-64, dense 1024, 10 classes".
std::string describe_model(ModelKind kind, const std::vector<int>& sizes);

}  // namespace mnist
