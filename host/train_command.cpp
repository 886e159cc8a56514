#include "mnist/train_command.h"

#include <cmath>
#include <cstdio>

#include "mnist/device.h"
#include "mnist/run_dir.h"
#include "mnist/trainer.h"

namespace mnist {

DataSplit split_dataset(const Dataset& data, const TrainConfig& config) {
  const int total = static_cast<int>(data.train.count());
  const int validation = static_cast<int>(std::lround(double(total) * config.val_split));
  int train = total - validation;
  if (config.train_subset > 0) {
    if (config.train_subset > train)
      throw ConfigError("--train-subset " + std::to_string(config.train_subset) + " is larger than the " +
                        std::to_string(train) + " training images left after the validation split");
    train = config.train_subset;
  }
  if (config.batch_size > train)
    throw ConfigError("--batch-size " + std::to_string(config.batch_size) + " is larger than the training set (" +
                      std::to_string(train) + " images)");
  if (config.drop_last && train < config.batch_size)
    throw ConfigError("--drop-last with fewer training images than one batch leaves nothing to train on");

  const auto slice = [](const LabeledImages& set, int first, int count) {
    return ImageSlice{set.pixels.data() + std::size_t(first) * kPixels, set.labels.data() + first, count};
  };
  return DataSplit{slice(data.train, 0, train), slice(data.train, total - validation, validation),
                   slice(data.test, 0, static_cast<int>(data.test.count()))};
}

int run_train(const TrainConfig& config) {
  validate(config);

  // Decide the device before the slow work, so a wrong --device fails at once.
  const int gpus = cuda_device_count();
  if (config.device == "gpu") {
    if (gpus == 0) throw ConfigError("--device gpu: no CUDA device or driver found; use --device cpu");
    throw ConfigError("--device gpu: the GPU training driver is not built yet; use --device cpu");
  }
  if (config.device == "auto") {
    std::fprintf(stderr, gpus == 0 ? "no CUDA device found: training on the CPU\n"
                                   : "a CUDA device is present, but the GPU training driver is not built yet: "
                                     "training on the CPU\n");
  }

  const Dataset dataset = load_dataset(config.resolved_data_dir());
  const DataSplit split = split_dataset(dataset, config);
  RunDir run(config.out_dir, config.force);
  std::printf("training %d images, validating on %d, testing on %d; run directory %s\n", split.train.count,
              split.validation.count, split.test.count, run.path().c_str());
  std::fflush(stdout);

  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, split);
  const TrainResult result = train(config, split, *trainer, run);
  run.write_report(build_report(config, result));
  std::printf("%s", format_summary(result).c_str());
  std::printf("wrote %s/metrics.jsonl and %s/report.json\n", run.path().c_str(), run.path().c_str());
  return 0;
}

}  // namespace mnist
