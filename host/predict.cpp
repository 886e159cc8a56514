// `mnist predict` (include/mnist/predict.h): the checkpoint's model (MLP or CNN) run forward on
// the CPU, one image at a time. A handful of images needs no GPU, and the CPU path is what CI
// checks.
#include "mnist/predict.h"

#include <cmath>
#include <cstdio>

#include "mnist/checkpoint.h"
#include "mnist/idx.h"
#include "mnist/image_io.h"
#include "mnist/cnn.h"
#include "mnist/mlp.h"
#include "mnist/model.h"
#include "mnist/ops/gather.h"
#include "mnist/printable.h"

namespace mnist {

namespace {

// Model: CpuMlp or CpuCnn, holding the checkpoint's parameters.
template <class Model>
int predict_files(Model& model, const std::vector<std::string>& files, const std::string& dataset) {
  int failures = 0;
  std::vector<float> x(kPixels);
  for (const std::string& file : files) {
    std::vector<std::uint8_t> pixels;
    try {
      pixels = read_digit_image(file);
    } catch (const ImageError& error) {
      std::fflush(stdout);  // keep the lines in order when both streams go to one terminal
      std::fprintf(stderr, "mnist: error: %s\n", error.what());
      ++failures;
      continue;
    }
    // The same scaling as training (x = pixel / 255), through the same function.
    const std::int32_t first = 0;
    std::uint8_t label = 0, unused_label = 0;
    ref::gather_batch(pixels.data(), &unused_label, &first, 1, kPixels, x.data(), &label);
    EvalTotals unused;
    std::int32_t digit = 0;
    model.evaluate_batch(x.data(), &label, 1, &unused, &digit);

    // Softmax of the logits, shifted by their maximum so exp() cannot overflow.
    const float* logits = model.logits();
    double largest = logits[0], sum = 0.0;
    for (int c = 1; c < kClasses; ++c) largest = std::fmax(largest, logits[c]);
    for (int c = 0; c < kClasses; ++c) sum += std::exp(double(logits[c]) - largest);
    const double p = std::exp(double(logits[digit]) - largest) / sum;
    const std::string name = class_name(dataset, digit);
    std::printf("%s: %d%s%s (p=%.3f)\n", printable(file).c_str(), digit, name.empty() ? "" : " ", name.c_str(), p);
  }
  return failures ? 1 : 0;
}

}  // namespace

int run_predict(const std::string& model_path, const std::vector<std::string>& files) {
  const Checkpoint checkpoint = read_checkpoint(model_path);
  const ModelState& state = checkpoint.state;
  // Seed, dropout and label smoothing do not matter: the weights are replaced, evaluation
  // never drops out, and the loss it computes on the way is not used. The reader has checked
  // that the sizes are a model's and the parameters fit them.
  TrainConfig config;  // only its model options: the shape, as `mnist evaluate` derives it
  set_model(config, state.kind, state.sizes);
  const std::string dataset = trained_dataset(checkpoint);
  if (state.kind == ModelKind::kCnn) {
    CpuCnn model(cnn_shape(config), 0, 0.f, 0.f, 1);
    model.params() = state.params;
    return predict_files(model, files, dataset);
  }
  CpuMlp model(mlp_shape(config), 0, 0.f, 0.f, 1);
  model.params() = state.params;
  return predict_files(model, files, dataset);
}

}  // namespace mnist
