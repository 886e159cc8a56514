// The CNN through everything the MLP goes through (issue "CNN model on cuDNN"): the CPU trainer,
// its checkpoints and a resume that reaches the uninterrupted run's very bytes, and `mnist train
// --model cnn`, `evaluate` and `predict` end to end on the real MNIST files; a checkpoint of the
// other kind is refused with one clear line.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_util.h"
#include "mnist/io/checkpoint.h"
#include "mnist/model/cnn.h"
#include "mnist/model/model.h"
#include "mnist/train/run_dir.h"
#include "mnist/train/trainer.h"
#include "random_dataset.h"
#include "test_util.h"

namespace mnist {
namespace {

namespace fs = std::filesystem;
using test::fresh_temp_dir;
using test::line_count;
using test::Outcome;
using test::read_text;
using test::run_mnist;
using test::write_text;

// A CNN small enough to train in a test: 2 and 3 filters of 3×3, a dense layer of 8.
TrainConfig tiny_cnn_config(std::uint64_t seed) {
  TrainConfig config;
  config.model = "cnn";
  config.channels = {2, 3};
  config.kernel = 3;
  config.hidden = {8};
  config.dropout = 0.5f;  // masks keyed by the step: a resume at the wrong step shows
  config.batch_size = 64;  // 300 training images: 4 full steps and one of 44 per epoch
  config.val_split = 100.f / 400.f;
  config.seed = seed;
  return config;
}

// 400 images in the training file (300 to train, 100 to validate), 100 to test.
class RandomDataset : public test::RandomDataset {
 public:
  RandomDataset(std::mt19937_64& rng, const TrainConfig& config) : test::RandomDataset(rng, config, 400, 100) {}
};

TEST(CnnTrainer, StateNamesTheCnnAndRefusesAnotherModel) {
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = tiny_cnn_config(rng());
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, data.split());
  const ModelState state = trainer->state();
  EXPECT_EQ(state.kind, ModelKind::kCnn);
  EXPECT_EQ(state.sizes, std::vector<int>({1, 28, 28, 2, 3, 3, 8, 10}));
  EXPECT_EQ(state.params, he_uniform_init(cnn_shape(config), config.seed));
  EXPECT_EQ(state.step, 0);

  // An MLP state with as many parameters is still the wrong model.
  ModelState wrong = state;
  wrong.kind = ModelKind::kMlp;
  EXPECT_THROW(trainer->load_state(wrong), std::invalid_argument);
  wrong = state;
  wrong.sizes[3] = 3;  // other filters, same count of sizes
  EXPECT_THROW(trainer->load_state(wrong), std::invalid_argument);
}

TEST(CnnTrainer, OneEpochThenOneMoreEqualsTwoUninterrupted) {
  std::mt19937_64 rng(test::fresh_seed());
  TrainConfig config = tiny_cnn_config(rng());
  const RandomDataset data(rng, config);
  ASSERT_EQ(data.split().train.count, 300);
  ASSERT_EQ(data.split().validation.count, 100);
  const fs::path whole = fresh_temp_dir("cnn-resume-whole"), part = fresh_temp_dir("cnn-resume-part");

  config.epochs = 2;
  TrainResult uninterrupted;
  {
    RunDir run(whole.string(), true);
    const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, data.split());
    uninterrupted = train(config, data.split(), *trainer, run);
  }
  TrainConfig first = config;
  first.epochs = 1;
  {
    RunDir run(part.string(), true);
    const std::unique_ptr<Trainer> trainer = make_cpu_trainer(first, data.split());
    train(first, data.split(), *trainer, run);
  }
  const Checkpoint after_one = read_checkpoint((part / "last.ckpt").string());
  EXPECT_EQ(after_one.state.kind, ModelKind::kCnn);
  EXPECT_EQ(after_one.epoch, 1);
  EXPECT_EQ(after_one.state.step, 5);
  TrainResult resumed;
  {
    RunDir run(part.string(), true);
    const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, data.split());
    resumed = resume_training(config, data.split(), *trainer, run, after_one);
  }
  ASSERT_EQ(resumed.epochs.size(), 1u);
  EXPECT_EQ(resumed.epochs[0].train_loss, uninterrupted.epochs[1].train_loss);
  EXPECT_EQ(resumed.epochs[0].val_loss, uninterrupted.epochs[1].val_loss);
  EXPECT_EQ(resumed.test.loss_sum, uninterrupted.test.loss_sum);
  // Same weights, moments, step, epoch, best and configuration: the very same bytes.
  EXPECT_EQ(read_text(part / "last.ckpt"), read_text(whole / "last.ckpt"));
  fs::remove_all(whole);
  fs::remove_all(part);
}

// "test: accuracy 0.9123 (9123/10000)  loss 0.3012" → 9123
long long printed_correct(const std::string& output) {
  const std::size_t at = output.find("test: accuracy");
  double accuracy = 0;
  long long correct = -1, count = 0;
  if (at != std::string::npos) std::sscanf(output.c_str() + at, "test: accuracy %lf (%lld/%lld)", &accuracy, &correct, &count);
  return count == 10000 ? correct : -1;
}

std::string pgm(const std::vector<std::uint8_t>& pixels, std::size_t image) {
  return "P5\n28 28\n255\n" + std::string(pixels.begin() + image * kPixels, pixels.begin() + (image + 1) * kPixels);
}

// One small training run through the command line, then everything that reads its checkpoints.
// 5,000 images, one epoch at batch 32 (157 steps) of an 8-16 filter CNN with a dense layer of 64
// and the CNN's default dropout of 0.5: 92.18% measured on the 10,000 test images (the CPU trainer
// is deterministic for a seed); the test asks for 90%.
TEST(CnnCli, TrainsEvaluatesAndPredictsOnTheCpu) {
  const fs::path dir = fresh_temp_dir("cnn-cli");
  const std::string run = (dir / "run").string();
  const std::string model = "--model cnn --channels 8,16 --kernel 5 --hidden 64";
  const Outcome trained = run_mnist("train --device cpu " + model +
                                    " --train-subset 5000 --val-split 0.05 --epochs 1 --batch-size 32 --no-report --out " +
                                    run);
  ASSERT_EQ(trained.status, 0) << trained.output;

  const nlohmann::json report = nlohmann::json::parse(read_text(fs::path(run) / "report.json"));
  EXPECT_EQ(report["config"]["model"], "cnn");
  EXPECT_EQ(report["config"]["channels"], nlohmann::json::array({8, 16}));
  EXPECT_EQ(report["config"]["kernel"], 5);
  EXPECT_EQ(report["config"]["hidden"], nlohmann::json::array({64}));
  EXPECT_EQ(report["config"]["dropout"].get<double>(), 0.5);  // the CNN's default
  const double accuracy = report["test"]["accuracy"].get<double>();
  EXPECT_GE(accuracy, 0.90) << trained.output;
  const Checkpoint last = read_checkpoint(run + "/last.ckpt");
  EXPECT_EQ(last.state.kind, ModelKind::kCnn);
  EXPECT_EQ(last.state.sizes, std::vector<int>({1, 28, 28, 8, 16, 5, 64, 10}));

  // evaluate: the same test accuracy from the checkpoint alone.
  const Outcome evaluated = run_mnist("evaluate --device cpu --model " + run + "/last.ckpt");
  ASSERT_EQ(evaluated.status, 0) << evaluated.output;
  EXPECT_NE(evaluated.output.find("CNN input 1x28x28, conv 5x5 8-16, dense 64"), std::string::npos) << evaluated.output;
  EXPECT_EQ(printed_correct(evaluated.output), std::llround(accuracy * 10000)) << evaluated.output;

  // predict: errors.json holds test images the trained model got wrong, with the digit it chose
  // and its probability (from the trainer's batched forward pass); predict's one-image pass on
  // the same pixels must say the same.
  const nlohmann::json errors = nlohmann::json::parse(read_text(fs::path(run) / "errors.json"));
  ASSERT_GE(errors["errors"].size(), 3u);
  const ImageSet test_images = load_idx_images("data/mnist/t10k-images-idx3-ubyte.gz");
  std::string files;
  for (int i = 0; i < 3; ++i) {
    const std::size_t index = errors["errors"][i]["index"].get<std::size_t>();
    const fs::path file = dir / ("error" + std::to_string(i) + ".pgm");
    write_text(file, pgm(test_images.pixels, index));
    files += " " + file.string();
  }
  const Outcome predicted = run_mnist("predict --model " + run + "/last.ckpt" + files);
  ASSERT_EQ(predicted.status, 0) << predicted.output;
  for (int i = 0; i < 3; ++i) {
    char expected[256];
    std::snprintf(expected, sizeof expected, "error%d.pgm: %d (p=%.3f)", i, errors["errors"][i]["predicted"].get<int>(),
                  errors["errors"][i]["probability"].get<double>());
    EXPECT_NE(predicted.output.find(expected), std::string::npos) << expected << " in\n" << predicted.output;
  }

  // --resume with the MLP's options: one line saying which options continue it.
  const Outcome as_mlp = run_mnist("train --device cpu --epochs 2 --resume " + run + "/last.ckpt");
  EXPECT_EQ(as_mlp.status, 2) << as_mlp.output;
  EXPECT_EQ(line_count(as_mlp.output), 1) << as_mlp.output;
  for (const char* expected : {"holds a CNN", "784-512-512-10 MLP", "pass --model cnn --channels 8,16 --kernel 5 --hidden 64"})
    EXPECT_NE(as_mlp.output.find(expected), std::string::npos) << expected << " in " << as_mlp.output;
  // ... and with another CNN shape.
  const Outcome other = run_mnist("train --device cpu --model cnn --channels 8,16 --epochs 2 --resume " + run + "/last.ckpt");
  EXPECT_EQ(other.status, 2) << other.output;
  EXPECT_NE(other.output.find("dense 1024"), std::string::npos) << other.output;
  fs::remove_all(dir);
}

TEST(CnnCli, AnMlpCheckpointIsNotResumedAsACnn) {
  const fs::path dir = fresh_temp_dir("cnn-cli-mlp");
  TrainConfig config;
  config.hidden = {8};
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, DataSplit{});
  const std::string path = (dir / "mlp.ckpt").string();
  write_checkpoint(path, Checkpoint{trainer->state(), 1, 0.5, to_json(config)});
  const Outcome outcome = run_mnist("train --device cpu --model cnn --epochs 3 --resume " + path);
  EXPECT_EQ(outcome.status, 2) << outcome.output;
  EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
  for (const char* expected : {"holds a 784-8-10 MLP", "ask for a CNN", "pass --model mlp --hidden 8"})
    EXPECT_NE(outcome.output.find(expected), std::string::npos) << expected << " in " << outcome.output;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mnist
