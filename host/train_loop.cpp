// The training loop shared by every device: for each epoch (train, validate, log, checkpoint)
// → test. A resumed run is the same loop entered at a later epoch with the checkpoint's state.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "mnist/checkpoint.h"
#include "mnist/run_dir.h"
#include "mnist/trainer.h"

namespace mnist {

double mean_loss(const EvalTotals& t) { return t.count ? t.loss_sum / double(t.count) : std::nan(""); }
double accuracy(const EvalTotals& t) { return t.count ? double(t.correct) / double(t.count) : std::nan(""); }

namespace {

// Epochs first_epoch..config.epochs. `best` is the best validation accuracy so far (NaN: none yet).
TrainResult run_epochs(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run,
                       int first_epoch, double best) {
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  TrainResult result;
  result.device_name = trainer.device_name();
  const auto training_start = Clock::now();

  const bool has_validation = data.validation.count > 0;
  for (int epoch = first_epoch; epoch <= config.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    const EvalTotals train_totals = trainer.train_epoch(epoch);
    const EvalTotals validation = trainer.evaluate(data.validation);

    EpochMetrics metrics;
    metrics.epoch = epoch;
    metrics.train_loss = mean_loss(train_totals);
    metrics.train_accuracy = accuracy(train_totals);
    metrics.val_loss = mean_loss(validation);
    metrics.val_accuracy = accuracy(validation);
    metrics.seconds = seconds_since(epoch_start);
    std::printf("epoch %3d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  %.2fs\n", epoch, config.epochs,
                metrics.train_loss, metrics.train_accuracy, metrics.val_loss, metrics.val_accuracy, metrics.seconds);
    std::fflush(stdout);
    // The log first, then the checkpoint: after a crash between the two, metrics.jsonl holds one
    // epoch more than last.ckpt, never fewer, and a resume drops that line.
    run.append_epoch(metrics);
    result.epochs.push_back(metrics);

    // Without a validation split every epoch is "best", so best.ckpt is last.ckpt.
    const bool improved = !has_validation || std::isnan(best) || metrics.val_accuracy > best;
    if (has_validation && improved) best = metrics.val_accuracy;
    const Checkpoint checkpoint{trainer.state(), epoch, best, to_json(config)};
    write_checkpoint(run.path() + "/last.ckpt", checkpoint);
    if (improved) write_checkpoint(run.path() + "/best.ckpt", checkpoint);
  }

  result.train_seconds = seconds_since(training_start);
  result.test = trainer.evaluate(data.test);
  return result;
}

}  // namespace

TrainResult train(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run) {
  return run_epochs(config, data, trainer, run, 1, std::nan(""));
}

TrainResult resume_training(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run,
                            const Checkpoint& from) {
  trainer.load_state(from.state);
  return run_epochs(config, data, trainer, run, from.epoch + 1, from.best_val_accuracy);
}

}  // namespace mnist
