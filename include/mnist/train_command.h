#pragma once
// The subcommands that train or measure a model on a dataset.
#include <string>

#include "mnist/config.h"

namespace mnist {

// `mnist train`: validate → (load the --resume checkpoint) → load → split → pick the device →
// train, checkpointing every epoch → write report.json and errors.json → draw the report
// (report_command.h) unless config.no_report. Returns the process exit status.
int run_train(const TrainConfig& config);

struct EvaluateConfig {
  std::string model;     // checkpoint path
  std::string dataset;   // empty: the dataset the checkpoint was trained on
  std::string data_dir;  // empty: data/<dataset>
  std::string device = "auto";
};

// `mnist evaluate`: a checkpoint's test accuracy, loss and confusion matrix.
int run_evaluate(const EvaluateConfig& config);

}  // namespace mnist
