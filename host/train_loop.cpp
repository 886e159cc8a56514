// The training loop shared by every device: for each epoch (train, validate, log) → test.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "mnist/run_dir.h"
#include "mnist/trainer.h"

namespace mnist {

double mean_loss(const EvalTotals& t) { return t.count ? t.loss_sum / double(t.count) : std::nan(""); }
double accuracy(const EvalTotals& t) { return t.count ? double(t.correct) / double(t.count) : std::nan(""); }

TrainResult train(const TrainConfig& config, const DataSplit& data, Trainer& trainer, RunDir& run) {
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  TrainResult result;
  result.device_name = trainer.device_name();
  const auto training_start = Clock::now();

  for (int epoch = 1; epoch <= config.epochs; ++epoch) {
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
    run.append_epoch(metrics);
    result.epochs.push_back(metrics);
  }

  result.train_seconds = seconds_since(training_start);
  result.test = trainer.evaluate(data.test);
  return result;
}

}  // namespace mnist
