// The CNN's record run (issue "CNN model on cuDNN"): test accuracy after every epoch, epoch
// times, and the training time it takes to first reach a test accuracy (99.0% by default).
//
//   cmake --build build --target bench_cnn && ./build/profiling/bench_cnn [--epochs 15] [--json]
//
// What it does. Loads and splits the dataset as `mnist train` does (the last 10% of the training
// images held out), builds the GPU trainer with `--model cnn`'s defaults (conv 5x5 32 → pool →
// conv 5x5 64 → pool → dense 1024, dropout 0.5, Adam 1e-3, batch 128), then for each epoch:
// trains it (timed), evaluates the 10,000 test images (timed apart, not counted as training).
//
// Timing: on the host around each call, with the device synchronized before and after, and
// beside it the device time from the CUDA events the trainer records on its stream around each
// epoch's work (Trainer::last_epoch_device_ms). Epoch 1 includes capturing the epoch's CUDA
// graph; the median is taken over the epochs after it. "Time to target" is the training time
// summed over epochs 1..E, E the first epoch whose test accuracy reaches the target: epoch
// granularity, so it is an upper bound of the time the accuracy was first reached mid-epoch.
// The model's construction (cuDNN plans, uploads) is reported on its own line. Last, the
// phases of a step (Trainer::time_step_phases; the trainer restores its state): --phase-steps
// full steps cut after each phase, each cut replayed as a CUDA graph.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.h"
#include "mnist/core/config.h"
#include "mnist/data/idx.h"
#include "mnist/model/model.h"
#include "mnist/train/trainer.h"

namespace {

struct Options {
  std::string data_dir = "data/mnist";
  int epochs = 15;
  int batch_size = 128;
  double target = 0.99;
  bool tf32 = false;
  bool no_graph = false;
  bool json = false;
  int phase_steps = 20;  // Trainer::time_step_phases: 6 cuts × 5 runs × 20 steps ≈ 1.4 epochs of work
  int phase_repeats = 3;
};

using bench::median;
using bench::wall_ms;

struct EpochRecord {
  int epoch = 0;
  double train_ms = 0, train_event_ms = 0, cumulative_ms = 0, eval_ms = 0, test_accuracy = 0;
};

int run(const Options& options) {
  mnist::TrainConfig config;
  config.model = "cnn";
  mnist::apply_model_defaults(config, {});
  config.batch_size = options.batch_size;
  config.epochs = options.epochs;
  config.tf32 = options.tf32;
  config.no_graph = options.no_graph;
  config.data_dir = options.data_dir;
  config.device = "gpu";
  mnist::validate(config);

  const mnist::Dataset dataset = mnist::load_dataset(config.resolved_data_dir());
  const mnist::DataSplit split = mnist::split_dataset(dataset, config);
  std::unique_ptr<mnist::Trainer> trainer;
  const double build_ms = wall_ms([&] { trainer = mnist::make_gpu_trainer(config, split); });
  const std::string model = mnist::describe_model(mnist::model_kind(config), mnist::model_sizes(config));

  std::vector<EpochRecord> records;
  double cumulative = 0, time_to_target = std::nan("");
  int target_epoch = 0;
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    EpochRecord r;
    r.epoch = epoch;
    r.train_ms = wall_ms([&] { trainer->train_epoch(epoch); });
    r.train_event_ms = trainer->last_epoch_device_ms();
    cumulative += r.train_ms;
    r.cumulative_ms = cumulative;
    mnist::EvalTotals test;
    r.eval_ms = wall_ms([&] { test = trainer->evaluate(split.test); });
    r.test_accuracy = mnist::accuracy(test);
    if (target_epoch == 0 && r.test_accuracy >= options.target) {
      target_epoch = epoch;
      time_to_target = cumulative;
    }
    records.push_back(r);
    if (!options.json)
      std::printf("epoch %3d  train %9.2f ms (device %9.2f, total %10.2f ms)  test %.2f%%  (evaluation %.2f ms)\n",
                  epoch, r.train_ms, r.train_event_ms, r.cumulative_ms, 100 * r.test_accuracy, r.eval_ms);
  }

  std::vector<double> steady, steady_event;
  for (const EpochRecord& r : records) {
    if (r.epoch == 1) continue;
    steady.push_back(r.train_ms);
    steady_event.push_back(r.train_event_ms);
  }
  const double ms = median(steady.empty() ? std::vector<double>{records[0].train_ms} : steady);
  const double event_ms = median(steady_event.empty() ? std::vector<double>{records[0].train_event_ms} : steady_event);
  const double images_per_s = split.train.count / (ms / 1000.0);
  const int steps = mnist::steps_per_epoch(split.train.count, config.batch_size, config.drop_last);
  const mnist::StepPhaseTimes phases = trainer->time_step_phases(options.phase_steps, options.phase_repeats);
  const auto accuracy_after = [&](int epoch) {
    return epoch <= int(records.size()) ? records[std::size_t(epoch - 1)].test_accuracy : std::nan("");
  };

  if (options.json) {
    // One line, the summary first and the epochs last (compare.sh reads the first "test_accuracy").
    nlohmann::ordered_json out = {{"system", "mnist-cuda-cnn"},
                                  {"model", model},
                                  {"device", trainer->device_name()},
                                  {"batch_size", options.batch_size},
                                  {"cuda_graph", trainer->replays_graphs()},
                                  {"graph_steps", trainer->graph_steps()},
                                  {"train_images", split.train.count},
                                  {"build_ms", build_ms},
                                  {"ms_per_epoch", ms},
                                  {"event_ms_per_epoch", event_ms},
                                  {"images_per_s", images_per_s},
                                  {"test_accuracy", accuracy_after(options.epochs)},
                                  {"test_accuracy_after_5", accuracy_after(5)},
                                  {"target", options.target},
                                  {"target_epoch", target_epoch},
                                  {"time_to_target_ms", target_epoch ? nlohmann::json(time_to_target) : nlohmann::json()},
                                  {"step_phases", bench::step_phases_json(phases)},
                                  {"epochs", nlohmann::ordered_json::array()}};
    for (const EpochRecord& r : records)
      out["epochs"].push_back({{"epoch", r.epoch},
                               {"train_ms", r.train_ms},
                               {"train_event_ms", r.train_event_ms},
                               {"cumulative_ms", r.cumulative_ms},
                               {"eval_ms", r.eval_ms},
                               {"test_accuracy", r.test_accuracy}});
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  const std::string graphs = "CUDA graphs of " + std::to_string(trainer->graph_steps()) + " steps";
  std::printf("model      %s on %s, batch %d, %d training images, %s\n", model.c_str(),
              trainer->device_name().c_str(), options.batch_size, split.train.count,
              trainer->replays_graphs() ? graphs.c_str() : "stream launches (no CUDA graph)");
  std::printf("set-up     %.1f ms (uploads, cuDNN plans)\n", build_ms);
  std::printf("epoch      %.2f ms median over epochs 2..%d (epoch 1: %.2f ms, stream launches and the graph capture); %.0f images/s\n",
              ms, options.epochs, records[0].train_ms, images_per_s);
  std::printf("device     %.2f ms median from CUDA events on the trainer's stream\n", event_ms);
  std::printf("accuracy   %.2f%% after 5 epochs, %.2f%% after %d\n", 100 * accuracy_after(5),
              100 * accuracy_after(options.epochs), options.epochs);
  if (target_epoch)
    std::printf("target     %.2f%% first reached after epoch %d: %.1f ms of training\n", 100 * options.target,
                target_epoch, time_to_target);
  else
    std::printf("target     %.2f%% not reached in %d epochs\n", 100 * options.target, options.epochs);
  bench::print_step_phases(phases, event_ms * 1e3 / steps);
  std::printf("RESULT system=mnist-cuda-cnn ms_per_epoch=%.4f images_per_s=%.0f test_accuracy=%.4f epochs=%d "
              "time_to_target_ms=%.1f\n",
              ms, images_per_s, accuracy_after(options.epochs), options.epochs, time_to_target);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"bench_cnn: the CNN's test accuracy per epoch and its training time to a target accuracy",
               "bench_cnn"};
  app.add_option("--data-dir", options.data_dir, "Folder with the four MNIST IDX files (raw or .gz)")
      ->capture_default_str();
  app.add_option("--epochs", options.epochs, "Epochs to train")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--batch-size", options.batch_size, "Images per training step")
      ->capture_default_str()
      ->check(CLI::Range(1, 54000));
  app.add_option("--target", options.target, "Test accuracy whose first epoch is timed")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_flag("--tf32", options.tf32, "TF32 tensor-core convolutions and GEMMs (default: full fp32)");
  app.add_flag("--no-graph", options.no_graph, "Launch each kernel on the stream instead of replaying a CUDA graph");
  app.add_flag("--json", options.json, "Print one JSON object instead of the text report");
  bench::add_phase_options(app, options.phase_steps, options.phase_repeats);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    std::fprintf(stderr, "bench_cnn: error: %s (see bench_cnn --help)\n", error.what());
    return 2;
  }

  return bench::run_on_gpu("bench_cnn", [&] { return run(options); });
}
