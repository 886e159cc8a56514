// The model kinds and their sizes (include/mnist/model/model.h): from a configuration, back to the
// options that build them, and in words.
#include "mnist/model/model.h"

#include <stdexcept>

#include "mnist/data/idx.h"

namespace mnist {
namespace {

std::string joined(const std::vector<int>& numbers, const char* separator) {
  std::string text;
  for (std::size_t i = 0; i < numbers.size(); ++i) text += (i ? separator : "") + std::to_string(numbers[i]);
  return text;
}

// The CNN of these sizes when it is one `mnist train --model cnn` builds (1×28×28 in, 10 out).
CnnShape trainable_cnn(const std::vector<int>& sizes) {
  CnnShape shape;
  try {
    shape = CnnShape::from_sizes(sizes);
  } catch (const std::invalid_argument& error) {
    throw ConfigError(std::string("not a CNN this build trains: ") + error.what());
  }
  if (shape.in_channels != 1 || shape.height != kImageRows || shape.width != kImageCols || shape.classes != kClasses)
    throw ConfigError("not a CNN this build trains: " + describe_model(ModelKind::kCnn, sizes));
  return shape;
}

}  // namespace

const char* model_name(ModelKind kind) { return kind == ModelKind::kCnn ? "CNN" : "MLP"; }

ModelKind model_kind(const TrainConfig& config) { return config.model == "cnn" ? ModelKind::kCnn : ModelKind::kMlp; }

MlpShape mlp_shape(const TrainConfig& config) { return MlpShape(kPixels, config.hidden, kClasses); }

CnnShape cnn_shape(const TrainConfig& config) {
  CnnShape shape;  // 1×28×28 in, 10 classes out
  shape.channels = {{config.channels.at(0), config.channels.at(1)}};
  shape.kernel = config.kernel;
  shape.hidden = config.hidden.at(0);
  shape.validate();
  return shape;
}

std::vector<int> model_sizes(const TrainConfig& config) {
  return model_kind(config) == ModelKind::kCnn ? cnn_shape(config).sizes() : mlp_shape(config).sizes;
}

void set_model(TrainConfig& config, ModelKind kind, const std::vector<int>& sizes) {
  if (kind == ModelKind::kCnn) {
    const CnnShape shape = trainable_cnn(sizes);
    config.model = "cnn";
    config.channels = {shape.channels[0], shape.channels[1]};
    config.kernel = shape.kernel;
    config.hidden = {shape.hidden};
    return;
  }
  // 784-10 (no hidden layer) too: the checkpoint reader accepts it and CpuMlp runs it.
  if (sizes.size() < 2 || sizes.front() != kPixels || sizes.back() != kClasses)
    throw ConfigError("not an MLP this build trains: " + describe_model(kind, sizes));
  config.model = "mlp";
  config.hidden.assign(sizes.begin() + 1, sizes.end() - 1);
}

std::string model_options(ModelKind kind, const std::vector<int>& sizes) {
  if (kind == ModelKind::kCnn && sizes.size() == std::size_t(CnnShape::kSizes))
    return "--model cnn --channels " + std::to_string(sizes[3]) + "," + std::to_string(sizes[4]) + " --kernel " +
           std::to_string(sizes[5]) + " --hidden " + std::to_string(sizes[6]);
  if (kind == ModelKind::kMlp && sizes.size() >= 3)
    return "--model mlp --hidden " + joined(std::vector<int>(sizes.begin() + 1, sizes.end() - 1), ",");
  return "(sizes " + joined(sizes, ",") + ")";
}

std::string describe_model(ModelKind kind, const std::vector<int>& sizes) {
  return kind == ModelKind::kCnn ? "CNN " + describe_cnn_sizes(sizes) : format_sizes(sizes) + " MLP";
}

}  // namespace mnist
