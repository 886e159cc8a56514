// Every way a training can go wrong at run time is answered with one clear line and loses
// nothing: a loss or parameter that turns NaN or infinite (TrainingDiverged, checkpoints left
// as they were), Ctrl-C (last.ckpt saved mid-epoch, a resume that ends with the very bytes of
// an uninterrupted run, exit 130), running out of device memory (the size named, a smaller
// batch suggested) and an output directory that cannot be written (exit 2).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cli_util.h"
#include "mnist/io/checkpoint.h"
#include "mnist/core/check.h"
#include "mnist/core/config.h"
#include "mnist/core/device.h"
#include "mnist/model/mlp.h"
#include "mnist/train/run_dir.h"
#include "mnist/cli/train_command.h"
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

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Random images and labels: 700 in the training file, of which 600 train (batch 64: 9 full
// steps and a partial one) and 100 validate; 200 to test.
struct SyntheticData : test::RandomDataset {
  SyntheticData(std::mt19937_64& rng, const TrainConfig& config) : RandomDataset(rng, config, 700, 200) {}
};

TrainConfig small_config(std::uint64_t seed) {
  TrainConfig config;
  config.hidden = {24, 12};
  config.dropout = 0.3f;  // masks are keyed by the step: a resume at the wrong step shows
  config.batch_size = 64;
  config.val_split = 100.f / 700.f;
  config.epochs = 2;
  config.seed = seed;
  return config;
}

ModelState poisoned(ModelState state, std::vector<float> ModelState::*array, std::size_t index) {
  (state.*array)[index] = kNaN;
  return state;
}

std::string diverged_message(Trainer& trainer, int epoch) {
  try {
    trainer.train_epoch(epoch);
  } catch (const TrainingDiverged& diverged) {
    return diverged.what();
  }
  return "(no TrainingDiverged)";
}

// --- divergence ------------------------------------------------------------------------------

// A NaN output bias makes every logit and so the first batch's loss NaN; a NaN in Adam's second
// moment leaves the loss finite but turns the parameters NaN at the first update. Either stops
// the epoch at that step, named within the epoch and globally.
void expect_divergence_found(Trainer& trainer, const ModelState& clean, const std::string& device) {
  SCOPED_TRACE(device);
  const std::size_t last = clean.params.size() - 1;  // the output layer's last bias
  trainer.load_state(poisoned(clean, &ModelState::params, last));
  EXPECT_EQ(diverged_message(trainer, 2), "loss is NaN at epoch 2, step 1 (global step 11)");

  trainer.load_state(poisoned(clean, &ModelState::adam_v, 0));
  EXPECT_EQ(diverged_message(trainer, 2), "a parameter is NaN at epoch 2, step 1 (global step 11)");

  // Resumed mid-epoch at step 4 of 10: the fifth step of the epoch is the first one run.
  trainer.load_state(poisoned(clean, &ModelState::params, last));
  trainer.start_next_epoch_at(4);
  EXPECT_EQ(diverged_message(trainer, 2), "loss is NaN at epoch 2, step 5 (global step 11)");

  // A clean state trains on: nothing is left over from the divergence.
  trainer.load_state(clean);
  EXPECT_NO_THROW(trainer.train_epoch(2));
}

TEST(Divergence, CpuTrainerStopsAtTheFirstNonFiniteStep) {
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  const TrainConfig config = small_config(seed);
  const SyntheticData data(rng, config);
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, data.split());
  trainer->train_epoch(1);
  const ModelState clean = trainer->state();
  ASSERT_EQ(clean.step, 10);
  expect_divergence_found(*trainer, clean, "CPU");
}

TEST(GpuDivergence, GpuTrainerFindsTheFirstNonFiniteStepAtTheEpochEnd) {
  MNIST_REQUIRE_GPU();
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  const TrainConfig config = small_config(seed);
  const SyntheticData data(rng, config);
  for (bool graph : {true, false}) {
    TrainConfig c = config;
    c.no_graph = !graph;
    const std::unique_ptr<Trainer> trainer = make_gpu_trainer(c, data.split());
    trainer->train_epoch(1);  // captures the epoch graph: the poisoned epochs replay it
    ASSERT_EQ(trainer->replays_graphs(), graph);
    const ModelState clean = trainer->state();
    ASSERT_EQ(clean.step, 10);
    expect_divergence_found(*trainer, clean, graph ? "GPU, graph" : "GPU, stream launches");
  }
}

// Poisons the model at the start of one epoch, as a too-high learning rate would.
class PoisonedAtEpoch final : public Trainer {
 public:
  PoisonedAtEpoch(std::unique_ptr<Trainer> inner, int epoch) : inner_(std::move(inner)), epoch_(epoch) {}
  std::string device_name() const override { return inner_->device_name(); }
  bool replays_graphs() const override { return inner_->replays_graphs(); }
  int graph_steps() const override { return inner_->graph_steps(); }
  EvalTotals train_epoch(int epoch) override {
    if (epoch == epoch_) {
      const ModelState clean = inner_->state();
      inner_->load_state(poisoned(clean, &ModelState::params, clean.params.size() - 1));
    }
    return inner_->train_epoch(epoch);
  }
  EvalTotals evaluate(const ImageSlice& slice, std::int32_t* predictions) override {
    return inner_->evaluate(slice, predictions);
  }
  std::vector<float> logits(const ImageSlice& slice) override { return inner_->logits(slice); }
  ModelState state() const override { return inner_->state(); }
  void load_state(const ModelState& state) override { inner_->load_state(state); }

 private:
  std::unique_ptr<Trainer> inner_;
  int epoch_;
};

// The loop writes nothing for the diverged epoch and says which checkpoint is still good.
TEST(Divergence, TheLoopKeepsTheLastGoodCheckpointAndSaysSo) {
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  TrainConfig config = small_config(seed);
  config.epochs = 3;
  const SyntheticData data(rng, config);
  const fs::path dir = fresh_temp_dir("diverge-loop");
  RunDir run(dir.string(), true);
  PoisonedAtEpoch trainer(make_cpu_trainer(config, data.split()), 2);
  try {
    train(config, data.split(), trainer, run);
    ADD_FAILURE() << "no TrainingDiverged";
  } catch (const TrainingDiverged& diverged) {
    EXPECT_EQ(std::string(diverged.what()), "loss is NaN at epoch 2, step 1 (global step 11); " + dir.string() +
                                                "/last.ckpt still holds epoch 1; try a lower --lr");
    EXPECT_EQ(diverged.epoch(), 2);
    EXPECT_EQ(diverged.step(), 1);
    EXPECT_EQ(diverged.global_step(), 11);
  }
  const Checkpoint last = read_checkpoint((dir / "last.ckpt").string());
  EXPECT_EQ(last.epoch, 1);
  EXPECT_EQ(last.state.step, 10);
  for (float p : last.state.params) ASSERT_TRUE(std::isfinite(p));
  EXPECT_EQ(read_checkpoint((dir / "best.ckpt").string()).epoch, 1);
  EXPECT_EQ(line_count(read_text(dir / "metrics.jsonl")), 1);

  // Diverging in the first epoch: nothing was ever saved.
  const fs::path first = fresh_temp_dir("diverge-first");
  RunDir first_run(first.string(), true);
  PoisonedAtEpoch at_once(make_cpu_trainer(config, data.split()), 1);
  try {
    train(config, data.split(), at_once, first_run);
    ADD_FAILURE() << "no TrainingDiverged";
  } catch (const TrainingDiverged& diverged) {
    EXPECT_EQ(std::string(diverged.what()),
              "loss is NaN at epoch 1, step 1 (global step 1); no checkpoint was written; try a lower --lr");
  }
  EXPECT_FALSE(fs::exists(first / "last.ckpt"));
  EXPECT_FALSE(fs::exists(first / "best.ckpt"));
  fs::remove_all(dir);
  fs::remove_all(first);
}

// Through the command line: one line, exit 1, and the run directory exactly as it was.
TEST(DivergenceCli, IsOneLineAndLeavesTheRunDirectoryUntouched) {
  const fs::path dir = fresh_temp_dir("diverge-cli");
  const std::string options = "train --device cpu --train-subset 1000 --hidden 16 --batch-size 100 --no-report ";
  const Outcome first = run_mnist(options + "--epochs 1 --out " + dir.string());
  ASSERT_EQ(first.status, 0) << first.output;

  // A NaN output bias in last.ckpt: the resumed epoch 2 diverges at its first step.
  Checkpoint checkpoint = read_checkpoint((dir / "last.ckpt").string());
  ASSERT_EQ(checkpoint.state.step, 10);
  checkpoint.state.params.back() = kNaN;
  write_checkpoint((dir / "last.ckpt").string(), checkpoint);
  std::vector<std::pair<fs::path, std::string>> before;
  for (const auto& entry : fs::directory_iterator(dir)) before.emplace_back(entry.path(), read_text(entry.path()));

  const Outcome resumed = run_mnist(options + "--epochs 3 --resume " + (dir / "last.ckpt").string());
  EXPECT_EQ(resumed.status, 1) << resumed.output;
  const std::string want = "mnist: training diverged: loss is NaN at epoch 2, step 1 (global step 11); nothing was "
                           "saved since resuming; try a lower --lr\n";
  ASSERT_GE(resumed.output.size(), want.size()) << resumed.output;
  EXPECT_EQ(resumed.output.substr(resumed.output.size() - want.size()), want) << resumed.output;
  EXPECT_EQ(resumed.output.find("terminate"), std::string::npos) << resumed.output;
  for (const auto& [path, text] : before) EXPECT_TRUE(read_text(path) == text) << path << " changed";
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) files += entry.is_regular_file();
  EXPECT_EQ(files, before.size()) << "a file was added to " << dir;
  fs::remove_all(dir);
}

// --- interruption, in process ----------------------------------------------------------------

// A stop flag that is already set: the CPU trainer runs exactly one step and stops, so the
// chain below passes every step boundary of the run, mid-epoch and at the epoch ends.
TEST(Interrupt, StoppingAfterEveryStepEndsWithTheBytesOfAnUninterruptedRun) {
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  const TrainConfig config = small_config(seed);  // 2 epochs of 10 steps
  const SyntheticData data(rng, config);
  const fs::path whole = fresh_temp_dir("interrupt-whole"), part = fresh_temp_dir("interrupt-part");
  {
    RunDir run(whole.string(), true);
    const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, data.split());
    train(config, data.split(), *trainer, run);
  }

  const std::atomic<bool> stop{true};
  const std::string last = (part / "last.ckpt").string();
  std::vector<std::string> messages;
  bool finished = false;
  for (int round = 0; round < 25 && !finished; ++round) {
    RunDir run(part.string(), true);
    const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, data.split());
    trainer->set_stop_flag(&stop);
    try {
      if (round == 0) {
        train(config, data.split(), *trainer, run);
      } else {
        const Checkpoint from = read_checkpoint(last);
        resume_training(config, data.split(), *trainer, run, from);
      }
      finished = true;  // the stop on the run's very last step changes nothing
    } catch (const TrainingInterrupted& interrupted) {
      messages.push_back(interrupted.what());
      EXPECT_EQ(interrupted.checkpoint(), last);
    }
  }
  ASSERT_TRUE(finished);
  // Steps 1..9 of epoch 1, its last step (a whole epoch: saved as such), steps 1..9 of epoch 2,
  // then the final step finishes the run.
  ASSERT_EQ(messages.size(), 19u);
  EXPECT_EQ(messages[0], "interrupted at epoch 1, step 1 of 10; saved " + last);
  EXPECT_EQ(messages[8], "interrupted at epoch 1, step 9 of 10; saved " + last);
  EXPECT_EQ(messages[9], "interrupted after epoch 1 of 2; saved " + last);
  EXPECT_EQ(messages[10], "interrupted at epoch 2, step 1 of 10; saved " + last);
  EXPECT_EQ(messages[18], "interrupted at epoch 2, step 9 of 10; saved " + last);
  EXPECT_TRUE(read_text(part / "last.ckpt") == read_text(whole / "last.ckpt")) << "last.ckpt differs";
  EXPECT_TRUE(read_text(part / "best.ckpt") == read_text(whole / "best.ckpt")) << "best.ckpt differs";
  fs::remove_all(whole);
  fs::remove_all(part);
}

// A checkpoint saved mid-epoch holds the epochs completed and the optimizer step; the resume
// point is found from them only while the epoch is cut into the same batches.
TEST(Interrupt, ResumePointComesFromTheStepAndTheBatching) {
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(1);  // 600 images, batch 64: 10 steps an epoch
  const SyntheticData data(rng, config);
  Checkpoint from;
  from.epoch = 2;
  from.config = to_json(config);
  const std::pair<int, int> cases[] = {{20, 0}, {21, 1}, {27, 7}, {29, 9}, {30, 0}, {5, 0}};  // step → place
  for (const auto& [step, want] : cases) {
    from.state.step = step;
    EXPECT_EQ(resume_step_in_epoch(config, data.split(), from), want) << "step " << step;
  }
  from.state.step = 27;
  TrainConfig other = config;
  other.batch_size = 100;  // 6 steps an epoch: step 27 is no place in epoch 3 of this run
  EXPECT_EQ(resume_step_in_epoch(other, data.split(), from), 0);
  other = config;
  other.lr = 0.01f;  // the batches do not depend on it
  EXPECT_EQ(resume_step_in_epoch(other, data.split(), from), 7);
}

// The GPU trainer runs its epoch (one graph) to the end and the loop saves it whole; a resume
// from a CPU checkpoint saved mid-epoch runs the rest of that epoch outside the graph.
TEST(GpuInterrupt, StopsAtTheEpochEndAndContinuesMidEpoch) {
  MNIST_REQUIRE_GPU();
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  const TrainConfig config = small_config(seed);
  const SyntheticData data(rng, config);
  const fs::path whole = fresh_temp_dir("gpu-interrupt-whole"), part = fresh_temp_dir("gpu-interrupt-part");
  {
    RunDir run(whole.string(), true);
    const std::unique_ptr<Trainer> trainer = make_gpu_trainer(config, data.split());
    train(config, data.split(), *trainer, run);
  }
  const std::atomic<bool> stop{true};
  {
    RunDir run(part.string(), true);
    const std::unique_ptr<Trainer> trainer = make_gpu_trainer(config, data.split());
    trainer->set_stop_flag(&stop);
    try {
      train(config, data.split(), *trainer, run);
      ADD_FAILURE() << "no TrainingInterrupted";
    } catch (const TrainingInterrupted& interrupted) {
      EXPECT_EQ(std::string(interrupted.what()),
                "interrupted after epoch 1 of 2; saved " + (part / "last.ckpt").string());
    }
  }
  {
    RunDir run(part.string(), true);
    const std::unique_ptr<Trainer> trainer = make_gpu_trainer(config, data.split());
    resume_training(config, data.split(), *trainer, run, read_checkpoint((part / "last.ckpt").string()));
  }
  // The GPU is deterministic too.
  EXPECT_TRUE(read_text(part / "last.ckpt") == read_text(whole / "last.ckpt")) << "last.ckpt differs";

  // CPU: epoch 1, then 3 steps of epoch 2. The GPU and the CPU each run the 7 steps left.
  const std::unique_ptr<Trainer> cpu = make_cpu_trainer(config, data.split());
  cpu->train_epoch(1);
  cpu->set_stop_flag(&stop);
  for (int s = 0; s < 3; ++s) {
    cpu->start_next_epoch_at(s);
    cpu->train_epoch(2);
  }
  cpu->set_stop_flag(nullptr);
  const ModelState mid = cpu->state();
  ASSERT_EQ(mid.step, 13);
  const std::unique_ptr<Trainer> gpu = make_gpu_trainer(config, data.split());
  gpu->load_state(mid);
  gpu->start_next_epoch_at(3);
  cpu->start_next_epoch_at(3);
  const EvalTotals gpu_totals = gpu->train_epoch(2);
  const EvalTotals cpu_totals = cpu->train_epoch(2);
  EXPECT_EQ(gpu_totals.count, 600u - 3 * 64);
  EXPECT_EQ(gpu_totals.count, cpu_totals.count);
  EXPECT_NEAR(gpu_totals.loss_sum, cpu_totals.loss_sum, 1e-4 * std::fabs(cpu_totals.loss_sum));
  const ModelState got = gpu->state(), want = cpu->state();
  EXPECT_EQ(got.step, 20);
  double worst = 0;
  for (std::size_t i = 0; i < want.params.size(); ++i)
    worst = std::max(worst, std::isfinite(got.params[i]) ? std::fabs(double(got.params[i]) - want.params[i])
                                                         : std::numeric_limits<double>::infinity());
  EXPECT_LE(worst, 2.0 * config.lr);  // a wrong batch or step moves parameters by ~lr everywhere
  fs::remove_all(whole);
  fs::remove_all(part);
}

// --- interruption, through the command line ----------------------------------------------------

// `mnist ARGS` as a child process with its stdout and stderr on one pipe, as a terminal user
// would run it (and press Ctrl-C).
class Child {
 public:
  explicit Child(const std::string& args) {
    std::vector<std::string> words{MNIST_BINARY};
    std::istringstream in(args);
    for (std::string word; in >> word;) words.push_back(word);
    std::vector<char*> argv;  // built before fork: the child may only make async-signal-safe calls
    for (std::string& word : words) argv.push_back(word.data());
    argv.push_back(nullptr);
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      // As from a terminal, even if this test runs as a background job or under nohup, or from a
      // runner that ignores SIGPIPE: mnist keeps a signal ignored if it started ignored.
      for (int stop_signal : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(stop_signal, SIG_DFL);
      dup2(fds[1], STDOUT_FILENO);
      dup2(fds[1], STDERR_FILENO);
      close(fds[0]);
      close(fds[1]);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    out_ = fds[0];
  }
  ~Child() {
    if (out_ >= 0) close(out_);
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Reads until `marker` has appeared (true) or the output ends (false).
  bool read_until(const std::string& marker) {
    char buffer[4096];
    while (output_.find(marker) == std::string::npos) {
      const ssize_t n = read(out_, buffer, sizeof buffer);
      if (n <= 0) return false;
      output_.append(buffer, std::size_t(n));
    }
    return true;
  }
  // Whether the child has installed a handler for `signal` (Linux: SigCgt in /proc/PID/status).
  bool catches(int signal) const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("SigCgt:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> (signal - 1)) & 1;
    return false;
  }
  void send(int signal) const { kill(pid_, signal); }
  // Sends `signal` and waits (up to 20 s) until it is no longer pending, i.e. has been handled.
  void send_and_await_delivery(int signal) const {
    send(signal);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (pending(signal) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Whether `signal` is pending for the child's process or its main thread (ShdPnd, SigPnd).
  bool pending(int signal) const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    bool any = false;
    for (std::string line; std::getline(status, line);)
      if (line.rfind("ShdPnd:", 0) == 0 || line.rfind("SigPnd:", 0) == 0)
        any = any || ((std::stoull(line.substr(7), nullptr, 16) >> (signal - 1)) & 1);
    return any;
  }
  // Reads the rest of the output and waits: the exit status, or 1000 + the signal that killed it.
  int wait() {
    read_until("\x01never");
    int raw = 0;
    waitpid(pid_, &raw, 0);
    reaped_ = true;
    return WIFEXITED(raw) ? WEXITSTATUS(raw) : 1000 + WTERMSIG(raw);
  }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool reaped_ = false;
  std::string output_;
};

std::string last_line(const std::string& text) {
  const std::size_t end = text.size() && text.back() == '\n' ? text.size() - 1 : text.size();
  const std::size_t start = text.rfind('\n', end == 0 ? 0 : end - 1);
  return text.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1));
}

// Ctrl-C once epoch 1 is logged: the current step finishes, last.ckpt is saved, the message
// says where and gives the command to resume; that command ends the run with the very bytes
// of an uninterrupted run. --hidden 128 makes an epoch long (~0.2 s) next to the checkpoint
// write, so the signal nearly always lands mid-epoch; landing between epochs is also correct.
TEST(InterruptCli, CtrlCSavesAndTheResumeCommandFinishesTheSameRun) {
  const fs::path whole = fresh_temp_dir("sigint-whole"), part = fresh_temp_dir("sigint-part");
  const std::string options = "train --device cpu --train-subset 3000 --epochs 3 --hidden 128 --batch-size 32 "
                              "--no-report --out ";
  const Outcome uninterrupted = run_mnist(options + whole.string());
  ASSERT_EQ(uninterrupted.status, 0) << uninterrupted.output;

  Child child(options + part.string());
  ASSERT_TRUE(child.read_until("epoch   1/3")) << child.output();
  child.send(SIGINT);
  const int status = child.wait();
  ASSERT_EQ(status, 130) << child.output();
  const std::string message = last_line(child.output());
  const std::regex expected("mnist: interrupted (at epoch [23], step [0-9]+ of 94|after epoch [12] of 3); saved " +
                            part.string() + "/last\\.ckpt; resume with: (.*)");
  std::smatch match;
  ASSERT_TRUE(std::regex_match(message, match, expected)) << child.output();
  EXPECT_EQ(child.output().find("report.json"), std::string::npos) << child.output();
  EXPECT_FALSE(fs::exists(part / "report.json"));
  const Checkpoint saved = read_checkpoint((part / "last.ckpt").string());  // loads
  EXPECT_GE(saved.epoch, 1);
  EXPECT_LT(saved.state.step, 3 * 94);

  const std::string resume = match[2].str();
  EXPECT_NE(resume.find(" train "), std::string::npos) << resume;
  EXPECT_NE(resume.find(" --resume " + part.string() + "/last.ckpt"), std::string::npos) << resume;
  FILE* pipe = popen((resume + " 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string resumed_output;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) resumed_output.append(buffer, n);
  const int raw = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(raw) && WEXITSTATUS(raw) == 0) << resumed_output;
  EXPECT_NE(resumed_output.find("resuming"), std::string::npos) << resumed_output;

  const Checkpoint a = read_checkpoint((whole / "last.ckpt").string());
  const Checkpoint b = read_checkpoint((part / "last.ckpt").string());
  EXPECT_EQ(b.epoch, 3);
  EXPECT_EQ(b.state.step, a.state.step);
  EXPECT_TRUE(b.state.params == a.state.params) << "parameters differ from the uninterrupted run";
  EXPECT_TRUE(b.state.adam_m == a.state.adam_m && b.state.adam_v == a.state.adam_v) << "Adam moments differ";
  EXPECT_TRUE(read_text(part / "last.ckpt") == read_text(whole / "last.ckpt")) << "last.ckpt differs";
  EXPECT_EQ(line_count(read_text(part / "metrics.jsonl")), 3);
  fs::remove_all(whole);
  fs::remove_all(part);
}

// Ctrl-C (or SIGTERM) while the data is loading: nothing to save, so one line and exit 130
// (143) at once.
void expect_signal_before_training_is_one_line(int signal, int status) {
  const fs::path dir = fresh_temp_dir("signal-early");
  Child child("train --device cpu --epochs 1 --hidden 8 --out " + (dir / "run").string());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!child.catches(signal) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(child.catches(signal)) << "the train command installed no handler for signal " << signal;
  child.send(signal);
  EXPECT_EQ(child.wait(), status) << child.output();
  EXPECT_EQ(line_count(child.output()), 1) << child.output();
  EXPECT_NE(child.output().find("mnist: interrupted before training started; nothing was saved"), std::string::npos)
      << child.output();
  EXPECT_FALSE(fs::exists(dir / "run" / "last.ckpt"));
  fs::remove_all(dir);
}

TEST(InterruptCli, CtrlCBeforeTrainingIsOneLineAndExit130) { expect_signal_before_training_is_one_line(SIGINT, 130); }

// Ctrl-C once the last epoch is logged: the run's remaining files (test metrics, report.json,
// errors.json) are still written, then one line and exit 130. --hidden 256 makes the two passes
// over the 10,000 test images long next to the signal's delivery.
TEST(InterruptCli, CtrlCAfterTheLastEpochFinishesTheRunsFilesAndExits130) {
  const fs::path dir = fresh_temp_dir("sigint-last");
  Child child("train --device cpu --train-subset 1000 --epochs 1 --hidden 256 --no-report --out " + dir.string());
  ASSERT_TRUE(child.read_until("epoch   1/1")) << child.output();
  child.send(SIGINT);
  EXPECT_EQ(child.wait(), 130) << child.output();
  EXPECT_EQ(last_line(child.output()), "mnist: interrupted after the last epoch; the run is complete in " +
                                           dir.string() + ", no report drawn (mnist report " + dir.string() +
                                           " draws it)")
      << child.output();
  for (const char* name : {"last.ckpt", "best.ckpt", "report.json", "errors.json"})
    EXPECT_TRUE(fs::exists(dir / name)) << name;
  EXPECT_NE(child.output().find("test: accuracy"), std::string::npos) << child.output();
  fs::remove_all(dir);
}

// SIGTERM (kill, timeout, a batch scheduler's time limit) or SIGHUP (the terminal closed) once
// epoch 1 is logged: the same save as Ctrl-C, exit 128 + the signal. Five epochs leave a slow
// machine (a sanitizer build) a wide window; a signal after the last one is also right.
void expect_signal_saves_like_ctrl_c(int signal) {
  const fs::path dir = fresh_temp_dir("sigterm");
  Child child("train --device cpu --train-subset 3000 --epochs 5 --hidden 128 --batch-size 32 --no-report --out " +
              dir.string());
  ASSERT_TRUE(child.read_until("epoch   1/5")) << child.output();
  child.send(signal);
  ASSERT_EQ(child.wait(), 128 + signal) << child.output();
  const std::regex expected("mnist: interrupted (at epoch [2-5], step [0-9]+ of 94|after epoch [1-4] of 5); saved " +
                            dir.string() + "/last\\.ckpt; resume with: .* --resume " + dir.string() +
                            "/last\\.ckpt|mnist: interrupted after the last epoch; the run is complete in .*");
  EXPECT_TRUE(std::regex_match(last_line(child.output()), expected)) << child.output();
  EXPECT_GE(read_checkpoint((dir / "last.ckpt").string()).epoch, 1);
  fs::remove_all(dir);
}

TEST(InterruptCli, SigtermSavesLikeCtrlCAndExits143) { expect_signal_saves_like_ctrl_c(SIGTERM); }

// SIGHUP used to end the run at once, silently, losing every step since the last epoch.
TEST(InterruptCli, SighupSavesLikeCtrlCAndExits129) { expect_signal_saves_like_ctrl_c(SIGHUP); }

// `mnist train | head`: the reader of stdout goes away and the next write raises SIGPIPE, which
// used to end the run at once, before the epoch's checkpoint. Now the run stops as after
// Ctrl-C, with last.ckpt saved and the resume command on stderr, exit 141. Where the signal
// lands depends on when head exits: mid-run, at an epoch's end or after the last epoch.
TEST(InterruptCli, AClosedStdoutSavesLikeCtrlCAndExits141) {
  const fs::path dir = fresh_temp_dir("sigpipe");
  const fs::path err = dir / "stderr.txt", status = dir / "status.txt", run = dir / "run";
  const std::string train = std::string(MNIST_BINARY) +
                            " train --device cpu --train-subset 3000 --epochs 3 --hidden 128 --batch-size 32 "
                            "--no-report --out " + run.string();
  const std::string pipeline = "(" + train + " 2>" + err.string() + "; echo $? >" + status.string() +
                               ") | head -c 1 >/dev/null";
  // The pipeline's mnist must start with SIGPIPE's default action, as from a shell, even if
  // this test's runner ignores it (an ignored SIGPIPE stays ignored across exec).
  struct sigaction default_action {}, previous {};
  default_action.sa_handler = SIG_DFL;
  sigaction(SIGPIPE, &default_action, &previous);
  const int pipeline_status = std::system(pipeline.c_str());
  sigaction(SIGPIPE, &previous, nullptr);
  ASSERT_EQ(pipeline_status, 0) << pipeline;
  EXPECT_EQ(read_text(status), "141\n") << read_text(err);
  const std::regex expected("mnist: interrupted (at epoch [1-3], step [0-9]+ of 94|after epoch [12] of 3); saved " +
                            run.string() + "/last\\.ckpt; resume with: .*|mnist: interrupted after the last "
                            "epoch; the run is complete in " + run.string() + ".*");
  EXPECT_TRUE(std::regex_match(last_line(read_text(err)), expected)) << read_text(err);
  EXPECT_GE(read_checkpoint((run / "last.ckpt").string()).epoch, 1) << read_text(err);
  fs::remove_all(dir);
}

// Ctrl-C after a broken pipe is the first Ctrl-C: the run still saves its step. It used to count
// as a second Ctrl-C (both set the one stop flag) and exit at once without saving.
TEST(InterruptCli, CtrlCAfterABrokenPipeStillSaves) {
  const fs::path dir = fresh_temp_dir("sigpipe-sigint");
  Child child("train --device cpu --train-subset 3000 --epochs 5 --hidden 128 --batch-size 32 --no-report --out " +
              dir.string());
  ASSERT_TRUE(child.read_until("epoch   1/5")) << child.output();
  child.send_and_await_delivery(SIGPIPE);
  child.send(SIGINT);
  ASSERT_EQ(child.wait(), 141) << child.output();  // 128 + the first signal that asked to stop
  EXPECT_EQ(child.output().find("stopped without saving"), std::string::npos) << child.output();
  const std::regex expected("mnist: interrupted (at epoch [2-5], step [0-9]+ of 94|after epoch [1-4] of 5); saved " +
                            dir.string() + "/last\\.ckpt; resume with: .*|mnist: interrupted after the last "
                            "epoch; the run is complete in .*");
  EXPECT_TRUE(std::regex_match(last_line(child.output()), expected)) << child.output();
  EXPECT_GE(read_checkpoint((dir / "last.ckpt").string()).epoch, 1);
  fs::remove_all(dir);
}

TEST(InterruptCli, SigtermBeforeTrainingIsOneLineAndExit143) {
  expect_signal_before_training_is_one_line(SIGTERM, 143);
}

// --- out of device memory -----------------------------------------------------------------------

TEST(OutOfMemory, MessageNamesTheSizeThatFailed) {
  EXPECT_EQ(out_of_memory_message(512), "out of device memory allocating 512 bytes");
  EXPECT_EQ(out_of_memory_message(1536), "out of device memory allocating 1.5 KiB");
  EXPECT_EQ(out_of_memory_message(std::size_t(300) << 20), "out of device memory allocating 300.0 MiB");
  EXPECT_EQ(out_of_memory_message(std::size_t(1288490189)), "out of device memory allocating 1.2 GiB");
  EXPECT_EQ(out_of_memory_message(std::size_t(4) << 40), "out of device memory allocating 4.0 TiB");
}

TEST(OutOfMemory, AdviceHalvesTheBatch) {
  EXPECT_EQ(out_of_memory_advice(128),
            "try a smaller --batch-size, e.g. 64, or narrower --hidden layers, or --device cpu");
  EXPECT_EQ(out_of_memory_advice(1), "try narrower --hidden layers, or --device cpu");
}

// The error MNIST_CHECK throws for `status`.
template <class Status>
CudaError error_of(Status status) {
  try {
    MNIST_CHECK(status);
  } catch (const CudaError& error) {
    return error;
  }
  ADD_FAILURE() << "MNIST_CHECK accepted status " << static_cast<long>(status);
  return CudaError("", false);
}

// main() adds the smaller-batch advice only to errors marked out of memory. cuDNN 9 answers a
// failed device allocation with its own status (4004), not the one it calls ALLOC_FAILED (4003).
TEST(OutOfMemory, EveryLibrarysAllocationFailureIsMarkedOutOfMemory) {
  EXPECT_TRUE(error_of(cudaErrorMemoryAllocation).out_of_memory());
  EXPECT_TRUE(error_of(CUBLAS_STATUS_ALLOC_FAILED).out_of_memory());
  EXPECT_TRUE(error_of(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED).out_of_memory());
  EXPECT_TRUE(error_of(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED).out_of_memory());
  EXPECT_FALSE(error_of(cudaErrorInvalidValue).out_of_memory());
  EXPECT_FALSE(error_of(CUBLAS_STATUS_INVALID_VALUE).out_of_memory());
  EXPECT_FALSE(error_of(CUDNN_STATUS_BAD_PARAM).out_of_memory());
  const std::string what = error_of(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED).what();
  EXPECT_EQ(what.rfind("cuDNN error ", 0), 0u) << what;
  EXPECT_NE(what.find("in status at "), std::string::npos) << what;  // the call, then the file
}

TEST(GpuOutOfMemory, DeviceBufferSaysOutOfMemoryAndTheDeviceStaysUsable) {
  MNIST_REQUIRE_GPU();
  try {
    DeviceBuffer<float> huge(std::size_t(1) << 40);  // 4 TiB
    ADD_FAILURE() << "a 4 TiB allocation succeeded";
  } catch (const CudaError& error) {
    EXPECT_TRUE(error.out_of_memory());
    EXPECT_EQ(std::string(error.what()), "out of device memory allocating 4.0 TiB");
  }
  DeviceBuffer<float> small(std::vector<float>{1.f, 2.f, 3.f});
  MNIST_CHECK(cudaGetLastError());  // cleared: the next checked launch does not see it
  EXPECT_EQ(small.download(), (std::vector<float>{1.f, 2.f, 3.f}));
}

// --- cuDNN's tensor size --------------------------------------------------------------------------

// A CNN batch whose conv1 output passes cuDNN's 2^31 - 1 elements a tensor is refused up front
// with the largest batch that fits, instead of failing in cudnnSetTensor4dDescriptor.
TEST(CudnnLimits, CnnBatchBeyondTheTensorSizeIsAConfigError) {
  TrainConfig config;
  config.model = "cnn";
  config.hidden = {1024};
  config.dropout = 0.5f;
  config.channels = {2048, 64};  // 2048·28·28 floats an image: 1,337 images fit
  config.batch_size = 1337;
  EXPECT_NO_THROW(check_gpu_config(config));
  config.batch_size = 1338;
  try {
    check_gpu_config(config);
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("--batch-size 1338"), std::string::npos) << what;
    EXPECT_NE(what.find("--batch-size 1337 or less"), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(1338ull * 2048 * 28 * 28)), std::string::npos) << what;
  }
  config.model = "mlp";  // no cuDNN: cuBLAS and the custom kernels index in 64 bits
  config.hidden = {65536};
  config.batch_size = 60000;
  EXPECT_NO_THROW(check_gpu_config(config));
}

// `mnist train` says so in one line, exit 2, before it loads any data (the folder is missing).
TEST(GpuLimitsCli, CnnBatchBeyondCudnnsTensorSizeIsOneLineAndExit2) {
  MNIST_REQUIRE_GPU();
  const fs::path dir = fresh_temp_dir("cudnn-limit");
  const Outcome outcome = run_mnist(
      "train --device gpu --model cnn --channels 2048,64 --batch-size 2000 --epochs 1 --data-dir /nonexistent "
      "--out " + (dir / "run").string());
  EXPECT_EQ(outcome.status, 2) << outcome.output;
  EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
  EXPECT_NE(outcome.output.find("on the GPU use --batch-size 1337 or less"), std::string::npos) << outcome.output;
  EXPECT_FALSE(fs::exists(dir / "run"));
  fs::remove_all(dir);
}

// No usable device (label cpu; skipped where there is one): --device gpu is one line that gives
// the CUDA runtime's reason, exit 2, before any data is read; --device auto says it falls back
// and trains on the CPU.
TEST(NoDeviceCli, DeviceGpuIsOneLineAndAutoTrainsOnTheCpu) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  const fs::path dir = fresh_temp_dir("no-device");
  const std::string reason = cuda_device_absence();
  ASSERT_FALSE(reason.empty());

  const Outcome trained = run_mnist("train --device auto --train-subset 200 --epochs 1 --hidden 8 --batch-size 50 --out " +
                                    (dir / "auto").string());
  EXPECT_EQ(trained.status, 0) << trained.output;
  EXPECT_NE(trained.output.find("no CUDA device found: training on the CPU\n"), std::string::npos) << trained.output;
  ASSERT_TRUE(fs::exists(dir / "auto" / "last.ckpt")) << trained.output;

  for (const std::string& args : {"train --epochs 1 --hidden 8 --data-dir /nonexistent --out " + (dir / "gpu").string(),
                                  "evaluate --data-dir /nonexistent --model " + (dir / "auto" / "last.ckpt").string()}) {
    const Outcome outcome = run_mnist(args + " --device gpu");
    EXPECT_EQ(outcome.status, 2) << args << ": " << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << args << ": " << outcome.output;
    EXPECT_NE(outcome.output.find("--device gpu: no CUDA device or driver found (" + reason + "); use --device cpu"),
              std::string::npos)
        << args << ": " << outcome.output;
  }
  EXPECT_FALSE(fs::exists(dir / "gpu"));
  fs::remove_all(dir);
}

// --- output directory ---------------------------------------------------------------------------

// An --out that names a file is a mistake on the command line (exit 2); one the file system
// refuses to create is an I/O failure (exit 1). Either is one line.
TEST(OutputDirectoryCli, UnwritableOutIsOneLine) {
  const fs::path dir = fresh_temp_dir("out-file");
  const fs::path file = dir / "file";
  test::write_text(file, "not a directory\n");
  struct Case {
    std::string out, must_mention;
    int status;
  };
  for (const Case& c : {Case{file.string() + "/sub", "cannot create run directory " + file.string() + "/sub", 1},
                        Case{file.string(), file.string() + " exists and is not a directory", 2},
                        Case{"/etc/passwd/sub", "/etc/passwd/sub", 1}}) {
    const Outcome outcome = run_mnist("train --device cpu --epochs 1 --hidden 8 --out " + c.out);
    EXPECT_EQ(outcome.status, c.status) << c.out << ": " << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << c.out << ": " << outcome.output;
    EXPECT_NE(outcome.output.find(c.must_mention), std::string::npos) << c.out << ": " << outcome.output;
  }
  EXPECT_EQ(read_text(file), "not a directory\n");
  fs::remove_all(dir);
}

// Without --out the run goes to runs/<timestamp>: a runs/ that cannot be looked into (here a
// symlink to itself) is one line, not a filesystem_error.
TEST(OutputDirectoryCli, UnsearchableRunsIsOneLineAndExit1) {
  const fs::path dir = fresh_temp_dir("runs-loop");
  fs::create_directory_symlink("runs", dir / "runs");
  const Outcome outcome = test::run_program("cd " + dir.string() + " && " + MNIST_BINARY,
                                            "train --device cpu --epochs 1 --hidden 8 --train-subset 500 --data-dir " +
                                                fs::absolute("data/mnist").string());
  EXPECT_EQ(outcome.status, 1) << outcome.output;
  EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
  EXPECT_EQ(outcome.output.rfind("mnist: error: cannot create run directory runs/", 0), 0u) << outcome.output;
  fs::remove_all(dir);
}

// --- the run directory's files -----------------------------------------------------------------

// A resume rewrites metrics.jsonl to the epochs its checkpoint holds; if that write fails (here
// a directory stands where its temporary file goes), the log is still the old one, whole.
TEST(RunDirFiles, AFailedRewriteOfTheLogLeavesTheOldOne) {
  const fs::path dir = fresh_temp_dir("log-rewrite");
  const std::string log = "{\"epoch\":1}\n{\"epoch\":2}\n";
  test::write_text(dir / "metrics.jsonl", log);
  fs::create_directory(temporary_path((dir / "metrics.jsonl").string()));
  EXPECT_THROW(RunDir(dir.string(), true, "{\"epoch\":1}\n"), IoError);
  EXPECT_EQ(read_text(dir / "metrics.jsonl"), log);
  fs::remove(temporary_path((dir / "metrics.jsonl").string()));
  RunDir(dir.string(), true, "{\"epoch\":1}\n");
  EXPECT_EQ(read_text(dir / "metrics.jsonl"), "{\"epoch\":1}\n");
  fs::remove_all(dir);
}

// best.ckpt is written before last.ckpt: when it cannot be, last.ckpt does not yet claim the
// epoch (with its accuracy as the best), so a resume trains that epoch again and saves both.
TEST(RunDirFiles, AFailedBestCheckpointLeavesNoLastCheckpointAhead) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::uint64_t seed = rng();
  const TrainConfig config = small_config(seed);
  const SyntheticData data(rng, config);
  const fs::path dir = fresh_temp_dir("best-first");
  RunDir run(dir.string(), true);
  fs::create_directory(temporary_path((dir / "best.ckpt").string()));
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, data.split());
  EXPECT_THROW(train(config, data.split(), *trainer, run), CheckpointError);
  EXPECT_FALSE(fs::exists(dir / "last.ckpt"));
  EXPECT_FALSE(fs::exists(dir / "best.ckpt"));
  fs::remove_all(dir);
}

// --force: what the earlier run left (a report, pictures, its checkpoints) is gone before the
// new run starts, so no stale file sits beside the new run's.
TEST(RunDirFiles, ForceDiscardsTheEarlierRunsFilesAndOnlyThose) {
  const fs::path dir = fresh_temp_dir("force-discard");
  for (const char* name : {"last.ckpt", "best.ckpt", "report.json", "errors.json", "report.md", "curves.png",
                           "confusion.png", "errors.png", "notes.txt"})
    test::write_text(dir / name, "earlier run\n");
  RunDir run(dir.string(), true);
  run.discard_previous_run();
  std::vector<std::string> left;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) left.push_back(entry.path().filename());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"metrics.jsonl", "notes.txt"}));
  EXPECT_EQ(read_text(dir / "metrics.jsonl"), "");
  fs::remove_all(dir);
}

TEST(RunDirFilesCli, ForceLeavesNoStaleReportAndResumeElsewhereKeepsTheBestModel) {
  const fs::path first = fresh_temp_dir("force-first"), second = fresh_temp_dir("resume-elsewhere");
  const std::string options = "train --device cpu --train-subset 1000 --hidden 8 --no-report ";
  ASSERT_EQ(run_mnist(options + "--epochs 1 --out " + first.string()).status, 0);
  test::write_text(first / "report.md", "a report of an earlier run\n");
  const Outcome forced = run_mnist(options + "--epochs 1 --force --out " + first.string());
  ASSERT_EQ(forced.status, 0) << forced.output;
  EXPECT_FALSE(fs::exists(first / "report.md"));
  EXPECT_TRUE(fs::exists(first / "best.ckpt"));  // the new run's own

  // Continued in another directory with a learning rate too small to change any prediction:
  // no epoch improves, and best.ckpt is the one the first directory holds.
  const Outcome resumed = run_mnist(options + "--epochs 2 --lr 1e-9 --out " + second.string() + " --resume " +
                                    (first / "last.ckpt").string());
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_EQ(read_text(second / "best.ckpt"), read_text(first / "best.ckpt"));
  EXPECT_NE(resumed.output.find("last.ckpt and best.ckpt in " + second.string()), std::string::npos)
      << resumed.output;
  fs::remove_all(first);
  fs::remove_all(second);
}

// Runs started side by side in the same second (a sweep script; threads here, which race for
// the directory names as processes do) each get a runs/<timestamp>[-N] of their own.
TEST(OutputDirectory, RunsStartedTogetherGetTheirOwnDirectories) {
  const fs::path dir = fresh_temp_dir("runs-together");
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  constexpr int kRuns = 16;
  std::vector<std::string> paths(kRuns);
  std::atomic<int> waiting{kRuns};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRuns; ++i)
    threads.emplace_back([&, i] {
      for (--waiting; waiting > 0;) std::this_thread::yield();  // all start at once
      try {
        paths[i] = RunDir("", false).path();
      } catch (const std::exception& error) {
        paths[i] = std::string("error: ") + error.what();
      }
    });
  for (std::thread& t : threads) t.join();
  fs::current_path(cwd);
  for (const std::string& path : paths) EXPECT_EQ(path.rfind("runs/", 0), 0u) << path;
  std::vector<std::string> distinct = paths;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  EXPECT_EQ(distinct.size(), paths.size()) << "two runs share a directory";
  fs::remove_all(dir);
}

// A --data-dir whose name is not UTF-8 (Latin-1 "m\xfcnist") trains and saves its run: JSON
// cannot hold the byte, so report.json and the checkpoint's configuration carry U+FFFD for it.
TEST(DataDirCli, ANameThatIsNotUtf8StillSavesItsRun) {
  const fs::path dir = fresh_temp_dir("latin1");
  fs::create_directory_symlink(fs::absolute("data/mnist"), dir / "m\xfcnist");
  const Outcome outcome = run_mnist("train --device cpu --epochs 1 --hidden 8 --train-subset 500 --no-report --out " +
                                    (dir / "run").string() + " --data-dir '" + (dir / "m\xfcnist").string() + "'");
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  const std::string shown = (dir / "m\xef\xbf\xbdnist").string();  // U+FFFD in UTF-8
  const nlohmann::json report = nlohmann::json::parse(read_text(dir / "run" / "report.json"));
  EXPECT_EQ(report["config"]["data_dir"], shown);
  EXPECT_EQ(read_checkpoint((dir / "run" / "last.ckpt").string()).config["data_dir"], shown);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mnist
