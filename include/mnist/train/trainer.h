#pragma once
// The training loop: load → split → for each epoch (shuffle, steps, evaluate) → report.
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mnist/core/config.h"
#include "mnist/core/errors.h"
#include "mnist/io/checkpoint.h"
#include "mnist/data/idx.h"
#include "mnist/model/model.h"
#include "mnist/core/mnist.h"

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
  double lr = 0;  // the learning rate of the epoch's last step (its schedule's, adam.h)
};

struct TrainResult {
  std::vector<EpochMetrics> epochs;
  EvalTotals test;
  double train_seconds = 0;
  std::string device_name;
  bool cuda_graph = false;  // the epochs after the first replayed a captured CUDA graph (Trainer::replays_graphs)
  // How long the loop waited for its checkpoints in all: copying the model state off the trainer,
  // serializing it, and waiting for the writes (train_loop.cpp).
  double checkpoint_stall_seconds = 0;
  // --early-stop: the epoch after which the run stopped (0: it ran all its epochs), and the
  // epoch of the best validation accuracy then.
  int stopped_after_epoch = 0;
  int best_epoch = 0;
};

// A training step cut short after one of its phases, in the order a step runs them: the
// device time that prefix of the step takes (StepPhaseTimes).
struct StepPhaseTime {
  std::string phase;       // "gather", "forward", "loss", "backward", "optimizer"
  double ms_per_step = 0;  // the step up to and including this phase
};
// Trainer::time_step_phases: phase k costs prefixes[k] - prefixes[k-1] (the first, prefixes[0]).
struct StepPhaseTimes {
  bool graph = false;  // each prefix replayed as one captured CUDA graph (false: stream launches)
  int steps = 0;       // full batches per timed run
  int repeats = 0;     // timed runs per prefix; the median is reported
  std::vector<StepPhaseTime> prefixes;
};

// What the training loop needs from a device: the steps of one epoch, evaluation, and the
// model state for checkpoints. The CPU twins and the CUDA driver each implement it.
class Trainer {
 public:
  virtual ~Trainer() = default;
  virtual std::string device_name() const = 0;
  // Whether train_epoch replays a captured CUDA graph (the GPU trainer, unless --no-graph or
  // the capture failed): true once the first full epoch, which runs as stream launches and is
  // captured at its end, is done; false before it and on the CPU.
  virtual bool replays_graphs() const { return false; }
  // The steps one captured graph holds (or will, before the first epoch ends): the epoch's own
  // count up to make_gpu_trainer's max_graph_steps; a longer epoch replays a graph of that many
  // steps several times, then one of the rest. 0 without graphs (CPU, --no-graph, a refused
  // capture).
  virtual int graph_steps() const { return 0; }
  // Device time of the last train_epoch in milliseconds, from CUDA events recorded on the
  // trainer's stream around the epoch's work (shuffle, steps, the copy of its totals): what the
  // benchmarks report beside the host clock; an epoch resumed mid-way counts only the steps it
  // ran. NaN on the CPU, before the first epoch and after one that a CUDA error stopped.
  virtual double last_epoch_device_ms() const { return std::numeric_limits<double>::quiet_NaN(); }
  // Shuffles the training split with (seed, epoch) and runs every step of the epoch;
  // returns the loss and accuracy of the training batches as they were trained on. Throws
  // TrainingDiverged when the loss or a parameter stops being finite.
  virtual EvalTotals train_epoch(int epoch) = 0;
  // Loss and metrics without dropout; predictions (one per image) may be null.
  virtual EvalTotals evaluate(const ImageSlice& slice, std::int32_t* predictions = nullptr) = 0;
  // The logits of every image of `slice` without dropout, row-major [count, 10]: the same
  // forward pass as evaluate(), for what needs more than the predicted digit (errors.json).
  virtual std::vector<float> logits(const ImageSlice& slice) = 0;
  virtual ModelState state() const = 0;
  // state() into `out`, reusing its buffers where they are large enough: the training loop
  // copies each checkpoint's state into the buffers of the one before, memory already touched,
  // where fresh buffers would cost a page fault every 4 KiB. The default is out = state().
  virtual void copy_state(ModelState& out) const { out = state(); }
  virtual void load_state(const ModelState& state) = 0;
  // For the benchmarks, where Nsight Systems cannot run: the device time of `steps` full
  // training steps cut after each phase (the first steps of epoch 1's shuffle), each prefix
  // captured as a CUDA graph of those steps (stream launches where the epochs replay no graph)
  // and run `repeats` times after one warm-up, timed with CUDA events; the median (the upper
  // of the two middle runs for an even count) divided by `steps`. Leaving the later phases
  // out, as Nsight would not, changes what stays in the caches, so a difference is the phase's
  // cost inside the step, not alone. The model state (parameters, moments, step) is restored
  // afterwards: training goes on as if this was never called. Empty prefixes on the CPU.
  virtual StepPhaseTimes time_step_phases(int steps, int repeats) {
    (void)steps;
    (void)repeats;
    return {};
  }

  // Ctrl-C: once *stop is true, train_epoch returns after the step it is running (the CPU
  // trainer) or at the end of the epoch (the GPU trainer, whose epoch's CUDA graphs are enqueued
  // together), with the totals of the steps it ran; state().step tells how far it got. Null (the
  // default): never stops.
  void set_stop_flag(const std::atomic<bool>* stop) { stop_ = stop; }
  bool stop_requested() const { return stop_ != nullptr && stop_->load(); }
  // The next train_epoch starts at this 0-based step of its epoch, skipping the batches before
  // it in the epoch's shuffle: how a checkpoint saved mid-epoch is continued.
  void start_next_epoch_at(int step) { next_first_step_ = step; }

 protected:
  // For train_epoch: where this epoch starts (then 0 again for the epochs after it).
  int take_first_step() { return std::exchange(next_first_step_, 0); }

 private:
  const std::atomic<bool>* stop_ = nullptr;
  int next_first_step_ = 0;
};

std::unique_ptr<Trainer> make_cpu_trainer(const TrainConfig& config, const DataSplit& data);
// The most training steps one captured CUDA graph holds. An executable graph keeps every node
// it was captured with (NVIDIA's CCCL puts a kernel node at ~10 KB; not measured here) and takes
// longer to instantiate the more it has, while a step is 22 launches (the default MLP) and an
// epoch of batch 1 is 54,000 steps: ~10^6 nodes. The default model's epoch (batch 128: 422
// steps) is one graph.
constexpr int kMaxGraphSteps = 512;
// max_graph_steps: kMaxGraphSteps, or fewer where a test wants long epochs cheaply.
std::unique_ptr<Trainer> make_gpu_trainer(const TrainConfig& config, const DataSplit& data,
                                          int max_graph_steps = kMaxGraphSteps);
// Throws ConfigError with one line when the GPU cannot train `config` (a CNN batch larger
// than one cuDNN call takes); make_gpu_trainer checks it too, `mnist train` before the data loads.
void check_gpu_config(const TrainConfig& config);

// Steps of one epoch: the last batch is partial unless drop_last discards it.
int steps_per_epoch(int images, int batch_size, bool drop_last);
// Those of a run's epochs over its training split.
inline int steps_per_epoch(const TrainConfig& config, const DataSplit& data) {
  return steps_per_epoch(data.train.count, config.batch_size, config.drop_last);
}

// The loop: for each epoch (train, validate, log, checkpoint) → test. Prints one line per
// epoch. Throws TrainingDiverged (nothing saved for the failed epoch) or, when the trainer's
// stop flag is set, TrainingInterrupted after saving last.ckpt (mid-epoch: the optimizer step
// tells where; its `epoch` stays the number of epochs completed). Checkpoints are written by a
// CheckpointWriter (checkpoint.h) while training goes on; every write has ended, and a failed
// one has been thrown as its CheckpointError, before train() returns or throws.
TrainResult train(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run);

// The training loop continued from a checkpoint: loads its state into `trainer`
// and runs epochs from.epoch+1 .. config.epochs, writing last.ckpt/best.ckpt as train() does.
// A checkpoint saved mid-epoch (Ctrl-C) continues at resume_step_in_epoch(). The result holds
// only the epochs run here.
TrainResult resume_training(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run,
                            const Checkpoint& from);

// The 0-based step of epoch from.epoch+1 at which a resume starts: from.state.step less the
// steps of the completed epochs, when that lies inside the epoch and the epoch is cut into the
// same batches as when it was saved (same batch size, subset, split and drop-last); else 0.
int resume_step_in_epoch(const TrainConfig& config, const DataSplit& data, const Checkpoint& from);

double mean_loss(const EvalTotals& totals);  // NaN when empty
double accuracy(const EvalTotals& totals);   // NaN when empty

// Order of the training images for an epoch: indices stably sorted by shuffle_key(seed, epoch).
std::vector<std::int32_t> shuffled_indices(int count, std::uint64_t seed, int epoch);

}  // namespace mnist
