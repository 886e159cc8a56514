#pragma once
// The subcommands that train or measure a model on a dataset.
#include <string>

#include "mnist/core/config.h"

namespace mnist {

// `mnist train`: validate → (load the --resume checkpoint) → load → split → pick the device →
// train, checkpointing every epoch → write report.json and errors.json → draw the report
// (script_commands.h) unless config.no_report. Returns the process exit status. Ctrl-C before
// training exits 130 at once (SIGTERM: 143, SIGHUP: 129, SIGPIPE: 141); during training each
// saves last.ckpt and throws TrainingInterrupted (trainer.h). A divergence throws
// TrainingDiverged and saves nothing.
int run_train(const TrainConfig& config);

// The exit status after TrainingInterrupted: 128 + the signal that stopped the last run_train
// (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP, 141 for SIGPIPE).
int interrupted_exit_status();

struct EvaluateConfig {
  std::string model;     // checkpoint path
  std::string dataset;   // empty: the dataset the checkpoint was trained on
  std::string data_dir;  // empty: data/<dataset>
  std::string device = "auto";
};

// `mnist evaluate`: a checkpoint's test accuracy, loss and confusion matrix.
int run_evaluate(const EvaluateConfig& config);

// Decides the device before the slow work, so a wrong --device fails at once: true for the
// GPU. "auto" takes the GPU when one is usable and otherwise says on stderr that `work` ("training",
// "evaluating", …) runs on the CPU; "gpu" without a usable GPU throws ConfigError.
bool choose_device(const std::string& device, const char* work);

// What to try after the GPU ran out of memory while training with `batch_size`:
// "try a smaller --batch-size, e.g. 64, or narrower --hidden layers, or --device cpu".
std::string out_of_memory_advice(int batch_size);

}  // namespace mnist
