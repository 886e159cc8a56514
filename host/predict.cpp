// `mnist predict` (include/mnist/predict.h): each image prepared as MNIST's digits were, then the
// checkpoint's model (MLP or CNN) run forward on the CPU, one image at a time. A handful of
// images needs no GPU, and the CPU path is what CI checks.
#include "mnist/predict.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "mnist/checkpoint.h"
#include "mnist/cnn.h"
#include "mnist/idx.h"
#include "mnist/mlp.h"
#include "mnist/model.h"
#include "mnist/ops/gather.h"
#include "mnist/printable.h"

namespace mnist {

namespace {

// The 28×28 as text: two characters a pixel (a terminal cell is about twice as tall as wide),
// ten shades from blank to '@'.
void print_shades(const std::vector<std::uint8_t>& pixels) {
  static const char kShades[] = " .:-=+*#%@";
  for (int y = 0; y < kImageRows; ++y) {
    std::string line = "  ";
    for (int x = 0; x < kImageCols; ++x) {
      const char c = kShades[pixels[std::size_t(y) * kImageCols + x] * 10 / 256];
      line += c;
      line += c;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

// Model: CpuMlp or CpuCnn, holding the checkpoint's parameters.
template <class Model>
int predict_files(Model& model, const std::vector<std::string>& files, const std::string& dataset,
                  const PredictOptions& options) {
  int failures = 0;
  std::vector<float> x(kPixels);
  for (const std::string& file : files) {
    std::vector<std::uint8_t> pixels;
    try {
      pixels = read_digit_image(file, options.invert);
    } catch (const ImageError& error) {
      if (options.json) std::printf("%s\n", nlohmann::json{{"file", file}, {"error", error.what()}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
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
    std::vector<double> p(kClasses);
    for (int c = 0; c < kClasses; ++c) p[c] = std::exp(double(logits[c]) - largest) / sum;
    // The predicted digit first (the metrics kernel's argmax: the first maximum), then by p.
    std::vector<int> order(kClasses);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      if (a == digit || b == digit) return a == digit && b != digit;
      return p[a] > p[b];
    });
    const std::string name = class_name(dataset, digit);

    if (options.json) {
      nlohmann::json out{{"file", file}, {"digit", digit}, {"probability", p[digit]}};
      if (!name.empty()) out["class"] = name;
      nlohmann::json top = nlohmann::json::array();
      for (int k = 0; k < options.top; ++k) top.push_back({{"digit", order[k]}, {"probability", p[order[k]]}});
      out["top"] = top;
      if (options.show) out["pixels"] = pixels;
      std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      continue;
    }
    std::string line = printable(file) + ": " + std::to_string(digit) + (name.empty() ? "" : " " + name);
    char prob[32];
    std::snprintf(prob, sizeof prob, " (p=%.3f)", p[digit]);
    line += prob;
    for (int k = 1; k < options.top; ++k) {
      std::snprintf(prob, sizeof prob, ", %d (p=%.3f)", order[k], p[order[k]]);
      line += prob;
    }
    std::printf("%s\n", line.c_str());
    if (options.show) print_shades(pixels);
  }
  return failures ? 1 : 0;
}

}  // namespace

int run_predict(const std::string& model_path, const std::vector<std::string>& files,
                const PredictOptions& options) {
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
    return predict_files(model, files, dataset, options);
  }
  CpuMlp model(mlp_shape(config), 0, 0.f, 0.f, 1);
  model.params() = state.params;
  return predict_files(model, files, dataset, options);
}

}  // namespace mnist
