// The `mnist` program as a user meets it: --help, one clear line and a non-zero exit for
// every bad option, and a short end-to-end training on the CPU that must learn.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <string>

#include "cli_util.h"
#include "mnist/data/idx.h"
#include "mnist/data/image_io.h"
#include "mnist/train/run_dir.h"
#include "mnist/train/trainer.h"
#include "mnist/cli/versions.h"

namespace {

namespace fs = std::filesystem;

using mnist::test::line_count;
using mnist::test::Outcome;
using mnist::test::read_text;
using mnist::test::run_mnist;
using mnist::test::run_program;

fs::path fresh_temp_dir(const std::string& name) {
  std::random_device device;
  const fs::path dir = fs::temp_directory_path() / ("mnist-cli-" + name + "-" + std::to_string(device()));
  fs::remove_all(dir);
  return dir;
}

TEST(Cli, HelpListsEveryTrainOptionWithItsDefault) {
  const Outcome help = run_mnist("train --help");
  EXPECT_EQ(help.status, 0);
  for (const char* expected : {"--hidden", "512,512", "--dropout", "0.2", "--lr", "0.001", "--batch-size", "128",
                               "--epochs", "20", "--val-split", "0.1", "--seed", "--dataset", "mnist", "--data-dir",
                               "--device", "auto", "--out", "--train-subset", "--drop-last", "--force",
                               "--resume", "--no-report", "--model", "mlp", "cnn", "--channels", "32,64", "--kernel",
                               "1024 (cnn)", "0.5 (cnn)", "--lr-schedule", "constant", "cosine", "onecycle",
                               "--warmup-epochs", "--min-lr", "--lr-decay", "--lr-step", "--early-stop",
                               "--augment", "affine", "elastic", "--shift", "--rotate", "--scale", "--elastic-alpha",
                               "34", "--elastic-sigma", "--recipe", "mlp-best", "cnn-best"})
    EXPECT_NE(help.output.find(expected), std::string::npos) << "missing " << expected << " in:\n" << help.output;
  const Outcome top = run_mnist("--help");
  EXPECT_EQ(top.status, 0);
  EXPECT_NE(top.output.find("\n  report "), std::string::npos) << top.output;  // the subcommand
}

// `mnist --version` lists every library version report.json records, each read from the
// library: cuDNN's major is 9 (the one this project needs) and CUDA's have the "13.0" shape.
TEST(Cli, VersionListsTheLibrariesItRunsWith) {
  const Outcome outcome = run_mnist("--version");
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  const nlohmann::json versions = mnist::program_versions();
  for (const char* key : {"compiler", "cuda_toolkit", "cuda_runtime", "cuda_driver", "nvidia_driver", "cublas", "cudnn",
                          "openblas"}) {
    ASSERT_TRUE(versions.contains(key) && versions[key].is_string()) << key << " in " << versions.dump();
    const std::string line = "\n  " + std::string(key);
    const std::size_t at = outcome.output.find(line);
    ASSERT_NE(at, std::string::npos) << key << " in\n" << outcome.output;
    const std::size_t end = outcome.output.find('\n', at + 1);
    std::string value = outcome.output.substr(at + line.size(), end - at - line.size());
    value.erase(0, value.find_first_not_of(' '));
    EXPECT_EQ(value, versions[key].get<std::string>()) << key;
    EXPECT_FALSE(value.empty() || value == "unknown") << key;
  }
  const std::regex cuda(R"(\d+\.\d)");
  EXPECT_TRUE(std::regex_match(versions["cuda_runtime"].get<std::string>(), cuda)) << versions.dump();
  EXPECT_TRUE(std::regex_match(versions["cuda_toolkit"].get<std::string>(), cuda)) << versions.dump();
  EXPECT_TRUE(std::regex_search(versions["cudnn"].get<std::string>(), std::regex(R"((^|headers )9\.\d+\.\d+)")))
      << versions.dump();
  EXPECT_TRUE(std::regex_match(versions["openblas"].get<std::string>(), std::regex(R"(\d+\.\d+\.\d+)")))
      << versions.dump();
  EXPECT_EQ(mnist::cuda_version_text(12080), "12.8");
  EXPECT_EQ(mnist::cuda_version_text(13000), "13.0");
}

// The terminal summary of a Fashion-MNIST run ends each confusion row with its class's name and
// names its most confused pairs; an MNIST run's rows and pairs are digits and stay bare. Random
// counts, so each row is found by them.
TEST(Cli, AFashionSummaryNamesTheClassOfEachRow) {
  std::mt19937_64 rng(std::random_device{}());
  mnist::TrainResult result;
  for (auto& n : result.test.confusion) result.test.count += n = rng() % 1000;
  for (int c = 0; c < 10; ++c) result.test.correct += result.test.confusion[c * 10 + c];
  const char* const names[10] = {"T-shirt/top", "trouser", "pullover", "dress", "coat",
                                 "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
  for (const char* dataset : {"fashion", "mnist"}) {
    const std::string summary = mnist::format_summary(result, dataset);
    const bool fashion = std::string(dataset) == "fashion";
    EXPECT_NE(summary.find(fashion ? "(rows: true class," : "(rows: true digit,"), std::string::npos) << summary;
    for (int c = 0; c < 10; ++c) {
      std::string row = "  " + std::to_string(c) + " | ";
      char count[16];
      for (int p = 0; p < 10; ++p) {
        std::snprintf(count, sizeof count, "%6llu", result.test.confusion[c * 10 + p]);
        row += count;
      }
      row += fashion ? std::string("  ") + names[c] + "\n" : "\n";
      EXPECT_NE(summary.find(row), std::string::npos) << dataset << ": no row\n" << row << "in\n" << summary;
      EXPECT_EQ(mnist::class_name(dataset, c), fashion ? names[c] : "");
    }
    // The most confused pair, found here from the counts (a tie goes to the first in row order).
    int truth = 0, predicted = 1;
    for (int t = 0; t < 10; ++t)
      for (int p = 0; p < 10; ++p)
        if (t != p && result.test.confusion[t * 10 + p] > result.test.confusion[truth * 10 + predicted])
          truth = t, predicted = p;
    const std::string pair = (fashion ? std::string(names[truth]) + "→" + names[predicted]
                                      : std::to_string(truth) + "→" + std::to_string(predicted)) +
                             " (" + std::to_string(result.test.confusion[truth * 10 + predicted]) + ")";
    EXPECT_NE(summary.find("most confused:  " + pair), std::string::npos) << pair << " not first in\n" << summary;

    // report.json names the classes of a dataset that has names, for report.py.
    mnist::TrainConfig config;
    config.dataset = dataset;
    const nlohmann::json per_class = mnist::build_report(config, result)["test"]["per_class"];
    for (int c = 0; c < 10; ++c) {
      if (fashion)
        EXPECT_EQ(per_class[c].value("name", ""), names[c]) << per_class[c];
      else
        EXPECT_FALSE(per_class[c].contains("name")) << per_class[c];
    }
  }
}

// CLI11 alone said "A subcommand is required" for a word that is no command.
TEST(Cli, AnUnknownCommandIsNamed) {
  for (const char* word : {"frobnicate", "TRAIN", "evaluat"}) {
    const Outcome outcome = run_mnist(std::string(word) + " --epochs 0");
    EXPECT_EQ(outcome.status, 2) << word << ": " << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << word << ": " << outcome.output;
    EXPECT_NE(outcome.output.find("mnist: error: unknown command '" + std::string(word) +
                                  "'; the commands are train, evaluate, predict, augment, report"),
              std::string::npos)
        << outcome.output;
  }
}

// A directory that is not empty but holds no run is not called a run.
TEST(Cli, ANonEmptyOutDirectoryWithoutARunIsSaidSo) {
  const fs::path out = fresh_temp_dir("not-a-run");
  fs::create_directories(out);
  mnist::test::write_text(out / "notes.txt", "mine\n");
  const Outcome outcome =
      run_mnist("train --device cpu --train-subset 200 --batch-size 50 --epochs 1 --hidden 8 --no-report --out " +
                out.string());
  EXPECT_EQ(outcome.status, 2) << outcome.output;
  EXPECT_NE(outcome.output.find("--out " + out.string() + " is not empty (and holds no run)"), std::string::npos)
      << outcome.output;
  fs::remove_all(out);
}

TEST(Cli, MissingSubcommandIsOneLineAndNonZero) {
  const Outcome outcome = run_mnist("");
  EXPECT_NE(outcome.status, 0);
  EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
}

struct BadOption {
  const char* args;
  const char* must_mention;
};

class CliBadOption : public ::testing::TestWithParam<BadOption> {};

TEST_P(CliBadOption, IsOneClearLineAndNonZeroExit) {
  const BadOption bad = GetParam();
  const Outcome outcome = run_mnist(std::string("train --device cpu ") + bad.args);
  EXPECT_NE(outcome.status, 0) << outcome.output;
  EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
  EXPECT_NE(outcome.output.find(bad.must_mention), std::string::npos) << outcome.output;
  EXPECT_EQ(outcome.output.find("terminate"), std::string::npos) << outcome.output;
}

INSTANTIATE_TEST_SUITE_P(
    Options, CliBadOption,
    ::testing::Values(BadOption{"--bogus", "--bogus"}, BadOption{"frobnicate", "frobnicate"},
                      BadOption{"--batch-size 0", "--batch-size"}, BadOption{"--batch-size -5", "--batch-size"},
                      BadOption{"--batch-size abc", "--batch-size"}, BadOption{"--batch-size 1000000", "--batch-size"},
                      BadOption{"--batch-size 60000", "--batch-size"}, BadOption{"--epochs 0", "--epochs"},
                      BadOption{"--lr 0", "--lr"}, BadOption{"--lr -1", "--lr"}, BadOption{"--lr nan", "--lr"},
                      BadOption{"--lr inf", "--lr"}, BadOption{"--lr", "--lr"},
                      BadOption{"--dropout 1", "--dropout"}, BadOption{"--dropout -0.1", "--dropout"},
                      BadOption{"--val-split 1", "--val-split"}, BadOption{"--val-split -0.5", "--val-split"},
                      BadOption{"--hidden 0", "--hidden"}, BadOption{"--hidden 512,0", "--hidden"},
                      BadOption{"--dataset cifar", "--dataset"}, BadOption{"--device tpu", "--device"},
                      BadOption{"--train-subset 60000", "--train-subset"},
                      BadOption{"--model rnn", "--model"}, BadOption{"--model cnn --hidden 64,64", "one dense layer"},
                      BadOption{"--model cnn --kernel 4", "--kernel must be an odd"},
                      BadOption{"--model cnn --kernel 0", "--kernel"}, BadOption{"--model cnn --channels 8", "--channels"},
                      BadOption{"--model cnn --channels 8,0", "--channels"}, BadOption{"--model cnn --hidden 0", "--hidden"},
                      BadOption{"--kernel 3", "--kernel is an option of --model cnn"},
                      BadOption{"--channels 8,8", "--channels is an option of --model cnn"},
                      BadOption{"--data-dir /nonexistent/mnist", "data/fetch.sh"},
                      // -1 and 10^20 used to pass as 2^64 - 1, and an empty path as "not given". The
                      // --epochs 0 behind each makes a regression fail at once instead of training.
                      BadOption{"--seed -1 --epochs 0", "--seed: must be"},
                      BadOption{"--seed 18446744073709551616 --epochs 0", "--seed: must be"},
                      BadOption{"--seed 0x10 --epochs 0", "--seed: must be"},
                      BadOption{"--out '' --epochs 0", "--out: is empty"},
                      BadOption{"--resume '' --epochs 0", "--resume: is empty"},
                      BadOption{"--data-dir '' --epochs 0", "--data-dir: is empty"},
                      // CLI11's own list splitting dropped empty items ('512,,512' trained 512-512).
                      BadOption{"--hidden 512,,512 --epochs 0", "--hidden: '512,,512' has an empty item"},
                      BadOption{"--hidden 512, --epochs 0", "--hidden: '512,' has an empty item"},
                      BadOption{"--hidden , --epochs 0", "--hidden: ',' has an empty item"},
                      BadOption{"--hidden '' --epochs 0", "--hidden: is empty"},
                      BadOption{"--hidden 512,abc --epochs 0", "--hidden: 'abc' is not a whole number"},
                      BadOption{"--hidden 512,-8 --epochs 0", "--hidden: '-8' is not a whole number"},
                      BadOption{"--hidden 99999999999 --epochs 0", "--hidden: '99999999999' is far too large"},
                      BadOption{"--model cnn --channels 8,,8 --epochs 0", "--channels: '8,,8' has an empty item"},
                      // CLI11 took '' as 0 and read 0x10 (and 0x1p-3) as hexadecimal.
                      // (--epochs 0x0: a second --epochs would be refused as a repeat; 0 ends at once.)
                      BadOption{"--epochs 0x0", "--epochs: must be a whole number (in decimal), got '0x0'"},
                      BadOption{"--batch-size 0x40 --epochs 0", "--batch-size: must be a whole number (in decimal)"},
                      BadOption{"--train-subset '' --epochs 0", "--train-subset: is empty; give a whole number"},
                      BadOption{"--model cnn --kernel 0x3 --epochs 0", "--kernel: must be a whole number"},
                      BadOption{"--dropout '' --epochs 0", "--dropout: is empty; give a number"},
                      BadOption{"--val-split '' --epochs 0", "--val-split: is empty; give a number"},
                      BadOption{"--weight-decay '' --epochs 0", "--weight-decay: is empty; give a number"},
                      BadOption{"--label-smoothing '' --epochs 0", "--label-smoothing: is empty; give a number"},
                      BadOption{"--lr 0x1p-3 --epochs 0", "--lr: must be a decimal number (like 0.001 or 1e-3)"},
                      BadOption{"--weight-decay 0x10 --epochs 0", "--weight-decay: must be a decimal number"},
                      BadOption{"--lr 1e-3x --epochs 0", "--lr: must be a decimal number"},
                      BadOption{"--lr-schedule linear --epochs 0", "--lr-schedule must be constant, cosine"},
                      BadOption{"--warmup-epochs 21", "--warmup-epochs must be in [0, --epochs]"},
                      BadOption{"--warmup-epochs -1", "--warmup-epochs"},
                      BadOption{"--min-lr 0.01", "--min-lr must be in [0, --lr]"},
                      BadOption{"--lr-decay 0", "--lr-decay must be in (0, 1]"},
                      BadOption{"--lr-decay 1.5", "--lr-decay"}, BadOption{"--lr-step 0", "--lr-step"},
                      BadOption{"--early-stop -1", "--early-stop"},
                      BadOption{"--early-stop 3 --val-split 0", "--early-stop watches the validation accuracy"},
                      BadOption{"--augment mixup", "--augment must be none, affine or elastic, got 'mixup'"},
                      BadOption{"--augment elastic --elastic-sigma -1", "--elastic-sigma must be in [0.5, 10]"},
                      BadOption{"--augment elastic --elastic-sigma 0", "--elastic-sigma must be in [0.5, 10]"},
                      BadOption{"--augment elastic --elastic-alpha nan", "--elastic-alpha must be in [0, 100]"},
                      BadOption{"--augment affine --rotate 181", "--rotate must be in [0, 180] (degrees)"},
                      BadOption{"--augment affine --shift 15", "--shift must be in [0, 14] (pixels)"},
                      BadOption{"--augment affine --shift -1", "--shift must be in [0, 14]"},
                      BadOption{"--augment affine --scale 0.6", "--scale must be in [0, 0.5]"},
                      BadOption{"--shift 3", "--shift, --rotate and --scale are options of --augment affine or elastic"},
                      BadOption{"--augment affine --elastic-sigma 3", "--elastic-alpha and --elastic-sigma are options"},
                      BadOption{"--recipe best", "--recipe must be mlp-best or cnn-best, got 'best'"}));

// A number of 60,000 characters is read, not a crash: the std::regex check it replaced recursed
// once a character and overflowed the stack (SIGSEGV) on such a value. (A single argument may be
// up to 128 KiB long on Linux.)
TEST(Cli, AVeryLongNumberIsCheckedWithoutCrashing) {
  const std::string long_decimal = "0.001" + std::string(60000, '0');  // 0.001, valid for --lr
  Outcome outcome = run_mnist("train --device cpu --lr " + long_decimal + " --epochs 0");
  EXPECT_EQ(outcome.status, 2) << outcome.output.substr(0, 300);
  EXPECT_EQ(outcome.output.rfind("mnist: error: --epochs", 0), 0) << outcome.output.substr(0, 300);
  outcome = run_mnist("train --device cpu --lr " + std::string(60000, '1') + "x --epochs 0");
  EXPECT_EQ(outcome.status, 2) << outcome.output.substr(0, 300);
  EXPECT_EQ(outcome.output.rfind("mnist: error: --lr: must be a decimal number", 0), 0)
      << outcome.output.substr(0, 300);
  EXPECT_EQ(line_count(outcome.output), 1);
}

// A model that passes the range checks but not into memory (here: a 3 GB address-space limit;
// 65536-65536 hidden layers are 17 GB of weights alone) ends with one clear line, not with
// "std::bad_alloc".
TEST(Cli, AModelLargerThanHostMemoryIsOneClearLine) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer reserves terabytes of address space: no limit can be set under it";
#endif
  const fs::path dir = fresh_temp_dir("huge");
  const Outcome outcome = run_program("ulimit -v 3000000 && " + std::string(MNIST_BINARY),
                                      "train --device cpu --train-subset 200 --epochs 1 --hidden 65536,65536 "
                                      "--no-report --out " + (dir / "run").string());
  fs::remove_all(dir);
  EXPECT_EQ(outcome.status, 1) << outcome.output;
  const std::string error = "\nmnist: error: out of host memory; try narrower --hidden layers";
  EXPECT_NE(outcome.output.find(error), std::string::npos) << outcome.output;
  EXPECT_EQ(outcome.output.find('\n', outcome.output.find(error) + 1), outcome.output.size() - 1)
      << "the error is not the last line: " << outcome.output;
}

// Whole numbers with leading zeros are decimal, as they read: CLI11 alone took 010 as octal 8.
TEST(Cli, LeadingZerosAreDecimal) {
  const fs::path out = fresh_temp_dir("zeros");
  const Outcome outcome = run_mnist("train --device cpu --train-subset 0200 --batch-size 010 --epochs 01 --hidden 8 "
                                    "--no-report --lr 0.0010 --seed 010 --out " + out.string());
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  const nlohmann::json config = nlohmann::json::parse(read_text(out / "report.json"))["config"];
  EXPECT_EQ(config["train_subset"], 200) << config;
  EXPECT_EQ(config["batch_size"], 10) << config;
  EXPECT_EQ(config["epochs"], 1) << config;
  EXPECT_EQ(config["lr"].get<double>(), 0.001) << config;
  EXPECT_EQ(config["seed"], 10) << config;
  fs::remove_all(out);
}

// --hidden and --channels take their numbers comma-separated, or as separate arguments.
TEST(Cli, ListOptionsTakeCommasOrSeparateArguments) {
  struct Case {
    std::string args;
    nlohmann::json hidden, channels;
  };
  for (const Case& c : {Case{"--hidden 12,7,5", {12, 7, 5}, nullptr}, Case{"--hidden 12 7 --hidden 5", {12, 7, 5}, nullptr},
                        Case{"--model cnn --kernel 1 --channels 3,2 --hidden 6", {6}, {3, 2}},
                        Case{"--model cnn --kernel 1 --channels 3 2", {1024}, {3, 2}}}) {
    const fs::path out = fresh_temp_dir("lists");
    const Outcome outcome = run_mnist("train --device cpu --train-subset 64 --batch-size 16 --epochs 1 --no-report " +
                                      c.args + " --out " + out.string());
    ASSERT_EQ(outcome.status, 0) << c.args << ": " << outcome.output;
    const nlohmann::json config = nlohmann::json::parse(read_text(out / "report.json"))["config"];
    EXPECT_EQ(config["hidden"], c.hidden) << c.args;
    if (!c.channels.is_null()) EXPECT_EQ(config["channels"], c.channels) << c.args;
    fs::remove_all(out);
  }
}

TEST(Cli, EmptyPathsOfTheOtherCommandsAreOneClearLine) {
  for (const char* args : {"evaluate --model ''", "evaluate --model m.ckpt --dataset ''",
                           "predict --model '' digit.png", "predict --model m.ckpt ''", "report ''"}) {
    const Outcome outcome = run_mnist(args);
    EXPECT_EQ(outcome.status, 2) << args << ": " << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << args << ": " << outcome.output;
    EXPECT_NE(outcome.output.find("is empty"), std::string::npos) << args << ": " << outcome.output;
  }
}

TEST(Cli, TheLargestSeedIsAccepted) {
  const fs::path out = fresh_temp_dir("seed");
  const Outcome outcome = run_mnist("train --device cpu --train-subset 256 --epochs 1 --hidden 16 --no-report "
                                    "--seed 18446744073709551615 --out " + out.string());
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  const nlohmann::json report = nlohmann::json::parse(read_text(out / "report.json"));
  EXPECT_EQ(report["config"]["seed"].get<std::uint64_t>(), 18446744073709551615ull);
  fs::remove_all(out);
}

TEST(Cli, TrainsOnTheCpuAndWritesTheRunDirectory) {
  // The foundation's end-to-end check: 10,000 training images, one epoch, one hidden layer
  // of 128, must reach 90% on the 10,000 test images. Batch 32 gives the epoch 313 steps
  // (about 91-92% measured; batch 128's 79 steps stop near 89%).
  const fs::path out = fresh_temp_dir("e2e");
  const Outcome outcome = run_mnist("train --device cpu --train-subset 10000 --epochs 1 --hidden 128 --batch-size 32 --out " +
                                    out.string());
  ASSERT_EQ(outcome.status, 0) << outcome.output;

  std::ifstream report_file(out / "report.json");
  ASSERT_TRUE(report_file) << "no report.json in " << out;
  const nlohmann::json report = nlohmann::json::parse(report_file);
  const double accuracy = report["test"]["accuracy"].get<double>();
  EXPECT_GE(accuracy, 0.90) << outcome.output;
  EXPECT_LE(accuracy, 1.0);
  EXPECT_EQ(report["config"]["hidden"], nlohmann::json::array({128}));
  unsigned long long total = 0, diagonal = 0;
  for (int t = 0; t < 10; ++t)
    for (int p = 0; p < 10; ++p) {
      total += report["test"]["confusion"][t][p].get<unsigned long long>();
      if (t == p) diagonal += report["test"]["confusion"][t][p].get<unsigned long long>();
    }
  EXPECT_EQ(total, 10000u);
  EXPECT_NEAR(double(diagonal) / total, accuracy, 1e-12);
  // The versions the run was trained with, as this process reads them from the same libraries.
  EXPECT_EQ(report["versions"], mnist::program_versions()) << report["versions"].dump();

  std::ifstream metrics_file(out / "metrics.jsonl");
  std::string line;
  int epochs = 0;
  while (std::getline(metrics_file, line)) {
    const nlohmann::json epoch = nlohmann::json::parse(line);
    EXPECT_EQ(epoch["epoch"], ++epochs);
    for (const char* key : {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"})
      EXPECT_TRUE(epoch[key].is_number()) << key;
  }
  EXPECT_EQ(epochs, 1);
  EXPECT_NE(outcome.output.find("most confused"), std::string::npos) << outcome.output;

  // What `mnist train` draws at the end (tests/test_report_command.cu checks the contents).
  for (const char* name : {"errors.json", "curves.png", "confusion.png", "errors.png", "report.md"})
    EXPECT_TRUE(fs::is_regular_file(out / name)) << name << " missing; output:\n" << outcome.output;
  EXPECT_EQ(outcome.output.find("mnist: warning"), std::string::npos) << outcome.output;

  // The same directory again is refused unless --force.
  const Outcome again = run_mnist("train --device cpu --train-subset 1000 --epochs 1 --hidden 8 --out " + out.string());
  EXPECT_EQ(again.status, 2) << again.output;
  EXPECT_NE(again.output.find("--force"), std::string::npos) << again.output;
  fs::remove_all(out);
}

// The rate of each epoch's last step goes to metrics.jsonl and the epoch line: with a cosine
// schedule over 3 epochs and one epoch of warm-up, the peak after epoch 1, min-lr at the end.
TEST(Cli, TheLearningRateScheduleIsLoggedEachEpoch) {
  const fs::path out = fresh_temp_dir("schedule");
  const Outcome outcome = run_mnist("train --device cpu --train-subset 1000 --epochs 3 --hidden 8 --no-report "
                                    "--lr 0.002 --lr-schedule cosine --warmup-epochs 1 --min-lr 0.0001 --out " +
                                    out.string());
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  std::ifstream metrics_file(out / "metrics.jsonl");
  std::vector<double> rates;
  for (std::string line; std::getline(metrics_file, line);) rates.push_back(nlohmann::json::parse(line).at("lr"));
  ASSERT_EQ(rates.size(), 3u);
  EXPECT_FLOAT_EQ(float(rates[0]), 0.002f);
  EXPECT_GT(rates[1], 0.0001);
  EXPECT_LT(rates[1], 0.002);
  EXPECT_FLOAT_EQ(float(rates[2]), 0.0001f);
  EXPECT_NE(outcome.output.find("lr 0.002"), std::string::npos) << outcome.output;
  const nlohmann::json report = nlohmann::json::parse(read_text(out / "report.json"));
  EXPECT_EQ(report["config"]["lr_schedule"], "cosine");
  fs::remove_all(out);
}

// --early-stop 2: once the rate collapses after epoch 1 (step schedule, factor 1e-6), the
// validation accuracy stops improving, and the run stops two epochs after its best, says so,
// keeps best.ckpt at the best epoch and records it in report.json.
TEST(Cli, EarlyStopEndsTheRunAfterItsPatience) {
  const fs::path out = fresh_temp_dir("early-stop");
  const Outcome outcome = run_mnist("train --device cpu --train-subset 1000 --epochs 10 --hidden 8 --no-report "
                                    "--lr-schedule step --lr-step 1 --lr-decay 0.000001 --early-stop 2 --out " +
                                    out.string());
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  const nlohmann::json report = nlohmann::json::parse(read_text(out / "report.json"));
  ASSERT_TRUE(report["early_stop"].is_object()) << report.dump();
  const int best = report["early_stop"]["best_epoch"], stopped = report["early_stop"]["stopped_after_epoch"];
  EXPECT_LE(best, 2);
  EXPECT_EQ(stopped, best + 2);
  EXPECT_EQ(report["early_stop"]["patience"], 2);
  EXPECT_EQ(report["epochs"].size(), std::size_t(stopped));
  EXPECT_NE(outcome.output.find("early stop after epoch " + std::to_string(stopped) + " of 10"), std::string::npos)
      << outcome.output;
  EXPECT_NE(outcome.output.find("test: accuracy"), std::string::npos) << "the test set is still evaluated";

  // Resumed, the count goes on from the best epoch in the run's log: one more epoch, then a stop.
  const Outcome resumed = run_mnist("train --device cpu --train-subset 1000 --epochs 10 --hidden 8 --no-report "
                                    "--lr-schedule step --lr-step 1 --lr-decay 0.000001 --early-stop 2 --resume " +
                                    (out / "last.ckpt").string());
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("early stop after epoch " + std::to_string(stopped + 1) + " of 10"),
            std::string::npos)
      << resumed.output;
  fs::remove_all(out);

  // Without --early-stop the same run goes all the way, and report.json says there was no stop.
  const Outcome full = run_mnist("train --device cpu --train-subset 1000 --epochs 3 --hidden 8 --no-report --out " +
                                 out.string());
  ASSERT_EQ(full.status, 0) << full.output;
  EXPECT_TRUE(nlohmann::json::parse(read_text(out / "report.json"))["early_stop"].is_null());
  fs::remove_all(out);
}

TEST(Cli, WithoutAValidationSplitSaysSoAndKeepsBestEqualToLast) {
  // --val-split 0: nothing is held out, so the epoch line says so instead of printing NaN,
  // metrics.jsonl has null validation fields, and every epoch is the "best" one.
  const fs::path out = fresh_temp_dir("noval");
  const Outcome outcome = run_mnist("train --device cpu --train-subset 500 --epochs 2 --hidden 8 --val-split 0 "
                                    "--no-report --out " + out.string());
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  EXPECT_NE(outcome.output.find("training 500 images, validating on 0"), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("(no validation split)"), std::string::npos) << outcome.output;
  EXPECT_EQ(outcome.output.find("nan"), std::string::npos) << outcome.output;

  std::ifstream metrics_file(out / "metrics.jsonl");
  std::string line;
  int epochs = 0;
  while (std::getline(metrics_file, line)) {
    const nlohmann::json epoch = nlohmann::json::parse(line);
    ++epochs;
    EXPECT_TRUE(epoch["val_loss"].is_null()) << line;
    EXPECT_TRUE(epoch["val_accuracy"].is_null()) << line;
    EXPECT_TRUE(epoch["train_loss"].is_number()) << line;
  }
  EXPECT_EQ(epochs, 2);
  ASSERT_TRUE(fs::is_regular_file(out / "best.ckpt"));
  EXPECT_EQ(read_text(out / "best.ckpt"), read_text(out / "last.ckpt"));
  fs::remove_all(out);
}

}  // namespace

namespace mnist {
namespace {

// `mnist augment`: the grid is the originals (zoomed, exactly), a gap, then the versions; the same
// seed draws the same picture and another seed another one.
TEST(AugmentCli, DrawsTheOriginalsBesideTheirVersions) {
  const fs::path dir = fresh_temp_dir("augment");
  fs::create_directories(dir);
  const std::string a = (dir / "a.png").string(), b = (dir / "b.png").string(), c = (dir / "c.png").string();
  const std::string options = " --augment elastic --rows 3 --versions 4 --zoom 2";
  Outcome outcome = run_mnist("augment --out " + a + options);
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  EXPECT_NE(outcome.output.find("3 training images (left) and 4 augmented versions"), std::string::npos)
      << outcome.output;
  ASSERT_EQ(run_mnist("augment --out " + b + options).status, 0);
  ASSERT_EQ(run_mnist("augment --out " + c + options + " --seed 2").status, 0);

  const auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
  };
  const GrayImage grid = decode_image(bytes(a), a);
  ASSERT_EQ(grid.width, (28 * 5 + 4) * 2);
  ASSERT_EQ(grid.height, 28 * 3 * 2);
  // Rows: the first 0, 1 and 2 of the training set, zoomed 2×.
  const Dataset data = load_dataset("data/mnist");
  for (int row = 0; row < 3; ++row) {
    const auto first = std::find(data.train.labels.begin(), data.train.labels.end(), row) - data.train.labels.begin();
    for (int y = 0; y < 56; ++y)
      for (int x = 0; x < 56; ++x)
        ASSERT_EQ(grid.pixels[std::size_t(row * 56 + y) * grid.width + x],
                  data.train.pixels[std::size_t(first) * kPixels + (y / 2) * 28 + x / 2])
            << "row " << row << " at (" << x << ", " << y << ")";
  }
  EXPECT_EQ(bytes(a), bytes(b));
  EXPECT_NE(decode_image(bytes(c), c).pixels, grid.pixels);

  outcome = run_mnist("augment --out " + a + " --augment none");
  EXPECT_EQ(outcome.status, 2);
  EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
  outcome = run_mnist("augment --out " + a + " --rotate 200");
  EXPECT_EQ(outcome.status, 2);
  EXPECT_NE(outcome.output.find("--rotate must be in [0, 180]"), std::string::npos) << outcome.output;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mnist
