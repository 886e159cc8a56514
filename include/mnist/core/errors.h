#pragma once
// Every failure the program reports, by kind. Each is one line for the user; the command line's
// main (host/cli/main.cpp) maps the kinds to exit statuses, in one place:
//   2  ConfigError: the command line asks for something impossible (the usage status)
//   1  DataError, ImageError, CheckpointError, IoError, TrainingDiverged, CudaError (check.h)
//   128 + signal  TrainingInterrupted (130 for Ctrl-C), after saving where training stopped
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace mnist {

// An option or a combination of options that cannot be run; the message names the option.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A dataset file is missing, unreadable or not what it claims to be: "<path>: <what is wrong>".
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An image given to predict cannot be read as a digit: "<path>: <what is wrong>".
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A checkpoint is missing, damaged, of a newer format, or cannot be written.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The file system refused: a directory could not be made, a file written, renamed or removed.
class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The training loss or a parameter became NaN or infinite. Thrown by train_epoch at the first
// such step (the GPU trainer finds out at the end of the epoch); the training loop adds what
// the run directory still holds.
class TrainingDiverged : public std::runtime_error {
 public:
  // problem: "loss is NaN", ...; step: 1-based within the epoch; global_step: optimizer steps.
  TrainingDiverged(std::string problem, int epoch, int step, std::int64_t global_step, const std::string& advice = "")
      : std::runtime_error(problem + " at epoch " + std::to_string(epoch) + ", step " + std::to_string(step) +
                           " (global step " + std::to_string(global_step) + ")" +
                           (advice.empty() ? "" : "; " + advice)),
        problem_(std::move(problem)), epoch_(epoch), step_(step), global_step_(global_step) {}
  const std::string& problem() const { return problem_; }
  int epoch() const { return epoch_; }
  int step() const { return step_; }
  std::int64_t global_step() const { return global_step_; }

 private:
  std::string problem_;
  int epoch_, step_;
  std::int64_t global_step_;
};

// Training stopped on request (Ctrl-C, SIGTERM, SIGHUP or SIGPIPE) after last.ckpt was saved;
// `mnist train` prints how to resume. what(): "interrupted at epoch 3, step 120 of 400; saved
// DIR/last.ckpt".
class TrainingInterrupted : public std::runtime_error {
 public:
  TrainingInterrupted(const std::string& what, std::string checkpoint)
      : std::runtime_error(what), checkpoint_(std::move(checkpoint)) {}
  const std::string& checkpoint() const { return checkpoint_; }  // the file to --resume from

 private:
  std::string checkpoint_;
};

}  // namespace mnist
