// The training loop shared by every device: for each epoch (train, validate, log, checkpoint)
// → test. A resumed run is the same loop entered at a later epoch (or mid-epoch, after a
// Ctrl-C) with the checkpoint's state.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mnist/optim/adam_config.h"
#include "mnist/io/checkpoint.h"
#include "mnist/model/model.h"
#include "mnist/ops/adam.h"
#include "mnist/train/run_dir.h"
#include "mnist/train/trainer.h"

namespace mnist {

double mean_loss(const EvalTotals& t) { return t.count ? t.loss_sum / double(t.count) : std::nan(""); }
double accuracy(const EvalTotals& t) { return t.count ? double(t.correct) / double(t.count) : std::nan(""); }

int steps_per_epoch(int images, int batch_size, bool drop_last) {
  if (batch_size < 1) throw std::invalid_argument("steps_per_epoch: batch size must be at least 1");
  const int count = std::max(images, 0);
  return drop_last ? count / batch_size : (count + batch_size - 1) / batch_size;
}

namespace {

// Where the loop starts: epoch `epoch` at its 0-based step `step`, with `global_step` optimizer
// steps taken before and `best` the best validation accuracy so far (NaN: none yet).
struct Start {
  int epoch = 1;
  int step = 0;
  std::int64_t global_step = 0;
  double best = std::nan("");
  int best_epoch = 0;  // the epoch that reached `best` (0: none yet)
  bool resumed = false;
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The loop. Its checkpoints are written by `writer` in the background while the next epoch
// trains; the loop waits for a write (join) before it starts the next one, before it logs the
// next epoch, before it reports a divergence or a stop, and after the test evaluation, so
// every file it names is on disk when it says so, and a failed write ends the run with its
// error where the loop next waits. result.checkpoint_stall_seconds adds up those waits, the
// copies of the state and the hand-overs.
TrainResult run_epochs_with(CheckpointWriter& writer, const TrainConfig& config, const DataSplit& data,
                            Trainer& trainer, RunDir& run, Start start) {
  TrainResult result;
  const auto wait_for_writes = [&] {
    const auto wait_start = Clock::now();
    writer.join();
    result.checkpoint_stall_seconds += seconds_since(wait_start);
  };
  result.device_name = trainer.device_name();
  const auto training_start = Clock::now();
  const std::string last_path = run.path() + "/last.ckpt";
  const int steps = steps_per_epoch(config, data);
  const LrSchedule schedule = adam_config(config, steps).schedule;  // what the trainer's Adam follows

  const bool has_validation = data.validation.count > 0;
  double best = start.best;
  int best_epoch = start.best_epoch;
  int saved_epoch = 0;  // the epoch this loop last wrote to last.ckpt
  std::int64_t global_step = start.global_step;
  int first_step = start.step;
  for (int epoch = start.epoch; epoch <= config.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    trainer.start_next_epoch_at(first_step);
    EvalTotals train_totals;
    try {
      train_totals = trainer.train_epoch(epoch);
    } catch (const TrainingDiverged& diverged) {
      // Checkpoints are written only after a clean epoch: say which one is still there, once
      // its write has ended (a failed write is reported instead, as it came first).
      wait_for_writes();
      const std::string kept = saved_epoch > 0 ? last_path + " still holds epoch " + std::to_string(saved_epoch)
                               : start.resumed ? "nothing was saved since resuming"
                                               : "no checkpoint was written";
      throw TrainingDiverged(diverged.problem(), diverged.epoch(), diverged.step(), diverged.global_step(),
                             kept + "; try a lower --lr");
    }
    // The previous epoch's checkpoint has had this whole epoch to be written; it is waited for
    // here, before this epoch is logged, so that metrics.jsonl is never more than one epoch
    // ahead of last.ckpt.
    wait_for_writes();

    // Ctrl-C in the middle of the epoch: save where it stopped, as "epochs completed" plus the
    // optimizer step (resume_step_in_epoch() finds the place again); best.ckpt and the log
    // only ever hold whole epochs.
    if (trainer.stop_requested()) {
      const auto save_start = Clock::now();
      Checkpoint checkpoint = writer.recycle();
      trainer.copy_state(checkpoint.state);
      const std::int64_t done = first_step + (checkpoint.state.step - global_step);
      if (done < steps) {
        checkpoint.epoch = epoch - 1;
        checkpoint.best_val_accuracy = best;
        checkpoint.config = to_json(config);
        writer.write(std::move(checkpoint), {last_path});
        result.checkpoint_stall_seconds += seconds_since(save_start);
        wait_for_writes();
        throw TrainingInterrupted("interrupted at epoch " + std::to_string(epoch) + ", step " + std::to_string(done) +
                                      " of " + std::to_string(steps) + "; saved " + last_path,
                                  last_path);
      }
      result.checkpoint_stall_seconds += seconds_since(save_start);
    }
    global_step += steps - first_step;
    first_step = 0;
    const EvalTotals validation = trainer.evaluate(data.validation);

    EpochMetrics metrics;
    metrics.epoch = epoch;
    metrics.train_loss = mean_loss(train_totals);
    metrics.train_accuracy = accuracy(train_totals);
    metrics.val_loss = mean_loss(validation);
    metrics.val_accuracy = accuracy(validation);
    metrics.seconds = seconds_since(epoch_start);
    metrics.lr = scheduled_lr(schedule, std::int64_t(epoch) * steps);
    std::printf("epoch %3d/%d  train loss %.4f acc %.4f  ", epoch, config.epochs, metrics.train_loss,
                metrics.train_accuracy);
    if (config.lr_schedule != "constant" || config.warmup_epochs > 0.f) std::printf("lr %.3g  ", metrics.lr);
    if (has_validation)
      std::printf("val loss %.4f acc %.4f  %.2fs\n", metrics.val_loss, metrics.val_accuracy, metrics.seconds);
    else  // --val-split 0: nothing to print but NaN
      std::printf("(no validation split)  %.2fs\n", metrics.seconds);
    std::fflush(stdout);
    // The log first, then the checkpoint: after a crash between the two, metrics.jsonl holds one
    // epoch more than last.ckpt, never fewer, and a resume drops that line.
    run.append_epoch(metrics);
    result.epochs.push_back(metrics);

    // Without a validation split every epoch is "best", so best.ckpt is last.ckpt.
    const bool improved = !has_validation || std::isnan(best) || metrics.val_accuracy > best;
    if (has_validation && improved) {
      best = metrics.val_accuracy;
      best_epoch = epoch;
    }
    // The state is copied off the trainer here (from the device on the GPU), into the buffers
    // of the previous checkpoint; the writer then serializes it once and writes best.ckpt
    // before last.ckpt from the same bytes: last.ckpt records `best`, so if it were written
    // first and best.ckpt then failed, a resume would take this epoch as already saved as the
    // best.
    const auto save_start = Clock::now();
    Checkpoint checkpoint = writer.recycle();
    trainer.copy_state(checkpoint.state);
    checkpoint.epoch = epoch;
    checkpoint.best_val_accuracy = best;
    checkpoint.config = to_json(config);
    std::vector<std::string> paths;
    if (improved) paths.push_back(run.path() + "/best.ckpt");
    paths.push_back(last_path);
    writer.write(std::move(checkpoint), std::move(paths));
    result.checkpoint_stall_seconds += seconds_since(save_start);
    saved_epoch = epoch;

    // Ctrl-C while the epoch was finishing (or on the GPU, during it): it is saved whole.
    if (trainer.stop_requested() && epoch < config.epochs) {
      wait_for_writes();
      throw TrainingInterrupted("interrupted after epoch " + std::to_string(epoch) + " of " +
                                    std::to_string(config.epochs) + "; saved " + last_path,
                                last_path);
    }
    // --early-stop: this epoch is saved like any other; best.ckpt holds the best one.
    if (config.early_stop > 0 && has_validation && epoch < config.epochs && epoch - best_epoch >= config.early_stop) {
      std::printf("early stop after epoch %d of %d: no better validation accuracy for %d epochs (the best, "
                  "%.4f, at epoch %d, is in best.ckpt)\n",
                  epoch, config.epochs, epoch - best_epoch, best, best_epoch);
      std::fflush(stdout);
      result.stopped_after_epoch = epoch;
      result.best_epoch = best_epoch;
      break;
    }
  }

  result.train_seconds = seconds_since(training_start);
  result.cuda_graph = trainer.replays_graphs();
  // The last checkpoint is written while the test set is evaluated.
  result.test = trainer.evaluate(data.test);
  wait_for_writes();
  return result;
}

TrainResult run_epochs(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run, Start start) {
  CheckpointWriter writer;
  try {
    writer.warm_up(model_kind(config), model_sizes(config));
    return run_epochs_with(writer, config, data, trainer, run, start);
  } catch (...) {
    // Whatever stopped the loop, a write still in flight ends first. Its error, had it been
    // written in the loop, would have stopped the run before this one, so it is the one thrown.
    writer.join();
    throw;
  }
}

// The first epoch up to `last_epoch` whose logged val_accuracy is `best` (the resumed run's
// metrics.jsonl holds its earlier epochs), or `last_epoch` when the log does not say: the
// early-stop count then starts again from the checkpoint.
int best_epoch_in_log(const std::string& path, double best, int last_epoch) {
  if (std::isnan(best)) return 0;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("epoch") || !j["epoch"].is_number_integer() || !j.contains("val_accuracy") ||
        !j["val_accuracy"].is_number())
      continue;
    const int epoch = j["epoch"].get<int>();
    if (epoch >= 1 && epoch <= last_epoch && j["val_accuracy"].get<double>() == best) return epoch;
  }
  return last_epoch;
}

}  // namespace

TrainResult train(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run) {
  return run_epochs(config, data, trainer, run, Start{});
}

int resume_step_in_epoch(const TrainConfig& config, const DataSplit& data, const Checkpoint& from) {
  const std::int64_t steps = steps_per_epoch(config, data);
  const std::int64_t into = from.state.step - std::int64_t(from.epoch) * steps;
  if (into <= 0 || into >= steps) return 0;
  // The step count only places the resume if the epoch is cut into the same batches.
  const nlohmann::json now = to_json(config);
  for (const char* key : {"batch_size", "train_subset", "val_split", "drop_last", "dataset"})
    if (from.config.contains(key) && !same_setting(from.config[key], now[key])) return 0;
  return static_cast<int>(into);
}

TrainResult resume_training(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run,
                            const Checkpoint& from) {
  trainer.load_state(from.state);
  Start start;
  start.epoch = from.epoch + 1;
  start.step = resume_step_in_epoch(config, data, from);
  start.global_step = from.state.step;
  start.best = from.best_val_accuracy;
  start.best_epoch = best_epoch_in_log(run.path() + "/metrics.jsonl", from.best_val_accuracy, from.epoch);
  start.resumed = true;
  return run_epochs(config, data, trainer, run, start);
}

}  // namespace mnist
