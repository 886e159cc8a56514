#pragma once
// `mnist predict`: the digit in each image file according to a checkpoint.
#include <memory>
#include <string>
#include <vector>

#include "mnist/data/image_io.h"
#include "mnist/io/checkpoint.h"
#include "mnist/train/trainer.h"

namespace mnist {

struct PredictOptions {
  Invert invert = Invert::kAuto;  // how prepare_digit decides the ink (image_io.h)
  bool show = false;              // print the 28×28 the model saw, as text shades
  int top = 1;                    // the most likely digits printed, 1..10
  bool json = false;              // one JSON object a file on stdout, nothing else there
  std::string device = "cpu";     // where the batch of all files runs: cpu, gpu or auto
};

// Per file, the image is decoded and prepared as MNIST's digits were (image_io.h); then all of
// them run forward as one batch on options.device. Prints "<file>: <digit> (p=0.987)", p being the softmax probability of that digit,
// with --top K the next K-1 digits after it ("…, 1 (p=0.010)"); for a Fashion-MNIST checkpoint
// the class follows its label: "<file>: 9 ankle boot (p=0.987)". With show, the 28×28 follows.
// With json, one object a line: {"file", "digit", "probability", "top": [{"digit", "probability"}…],
// "class" (Fashion-MNIST only), "pixels" (with show)} or {"file", "error"}.
// A file that cannot be read is one error line on stderr and the others are still predicted;
// returns the exit status (1 when any file failed). A bad checkpoint throws CheckpointError.
int run_predict(const std::string& model_path, const std::vector<std::string>& files,
                const PredictOptions& options = {});

// A trainer holding the checkpoint's model, for forward passes only (its shape is all it needs:
// the weights come from the checkpoint, and evaluation never drops out). `mnist predict` and
// `mnist serve` read digits with it.
std::unique_ptr<Trainer> trainer_for_predicting(const Checkpoint& checkpoint, bool on_gpu);

// What one image's 10 logits say: the digit (the first maximum, as the metrics kernels decide)
// and the softmax probabilities, shifted by the largest logit so exp() cannot overflow.
struct Reading {
  int digit = 0;
  std::vector<double> probabilities;
};
Reading read_logits(const float* logits);

}  // namespace mnist
