#pragma once
// The training loop: load → split → for each epoch (shuffle, steps, evaluate) → report.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mnist/config.h"
#include "mnist/idx.h"
#include "mnist/ops/eval_metrics.h"

namespace mnist {

class RunDir;

// A contiguous slice of a labelled image array.
struct ImageSlice {
  const std::uint8_t* pixels = nullptr;
  const std::uint8_t* labels = nullptr;
  int count = 0;
};

// Keras-style split: the validation images are the last val_split of the 60,000 training
// images and are never trained on; --train-subset takes the first N of the rest.
struct DataSplit {
  ImageSlice train, validation, test;
};
DataSplit split_dataset(const Dataset& data, const TrainConfig& config);

struct EpochMetrics {
  int epoch = 0;
  double train_loss = 0, train_accuracy = 0;
  double val_loss = 0, val_accuracy = 0;  // NaN when there is no validation split
  double seconds = 0;
};

struct TrainResult {
  std::vector<EpochMetrics> epochs;
  EvalTotals test;
  double train_seconds = 0;
  std::string device_name;
};

// Everything a checkpoint must hold to continue training exactly where it stopped.
struct ModelState {
  std::vector<int> sizes;  // 784, hidden..., 10
  std::vector<float> params, adam_m, adam_v;
  std::int64_t step = 0;  // optimizer steps taken so far
};

// What the training loop needs from a device: the steps of one epoch, evaluation, and the
// model state for checkpoints. The CPU references and the CUDA driver each implement it.
class Trainer {
 public:
  virtual ~Trainer() = default;
  virtual std::string device_name() const = 0;
  // Shuffles the training split with (seed, epoch) and runs every step of the epoch;
  // returns the loss and accuracy of the training batches as they were trained on.
  virtual EvalTotals train_epoch(int epoch) = 0;
  // Loss and metrics without dropout; predictions (one per image) may be null.
  virtual EvalTotals evaluate(const ImageSlice& slice, std::int32_t* predictions = nullptr) = 0;
  // The logits of every image of `slice` without dropout, row-major [count, 10]: the same
  // forward pass as evaluate(), for what needs more than the predicted digit (errors.json).
  virtual std::vector<float> logits(const ImageSlice& slice) = 0;
  virtual ModelState state() const = 0;
  virtual void load_state(const ModelState& state) = 0;
};

std::unique_ptr<Trainer> make_cpu_trainer(const TrainConfig& config, const DataSplit& data);
std::unique_ptr<Trainer> make_gpu_trainer(const TrainConfig& config, const DataSplit& data);

// The loop: for each epoch (train, validate, log) → test. Prints one line per epoch.
TrainResult train(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run);

double mean_loss(const EvalTotals& totals);  // NaN when empty
double accuracy(const EvalTotals& totals);   // NaN when empty

// Order of the training images for an epoch: indices stably sorted by shuffle_key(seed, epoch).
std::vector<std::int32_t> shuffled_indices(int count, std::uint64_t seed, int epoch);

}  // namespace mnist
