// What a finished run leaves for people to look at: the choice of the most confident mistakes
// (include/mnist/train/misclassified.h) on crafted logits, the trainer's logits, and `mnist report` and
// `mnist train` end to end (errors.json, curves.png, confusion.png, errors.png, report.md).
// The end-to-end tests need python3 with matplotlib (python3-matplotlib), as CI installs it.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli_util.h"
#include "mnist/io/checkpoint.h"
#include "mnist/train/misclassified.h"
#include "mnist/data/idx.h"
#include "mnist/train/trainer.h"
#include "test_util.h"

namespace mnist {
namespace {

namespace fs = std::filesystem;
using test::fresh_temp_dir;
using test::line_count;
using test::Outcome;
using test::read_text;
using test::run_mnist;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// One row of logits: `high` at class `predicted`, 0 elsewhere.
std::vector<float> peaked(int predicted, float high) {
  std::vector<float> row(kClasses, 0.f);
  row[predicted] = high;
  return row;
}

// softmax at the peak of peaked(): e^high / (e^high + 9).
double peak_probability(float high) { return 1.0 / (1.0 + 9.0 * std::exp(-double(high))); }

struct Rows {
  std::vector<float> logits;
  std::vector<std::uint8_t> labels;
  void add(const std::vector<float>& row, int label) {
    logits.insert(logits.end(), row.begin(), row.end());
    labels.push_back(std::uint8_t(label));
  }
  int count() const { return int(labels.size()); }
  std::vector<Misclassified> errors(std::size_t how_many = kReportedErrors) const {
    return most_confident_errors(logits.data(), labels.data(), count(), how_many);
  }
};

std::vector<int> indices_of(const std::vector<Misclassified>& errors) {
  std::vector<int> out;
  for (const Misclassified& e : errors) out.push_back(e.index);
  return out;
}

// --- choosing the errors ---------------------------------------------------------------------

TEST(MostConfidentErrors, OnlyMistakesMostConfidentFirst) {
  Rows rows;
  rows.add(peaked(3, 5.f), 3);  // 0: right, however confident
  rows.add(peaked(1, 2.f), 7);  // 1: wrong
  rows.add(peaked(4, 6.f), 9);  // 2: wrong, the most confident
  rows.add(peaked(0, 1.f), 0);  // 3: right
  rows.add(peaked(8, 4.f), 3);  // 4: wrong
  const std::vector<Misclassified> errors = rows.errors();
  ASSERT_EQ(indices_of(errors), (std::vector<int>{2, 4, 1}));
  EXPECT_EQ(errors[0].truth, 9);
  EXPECT_EQ(errors[0].predicted, 4);
  EXPECT_EQ(errors[1].truth, 3);
  EXPECT_EQ(errors[1].predicted, 8);
  EXPECT_EQ(errors[2].truth, 7);
  EXPECT_EQ(errors[2].predicted, 1);
  EXPECT_NEAR(errors[0].probability, peak_probability(6.f), 1e-15);
  EXPECT_NEAR(errors[1].probability, peak_probability(4.f), 1e-15);
  EXPECT_NEAR(errors[2].probability, peak_probability(2.f), 1e-15);
}

TEST(MostConfidentErrors, EqualProbabilitiesGoInIndexOrder) {
  Rows rows;
  for (int i = 0; i < 10; ++i) rows.add(peaked(i % 2 ? 5 : 6, 3.f), 0);  // all wrong, all equally sure
  EXPECT_EQ(indices_of(rows.errors()), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(indices_of(rows.errors(3)), (std::vector<int>{0, 1, 2}));
  // Logits far enough apart round every probability to exactly 1: the index decides.
  Rows sure;
  for (int i = 0; i < 5; ++i) sure.add(peaked(2, 100.f + float(i)), 1);
  const std::vector<Misclassified> errors = sure.errors();
  for (const Misclassified& e : errors) EXPECT_EQ(e.probability, 1.0);
  EXPECT_EQ(indices_of(errors), (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(MostConfidentErrors, KeepsTheTop36OfMany) {
  std::mt19937_64 rng(test::fresh_seed());
  Rows rows;
  const int count = 2000;
  rows.logits = test::random_floats(rng, std::size_t(count) * kClasses, -4.f, 4.f);
  rows.labels = test::random_labels(rng, std::size_t(count));
  const std::vector<Misclassified> errors = rows.errors();
  ASSERT_EQ(errors.size(), kReportedErrors);

  // Brute force: every mistake with its probability computed here, sorted the documented way.
  std::vector<Misclassified> all;
  for (int i = 0; i < count; ++i) {
    const float* z = rows.logits.data() + std::size_t(i) * kClasses;
    const int predicted = int(std::max_element(z, z + kClasses) - z);  // the first maximum
    if (predicted == rows.labels[i]) continue;
    double sum = 0;
    for (int c = 0; c < kClasses; ++c) sum += std::exp(double(z[c]));
    all.push_back({i, int(rows.labels[i]), predicted, std::exp(double(z[predicted])) / sum});
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const Misclassified& a, const Misclassified& b) { return a.probability > b.probability; });
  for (std::size_t k = 0; k < kReportedErrors; ++k) {
    EXPECT_EQ(errors[k].index, all[k].index) << "rank " << k;
    EXPECT_EQ(errors[k].truth, all[k].truth);
    EXPECT_EQ(errors[k].predicted, all[k].predicted);
    EXPECT_NEAR(errors[k].probability, all[k].probability, 1e-12);
  }
  EXPECT_GT(errors.back().probability, all[kReportedErrors].probability - 1e-12);
}

TEST(MostConfidentErrors, TheFirstMaximumIsThePrediction) {
  Rows rows;
  std::vector<float> tie(kClasses, 0.f);
  tie[3] = tie[7] = 2.f;
  rows.add(tie, 3);  // predicted 3 (the first of the two maxima): right
  rows.add(tie, 7);  // predicted 3: wrong, with probability e^2 / (2e^2 + 8)
  const std::vector<Misclassified> errors = rows.errors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].index, 1);
  EXPECT_EQ(errors[0].predicted, 3);
  EXPECT_NEAR(errors[0].probability, std::exp(2.0) / (2 * std::exp(2.0) + 8), 1e-15);
}

TEST(MostConfidentErrors, LargeLogitsDoNotOverflow) {
  Rows rows;
  std::vector<float> row(kClasses, -1000.f);
  row[5] = 1000.f;
  row[6] = 999.f;
  rows.add(row, 6);
  const std::vector<Misclassified> errors = rows.errors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NEAR(errors[0].probability, 1.0 / (1.0 + std::exp(-1.0)), 1e-15);
}

TEST(MostConfidentErrors, LeavesOutNonFiniteRowsAndUnknownLabels) {
  Rows rows;
  std::vector<float> nan_row = peaked(4, 3.f);
  nan_row[2] = kNaN;
  rows.add(nan_row, 0);
  rows.add(std::vector<float>(kClasses, kNaN), 1);
  rows.add(peaked(4, kInf), 0);
  rows.add(peaked(4, 3.f), 10);  // no such digit
  rows.add(peaked(4, 3.f), 0);   // the one real mistake
  EXPECT_EQ(indices_of(rows.errors()), (std::vector<int>{4}));
  EXPECT_TRUE(Rows{}.errors().empty());
  EXPECT_TRUE(rows.errors(0).empty());
}

// --- errors.json -------------------------------------------------------------------------------

TEST(ErrorsJson, HoldsEachErrorWithItsPixels) {
  std::mt19937_64 rng(test::fresh_seed());
  const int count = 5;
  std::vector<std::uint8_t> pixels(std::size_t(count) * kPixels);
  for (auto& p : pixels) p = std::uint8_t(rng());
  const std::vector<std::uint8_t> labels{1, 2, 3, 4, 5};
  const ImageSlice slice{pixels.data(), labels.data(), count};
  const std::vector<Misclassified> errors{{3, 4, 9, 0.75}, {0, 1, 7, 0.5}};

  const nlohmann::json doc = nlohmann::json::parse(errors_json(errors, slice, "fashion"));
  EXPECT_EQ(doc["dataset"], "fashion");
  ASSERT_EQ(doc["errors"].size(), 2u);
  for (std::size_t k = 0; k < errors.size(); ++k) {
    const nlohmann::json& e = doc["errors"][k];
    EXPECT_EQ(e["index"], errors[k].index);
    EXPECT_EQ(e["true"], errors[k].truth);
    EXPECT_EQ(e["predicted"], errors[k].predicted);
    EXPECT_EQ(e["probability"].get<double>(), errors[k].probability);
    const std::uint8_t* image = pixels.data() + std::size_t(errors[k].index) * kPixels;
    EXPECT_EQ(e["pixels"].get<std::vector<int>>(), std::vector<int>(image, image + kPixels));
  }
  const nlohmann::json empty = nlohmann::json::parse(errors_json({}, slice, "mnist"));
  EXPECT_EQ(empty, nlohmann::json::parse(R"({"dataset": "mnist", "errors": []})"));
}

// --- the trainer's logits --------------------------------------------------------------------

TEST(CpuTrainerLogits, AgreeWithEvaluateAcrossChunks) {
  std::mt19937_64 rng(test::fresh_seed());
  const int count = 2345;  // more than one evaluation chunk of 1,000
  std::vector<std::uint8_t> pixels(std::size_t(count) * kPixels);
  for (auto& p : pixels) p = std::uint8_t(rng());
  const std::vector<std::uint8_t> labels = test::random_labels(rng, std::size_t(count));
  const ImageSlice slice{pixels.data(), labels.data(), count};
  TrainConfig config;
  config.hidden = {32};
  config.seed = rng();
  DataSplit split;
  split.train = split.test = slice;
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, split);
  trainer->train_epoch(1);

  const std::vector<float> logits = trainer->logits(slice);
  ASSERT_EQ(logits.size(), std::size_t(count) * kClasses);
  std::vector<std::int32_t> predictions(count, -1);
  const EvalTotals totals = trainer->evaluate(slice, predictions.data());
  double loss = 0;
  for (int i = 0; i < count; ++i) {
    const float* z = logits.data() + std::size_t(i) * kClasses;
    ASSERT_EQ(int(std::max_element(z, z + kClasses) - z), predictions[i]) << "image " << i;
    const double top = *std::max_element(z, z + kClasses);
    double sum = 0;
    for (int c = 0; c < kClasses; ++c) sum += std::exp(double(z[c]) - top);
    loss += std::log(sum) + top - double(z[labels[i]]);
  }
  EXPECT_NEAR(loss, totals.loss_sum, 1e-5 * totals.loss_sum);
  EXPECT_TRUE(trainer->logits(ImageSlice{pixels.data(), labels.data(), 0}).empty());
}

// --- `mnist report` and `mnist train` end to end ---------------------------------------------

const char* const kReportFiles[] = {"curves.png", "confusion.png", "errors.png", "report.md"};

void expect_report_files(const fs::path& run, const std::string& output) {
  for (const char* name : kReportFiles) {
    const fs::path file = run / name;
    ASSERT_TRUE(fs::is_regular_file(file)) << file << " not written; output:\n" << output;
    EXPECT_GT(fs::file_size(file), 1000u) << file;
    if (file.extension() == ".png") EXPECT_EQ(read_text(file).substr(0, 8), "\x89PNG\r\n\x1a\n") << file;
  }
  for (const auto& entry : fs::directory_iterator(run))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << "left behind: " << entry.path();
}

TEST(ReportCommand, DrawsTheFixtureRunInADirectoryWithSpaces) {
  const fs::path parent = fresh_temp_dir("report");
  const fs::path run = parent / "a run's directory";
  fs::copy("tests/data/run_fixture", run, fs::copy_options::recursive);
  const Outcome outcome = run_mnist("report \"" + run.string() + "\"");
  EXPECT_EQ(outcome.status, 0) << outcome.output;
  expect_report_files(run, outcome.output);
  EXPECT_NE(read_text(run / "report.md").find("98.72%"), std::string::npos);
  fs::remove_all(parent);
}

TEST(ReportCommand, AMissingDirectoryIsOneLineAndNonZero) {
  const Outcome outcome = run_mnist("report /nonexistent/run");
  EXPECT_NE(outcome.status, 0) << outcome.output;
  EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
  EXPECT_NE(outcome.output.find("/nonexistent/run"), std::string::npos) << outcome.output;

  const Outcome no_argument = run_mnist("report");
  EXPECT_EQ(no_argument.status, 2) << no_argument.output;
  EXPECT_EQ(line_count(no_argument.output), 1) << no_argument.output;
}

TEST(ReportCommand, ARunWithoutReportJsonIsAFailure) {
  const fs::path run = fresh_temp_dir("report-empty");
  const Outcome outcome = run_mnist("report " + run.string());
  EXPECT_EQ(outcome.status, 1) << outcome.output;
  EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
  EXPECT_NE(outcome.output.find("report.json"), std::string::npos) << outcome.output;
  fs::remove_all(run);
}

const char* const kQuickTraining = "train --device cpu --train-subset 2000 --epochs 1 --hidden 32 --out ";

TEST(TrainReport, LeavesErrorsJsonAndThePictures) {
  const fs::path run = fresh_temp_dir("train-report");
  const Outcome outcome = run_mnist(kQuickTraining + run.string());
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  EXPECT_EQ(outcome.output.find("mnist: warning"), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("most confused"), std::string::npos) << outcome.output;
  expect_report_files(run, outcome.output);

  const Dataset data = load_dataset("data/mnist");
  const nlohmann::json doc = nlohmann::json::parse(read_text(run / "errors.json"));
  EXPECT_EQ(doc["dataset"], "mnist");
  const nlohmann::json& errors = doc["errors"];
  ASSERT_TRUE(errors.is_array());
  ASSERT_GE(errors.size(), 1u);  // one epoch on 2,000 images gets hundreds wrong
  ASSERT_LE(errors.size(), kReportedErrors);
  double previous = 1.0;
  for (const nlohmann::json& e : errors) {
    const int index = e["index"].get<int>();
    ASSERT_GE(index, 0);
    ASSERT_LT(index, int(data.test.count()));
    EXPECT_EQ(e["true"].get<int>(), int(data.test.labels[index]));
    EXPECT_NE(e["predicted"], e["true"]);
    EXPECT_GE(e["predicted"].get<int>(), 0);
    EXPECT_LT(e["predicted"].get<int>(), kClasses);
    const double p = e["probability"].get<double>();
    EXPECT_GE(p, 0.1);  // the largest of ten probabilities
    EXPECT_LE(p, previous);
    previous = p;
    const std::uint8_t* image = data.test.pixels.data() + std::size_t(index) * kPixels;
    EXPECT_EQ(e["pixels"].get<std::vector<int>>(), std::vector<int>(image, image + kPixels));
  }

  // They are the most confident mistakes of the model the run ended with (last.ckpt).
  TrainConfig config;
  config.hidden = {32};
  DataSplit split;
  split.test = ImageSlice{data.test.pixels.data(), data.test.labels.data(), int(data.test.count())};
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, split);
  trainer->load_state(read_checkpoint((run / "last.ckpt").string()).state);
  const std::vector<float> logits = trainer->logits(split.test);
  const std::vector<Misclassified> want = most_confident_errors(logits.data(), split.test.labels, split.test.count);
  ASSERT_EQ(errors.size(), want.size());
  for (std::size_t k = 0; k < want.size(); ++k) {
    EXPECT_EQ(errors[k]["index"], want[k].index) << "rank " << k;
    EXPECT_EQ(errors[k]["probability"].get<double>(), want[k].probability) << "rank " << k;
  }
  fs::remove_all(run);
}

TEST(TrainReport, NoReportWritesErrorsJsonButNoPictures) {
  const fs::path run = fresh_temp_dir("train-no-report");
  const Outcome outcome = run_mnist(kQuickTraining + run.string() + " --no-report");
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  EXPECT_TRUE(fs::is_regular_file(run / "errors.json")) << outcome.output;
  for (const char* name : kReportFiles) EXPECT_FALSE(fs::exists(run / name)) << name;
  // Drawn later by `mnist report`.
  const Outcome report = run_mnist("report " + run.string());
  EXPECT_EQ(report.status, 0) << report.output;
  expect_report_files(run, report.output);
  fs::remove_all(run);
}

// A copy of the binary with a report.py of our own beside it: that script is the one run (the
// build's copy is preferred to the source tree's), and its failure does not fail the training.
TEST(TrainReport, AFailingReportIsOneWarningNotAFailedTraining) {
  const fs::path dir = fresh_temp_dir("report-broken");
  const fs::path binary = dir / "mnist";
  fs::copy_file(MNIST_BINARY, binary);
  test::write_text(dir / "report.py", "import sys\nprint('report: broken on purpose', file=sys.stderr)\nsys.exit(4)\n");
  const auto run = [&](const std::string& args) { return test::run_program(binary.string(), args); };
  const fs::path out = dir / "run";
  const Outcome training = run(kQuickTraining + out.string());
  EXPECT_EQ(training.status, 0) << training.output;
  EXPECT_NE(training.output.find("report: broken on purpose"), std::string::npos) << training.output;
  EXPECT_NE(training.output.find("mnist: warning: no report drawn"), std::string::npos) << training.output;
  EXPECT_TRUE(fs::is_regular_file(out / "errors.json"));
  EXPECT_EQ(run("report " + out.string()).status, 4);  // `mnist report` passes the status on (3 is taken)
  fs::remove_all(dir);
}

// A report drawn whose path the script could not print (its exit status 3: stdout on a full
// disk, or closed) fails the training's command with exit 1, as mnist's own failed output does;
// it used to exit 0, so a script saw success although the output was incomplete.
TEST(TrainReport, AReportWhosePathCouldNotBePrintedFailsTheCommand) {
  const fs::path dir = fresh_temp_dir("report-unprinted");
  const fs::path binary = dir / "mnist";
  fs::copy_file(MNIST_BINARY, binary);
  test::write_text(dir / "report.py",
                   "import sys\nprint('mnist: writing to standard output failed (test); the report is drawn: x', "
                   "file=sys.stderr)\nsys.exit(3)\n");
  const fs::path out = dir / "run";
  const Outcome training = test::run_program(binary.string(), kQuickTraining + out.string());
  EXPECT_EQ(training.status, 1) << training.output;
  EXPECT_NE(training.output.find("the report is drawn: x"), std::string::npos) << training.output;
  EXPECT_EQ(training.output.find("warning: no report drawn"), std::string::npos) << training.output;
  EXPECT_TRUE(fs::is_regular_file(out / "report.json"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mnist
