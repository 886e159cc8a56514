// `mnist predict` (include/mnist/cli/predict.h): each image prepared as MNIST's digits were (on the
// CPU, one at a time), then all of them as one batch through the checkpoint's model (MLP or CNN)
// on the CPU (the default: a handful of images needs no GPU) or the GPU.
#include "mnist/cli/predict.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "mnist/io/checkpoint.h"
#include "mnist/core/config.h"
#include "mnist/data/idx.h"
#include "mnist/model/model.h"
#include "mnist/core/printable.h"
#include "mnist/cli/train_command.h"
#include "mnist/train/trainer.h"

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

// One file: its prepared pixels, or why it could not be read.
struct Prepared {
  std::string file;
  std::vector<std::uint8_t> pixels;
  std::string error;
};

void print_prediction(const Prepared& item, const float* logits, const std::string& dataset,
                      const PredictOptions& options) {
  const Reading reading = read_logits(logits);
  const int digit = reading.digit;
  const std::vector<double>& p = reading.probabilities;
  // The predicted digit first, then by probability.
  std::vector<int> order(kClasses);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    if (a == digit || b == digit) return a == digit && b != digit;
    return p[a] > p[b];
  });
  const std::string name = class_name(dataset, digit);

  if (options.json) {
    nlohmann::json out{{"file", item.file}, {"digit", digit}, {"probability", p[digit]}};
    if (!name.empty()) out["class"] = name;
    nlohmann::json top = nlohmann::json::array();
    for (int k = 0; k < options.top; ++k) top.push_back({{"digit", order[k]}, {"probability", p[order[k]]}});
    out["top"] = top;
    if (options.show) out["pixels"] = item.pixels;
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::string line = printable(item.file) + ": " + std::to_string(digit) + (name.empty() ? "" : " " + name);
  char prob[32];
  std::snprintf(prob, sizeof prob, " (p=%.3f)", p[digit]);
  line += prob;
  for (int k = 1; k < options.top; ++k) {
    std::snprintf(prob, sizeof prob, ", %d (p=%.3f)", order[k], p[order[k]]);
    line += prob;
  }
  std::printf("%s\n", line.c_str());
  if (options.show) print_shades(item.pixels);
}

}  // namespace

std::unique_ptr<Trainer> trainer_for_predicting(const Checkpoint& checkpoint, bool on_gpu) {
  TrainConfig config;
  set_model(config, checkpoint.state.kind, checkpoint.state.sizes);
  std::unique_ptr<Trainer> trainer = on_gpu ? make_gpu_trainer(config, DataSplit{}) : make_cpu_trainer(config, DataSplit{});
  trainer->load_state(checkpoint.state);
  return trainer;
}

Reading read_logits(const float* logits) {
  Reading reading;
  for (int c = 1; c < kClasses; ++c)
    if (logits[c] > logits[reading.digit]) reading.digit = c;
  double sum = 0.0;
  for (int c = 0; c < kClasses; ++c) sum += std::exp(double(logits[c]) - logits[reading.digit]);
  reading.probabilities.resize(kClasses);
  for (int c = 0; c < kClasses; ++c)
    reading.probabilities[c] = std::exp(double(logits[c]) - logits[reading.digit]) / sum;
  return reading;
}

int run_predict(const std::string& model_path, const std::vector<std::string>& files,
                const PredictOptions& options) {
  check_device_option(options.device);
  // The reader has checked that the sizes are a model's and the parameters fit them.
  const Checkpoint checkpoint = read_checkpoint(model_path);
  const std::string dataset = trained_dataset(checkpoint);

  // Every file prepared first (one at a time, on the CPU), then all of them as one batch through
  // the model on the chosen device, then the answers in the order of the files.
  std::vector<Prepared> items;
  std::vector<std::uint8_t> batch;
  for (const std::string& file : files) {
    Prepared item{file, {}, {}};
    try {
      item.pixels = read_digit_image(file, options.invert);
      batch.insert(batch.end(), item.pixels.begin(), item.pixels.end());
    } catch (const ImageError& error) {
      item.error = error.what();
    }
    items.push_back(std::move(item));
  }
  const int count = static_cast<int>(batch.size() / kPixels);
  std::vector<float> logits;
  if (count > 0) {
    const std::unique_ptr<Trainer> trainer =
        trainer_for_predicting(checkpoint, choose_device(options.device, "predicting"));
    const std::vector<std::uint8_t> labels(count, 0);  // unused: logits only
    logits = trainer->logits(ImageSlice{batch.data(), labels.data(), count});
  }

  int failures = 0, next = 0;
  for (const Prepared& item : items) {
    if (!item.error.empty()) {
      if (options.json)
        std::printf("%s\n", nlohmann::json{{"file", item.file}, {"error", item.error}}
                                .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                                .c_str());
      std::fflush(stdout);  // keep the lines in order when both streams go to one terminal
      std::fprintf(stderr, "mnist: error: %s\n", item.error.c_str());
      ++failures;
      continue;
    }
    print_prediction(item, logits.data() + std::size_t(next++) * kClasses, dataset, options);
  }
  return failures ? 1 : 0;
}

}  // namespace mnist
