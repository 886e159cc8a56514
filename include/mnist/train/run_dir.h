#pragma once
// The run directory every training leaves behind:
//   metrics.jsonl  one JSON object per epoch, appended and flushed as the epoch ends
//   report.json    config, test metrics, confusion matrix, per-class precision/recall, timings
#include <string>

#include <nlohmann/json.hpp>

#include "mnist/core/config.h"
#include "mnist/core/files.h"

namespace mnist {

struct EpochMetrics;
struct TrainResult;

class RunDir {
 public:
  // Creates `path`, or a fresh runs/<timestamp> when empty. An existing non-empty directory is
  // refused unless `force`. metrics.jsonl is then replaced, atomically, by `metrics_log` (a
  // resumed run's earlier epochs; empty for a new run), so a failure here leaves the old log
  // whole. Throws ConfigError with one line when the directory cannot be written.
  RunDir(const std::string& path, bool force, const std::string& metrics_log = "");
  const std::string& path() const { return path_; }

  // Deletes what an earlier run left here (its checkpoints, report.json, errors.json, report.md
  // and pictures), so that none of it is taken for this run's: for --force, not for a resume.
  void discard_previous_run() const;

  void append_epoch(const EpochMetrics& metrics);
  void write_report(const nlohmann::json& report);

 private:
  std::string path_;
};


nlohmann::json epoch_json(const EpochMetrics& metrics);
// report.json without its "versions" (train_command.cpp adds them). Each test.per_class entry
// of a dataset with class names carries its "name".
nlohmann::json build_report(const TrainConfig& config, const TrainResult& result);

// The end-of-training summary for the terminal: test metrics, confusion table, most-confused
// pairs. The rows of a dataset with class names (class_name in idx.h: Fashion-MNIST) end with
// the name of their class, and its pairs are named ("shirt→T-shirt/top").
std::string format_summary(const TrainResult& result, const std::string& dataset);

}  // namespace mnist
