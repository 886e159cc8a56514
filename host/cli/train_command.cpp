// `mnist train` and `mnist evaluate`: everything between the parsed options and the trainer.
#include "mnist/cli/train_command.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <iterator>
#include <optional>

#include "mnist/io/checkpoint.h"
#include "mnist/core/device.h"
#include "mnist/train/misclassified.h"
#include "mnist/model/model.h"
#include "mnist/core/printable.h"
#include "mnist/cli/script_commands.h"
#include "mnist/train/run_dir.h"
#include "mnist/train/trainer.h"
#include "mnist/cli/versions.h"

namespace fs = std::filesystem;

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

std::string out_of_memory_advice(int batch_size) {
  const std::string smaller =
      batch_size > 1 ? "a smaller --batch-size, e.g. " + std::to_string(batch_size / 2) + ", or " : "";
  return "try " + smaller + "narrower --hidden layers, or --device cpu";
}

namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in && !in.eof()) throw IoError("cannot read " + printable(path));
  return bytes;
}

// --- Ctrl-C and SIGTERM --------------------------------------------------------------------
// Before training starts there is nothing to save, so SIGINT exits at once. While training, it
// only asks the trainer to stop after the current step; the loop then saves last.ckpt and
// `mnist train` says how to resume (exit 130). A second Ctrl-C exits at once: the checkpoint
// is written atomically, so last.ckpt is still the previous one or the new one, never a mix.
// SIGTERM (kill, timeout, a batch scheduler's time limit, docker stop) does the same and exits
// 143, so a job stopped from outside keeps its step too; so does SIGHUP (the terminal or ssh
// session closed; exit 129), which would otherwise end the run without a word or a save since
// the last epoch, and so does SIGPIPE (the reader of stdout went away: `mnist train | head`;
// exit 141). These lock-free atomics are all the handlers touch.
std::atomic<bool> g_training{false};
std::atomic<bool> g_stop{false};
std::atomic<int> g_stop_signal{0};  // the first signal that asked to stop; kept until the next run
std::atomic<int> g_interrupts{0};   // Ctrl-C, SIGTERM and SIGHUP so far; SIGPIPE is not counted
static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<int>::is_always_lock_free,
              "a signal handler may only touch lock-free atomics");
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};

template <std::size_t N>
void write_stderr(const char (&text)[N]) {
  const ssize_t ignored = write(STDERR_FILENO, text, N - 1);  // async-signal-safe, unlike stdio
  (void)ignored;
}

extern "C" void on_interrupt(int signal) {
  int none = 0;
  g_stop_signal.compare_exchange_strong(none, signal);
  if (!g_training.load()) {
    write_stderr("mnist: interrupted before training started; nothing was saved\n");
    _exit(128 + signal);
  }
  // Counted apart from g_stop, which a broken pipe also sets: a Ctrl-C after SIGPIPE is the
  // first Ctrl-C, and the step being saved is kept.
  if (g_interrupts.fetch_add(1) > 0) {
    write_stderr("mnist: interrupted again: stopped without saving the current step\n");
    _exit(128 + signal);
  }
  g_stop = true;
}

// A closed stdout raises SIGPIPE at every later write, so only the first one asks to stop; the
// rest change nothing (a second Ctrl-C's "exit at once" would lose the step being saved).
extern "C" void on_broken_pipe(int signal) {
  int none = 0;
  g_stop_signal.compare_exchange_strong(none, signal);
  if (!g_training.load()) {
    write_stderr("mnist: standard output closed before training started; nothing was saved\n");
    _exit(128 + signal);
  }
  g_stop = true;
}

// Installs on_interrupt for SIGINT, SIGTERM and SIGHUP, and on_broken_pipe for SIGPIPE, for its
// lifetime (SA_RESTART: interrupted reads and writes carry on), then puts back what was there. A
// signal that was ignored when mnist started (SIGINT for a background job of a non-interactive
// shell, SIGHUP under nohup) stays ignored.
class InterruptHandler {
 public:
  InterruptHandler() {
    g_training = false;
    g_stop = false;
    g_stop_signal = 0;
    g_interrupts = 0;
    struct sigaction action {};
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (std::size_t i = 0; i < std::size(kStopSignals); ++i) {
      action.sa_handler = kStopSignals[i] == SIGPIPE ? on_broken_pipe : on_interrupt;
      sigaction(kStopSignals[i], nullptr, &previous_[i]);
      if (previous_[i].sa_handler != SIG_IGN) sigaction(kStopSignals[i], &action, nullptr);
    }
  }
  ~InterruptHandler() {
    for (std::size_t i = 0; i < std::size(kStopSignals); ++i) sigaction(kStopSignals[i], &previous_[i], nullptr);
    g_training = false;
    g_stop = false;
  }
  InterruptHandler(const InterruptHandler&) = delete;
  InterruptHandler& operator=(const InterruptHandler&) = delete;

  // From here on a Ctrl-C stops the trainer instead of the process.
  void training_started(Trainer& trainer) {
    trainer.set_stop_flag(&g_stop);
    g_training = true;
  }

 private:
  struct sigaction previous_[std::size(kStopSignals)] {};
};

std::unique_ptr<Trainer> make_trainer(bool on_gpu, const TrainConfig& config, const DataSplit& split) {
  return on_gpu ? make_gpu_trainer(config, split) : make_cpu_trainer(config, split);
}

// Loads --resume and checks it can be continued by this command line. The model (--model and
// its shape options) must match; other settings may differ on purpose (a lower --lr to
// fine-tune), but then the run no longer matches an uninterrupted one, so each difference is
// pointed out.
Checkpoint load_resume_point(const TrainConfig& config) {
  Checkpoint checkpoint = read_checkpoint(config.resume);
  const ModelState& stored = checkpoint.state;
  const ModelKind kind = model_kind(config);
  const std::vector<int> wanted = model_sizes(config);
  if (stored.kind != kind || stored.sizes != wanted)
    throw ConfigError("--resume " + config.resume + " holds a " + describe_model(stored.kind, stored.sizes) +
                      " model but the options ask for a " + describe_model(kind, wanted) + "; pass " +
                      model_options(stored.kind, stored.sizes) + " to continue it");
  if (checkpoint.epoch >= config.epochs)
    throw ConfigError("--resume " + config.resume + " has completed epoch " + std::to_string(checkpoint.epoch) +
                      " (--epochs is " + std::to_string(config.epochs) + "); pass --epochs larger than " +
                      std::to_string(checkpoint.epoch) + " to train further");

  // Every other setting the run stores (to_json) is compared, so a new option needs no list here:
  // all but the model's shape (checked above), --epochs (below) and where and how it runs.
  const nlohmann::json now = to_json(config);
  for (const auto& [key, value] : now.items()) {
    static const char* const kNotCompared[] = {"model", "hidden", "channels", "kernel", "epochs",
                                               "data_dir", "device", "graph", "tf32"};
    if (std::find(std::begin(kNotCompared), std::end(kNotCompared), key) != std::end(kNotCompared)) continue;
    if (!checkpoint.config.contains(key) || same_setting(checkpoint.config[key], value)) continue;
    std::string option = std::string("--") + key;
    for (char& c : option) c = c == '_' ? '-' : c;
    if (option == "--optimizer") option = "--adamw";
    // The stored value as ASCII JSON (escapes for anything else) and cut short: a crafted
    // checkpoint must not put control codes or a page of text into the warning.
    std::string stored = checkpoint.config[key].dump(-1, ' ', true);
    if (stored.size() > 40) stored = stored.substr(0, 37) + "...";
    std::fprintf(stderr, "mnist: warning: %s is %s here but %s in %s; the resumed run will differ from an "
                 "uninterrupted one\n", option.c_str(), value.dump().c_str(), stored.c_str(),
                 printable(config.resume).c_str());
  }
  // A schedule laid over the run's steps stretches with --epochs (the step schedule does not).
  if ((config.lr_schedule == "cosine" || config.lr_schedule == "onecycle") && checkpoint.config.contains("epochs") &&
      !same_setting(checkpoint.config["epochs"], now["epochs"]))
    std::fprintf(stderr, "mnist: warning: --epochs is %d here but %s in %s, and the %s schedule spans the run's "
                 "epochs; the resumed run will differ from an uninterrupted one\n", config.epochs,
                 checkpoint.config["epochs"].dump(-1, ' ', true).substr(0, 40).c_str(),
                 printable(config.resume).c_str(), config.lr_schedule.c_str());
  return checkpoint;
}

// JSON has no NaN: run_dir.cpp writes missing metrics as null.
double number_or_nan(const nlohmann::json& value) { return value.is_number() ? value.get<double>() : std::nan(""); }

// The epochs an interrupted run logged up to its checkpoint: the metrics.jsonl lines verbatim
// (to carry into the resumed log) and as metrics (for the report). A line past the checkpoint
// (logged just before a crash, see train_loop.cpp) or one that does not parse is dropped.
struct History {
  std::string lines;
  std::vector<EpochMetrics> epochs;
};

History earlier_epochs(const std::string& metrics_path, int last_epoch) {
  History history;
  std::ifstream in(metrics_path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("epoch") || !j["epoch"].is_number_integer()) continue;
    EpochMetrics m;
    m.epoch = j["epoch"].get<int>();
    if (m.epoch < 1 || m.epoch > last_epoch) continue;
    m.train_loss = number_or_nan(j.value("train_loss", nlohmann::json()));
    m.train_accuracy = number_or_nan(j.value("train_accuracy", nlohmann::json()));
    m.val_loss = number_or_nan(j.value("val_loss", nlohmann::json()));
    m.val_accuracy = number_or_nan(j.value("val_accuracy", nlohmann::json()));
    m.seconds = number_or_nan(j.value("seconds", nlohmann::json()));
    m.lr = number_or_nan(j.value("lr", nlohmann::json()));  // NaN in a log from before schedules
    history.lines += line + "\n";
    history.epochs.push_back(m);
  }
  return history;
}

// The pictures and report.md at the end of `mnist train`. The run is already saved, so a report
// that cannot be drawn is one warning line (the script may have said why just before), not a
// failed training. Returns false when the report was drawn but the script could not print its
// path (stdout on a full disk, or closed): the script said so, and the training's results were
// not all printed, which is an error (exit 1) as it is for mnist's own output.
bool draw_report(const std::string& run_dir) {
  std::string problem;
  try {
    const int status = run_report(run_dir);
    if (status == 0) return true;
    if (status == kReportDrawnButNotPrinted) return false;
    problem = "the report script failed (exit status " + std::to_string(status) + ")";
  } catch (const std::exception& error) {
    problem = error.what();
  }
  std::fprintf(stderr, "mnist: warning: no report drawn: %s; the run is saved, retry with: mnist report %s\n",
               problem.c_str(), run_dir.c_str());
  return true;
}

}  // namespace

bool choose_device(const std::string& device, const char* work) {
  const int gpus = cuda_device_count();
  if (device == "gpu" && gpus == 0)
    throw ConfigError("--device gpu: no CUDA device or driver found (" + cuda_device_absence() +
                      "); use --device cpu (or auto)");
  if (device == "auto" && gpus == 0) std::fprintf(stderr, "no CUDA device found: %s on the CPU\n", work);
  return device == "gpu" || (device == "auto" && gpus > 0);
}


int interrupted_exit_status() {
  const int signal = g_stop_signal.load();
  return 128 + (signal != 0 ? signal : SIGINT);
}

int run_train(const TrainConfig& config) {
  std::optional<InterruptHandler> interrupts(std::in_place);
  validate(config);
  // A bad checkpoint or a mismatched --hidden fails before the data is loaded.
  std::optional<Checkpoint> resume;
  if (!config.resume.empty()) resume = load_resume_point(config);
  const bool on_gpu = choose_device(config.device, "training");
  if (on_gpu) check_gpu_config(config);

  const Dataset dataset = load_dataset(config.resolved_data_dir());
  const DataSplit split = split_dataset(dataset, config);
  if (config.dry_run) {
    std::printf("dry run: the options and the data are fine; would train %s on %d images (validating on %d, "
                "testing on %d) on the %s; nothing was written\n",
                describe_model(model_kind(config), model_sizes(config)).c_str(),
                split.train.count, split.validation.count, split.test.count, on_gpu ? "GPU" : "CPU");
    return 0;
  }

  // A resumed run continues in its checkpoint's directory unless --out names another one.
  std::string out = config.out_dir;
  bool force = config.force;
  bool continuing = false;  // in the resumed run's own directory
  std::string resume_dir;
  History history;
  if (resume) {
    const fs::path parent = fs::path(config.resume).parent_path();
    resume_dir = parent.empty() ? "." : parent.string();
    std::error_code ec;
    if (out.empty() || fs::equivalent(out, resume_dir, ec)) {
      out = resume_dir;
      force = continuing = true;  // it holds the run being continued
    }
    history = earlier_epochs(resume_dir + "/metrics.jsonl", resume->epoch);
  }
  RunDir run(out, force, history.lines);
  if (config.force && !continuing) run.discard_previous_run();
  // Continued elsewhere, the run keeps its best model so far: best.ckpt is only written again
  // when an epoch improves on it.
  const std::string earlier_best = resume_dir + "/best.ckpt";
  if (resume && !continuing && fs::is_regular_file(earlier_best))
    write_file_atomically(run.path() + "/best.ckpt", file_bytes(earlier_best));

  // Augmented training batches are new images each step: the train loss and accuracy are theirs.
  const std::string augmented = config.augment == "none" ? "" : " (augmented: " + config.augment + ")";
  std::printf("training %d images%s, validating on %d, testing on %d; run directory %s\n", split.train.count,
              augmented.c_str(), split.validation.count, split.test.count, run.path().c_str());
  if (resume) {
    const int step = resume_step_in_epoch(config, split, *resume);
    if (step > 0)
      std::printf("resuming %s at epoch %d, step %d of %d\n", config.resume.c_str(), resume->epoch + 1, step,
                  steps_per_epoch(config, split));
    else
      std::printf("resuming %s after epoch %d of %d\n", config.resume.c_str(), resume->epoch, config.epochs);
  }
  std::fflush(stdout);

  const std::unique_ptr<Trainer> trainer = make_trainer(on_gpu, config, split);
  interrupts->training_started(*trainer);
  TrainResult result = resume ? resume_training(config, split, *trainer, run, *resume)
                              : train(config, split, *trainer, run);
  result.epochs.insert(result.epochs.begin(), history.epochs.begin(), history.epochs.end());
  // The versions are added here, not in build_report: run_dir.cpp is also built without the
  // CUDA libraries, for the fuzz harnesses (tests/fuzz).
  nlohmann::json report = build_report(config, result);
  report["versions"] = program_versions();
  run.write_report(report);
  const std::vector<float> logits = trainer->logits(split.test);
  write_file_atomically(run.path() + "/errors.json",
                        errors_json(most_confident_errors(logits.data(), split.test.labels, split.test.count),
                                    split.test, config.dataset));
  std::printf("%s", format_summary(result, config.dataset).c_str());
  const bool has_best = fs::exists(run.path() + "/best.ckpt");
  std::printf("wrote metrics.jsonl, report.json, errors.json, last.ckpt%s in %s\n", has_best ? " and best.ckpt" : "",
              printable(run.path()).c_str());
  std::fflush(stdout);
  // A Ctrl-C after the last step was held until the run's files were all written.
  if (trainer->stop_requested()) {
    std::fprintf(stderr, "mnist: interrupted after the last epoch; the run is complete in %s, no report drawn "
                 "(mnist report %s draws it)\n", printable(run.path()).c_str(), printable(run.path()).c_str());
    return interrupted_exit_status();
  }
  interrupts.reset();  // the report script gets Ctrl-C as it is
  if (!config.no_report && !draw_report(run.path())) return 1;
  return 0;
}

int run_evaluate(const EvaluateConfig& options) {
  if (!options.dataset.empty() && options.dataset != "mnist" && options.dataset != "fashion")
    throw ConfigError("--dataset must be mnist or fashion, got '" + options.dataset + "'");
  check_device_option(options.device);
  const Checkpoint checkpoint = read_checkpoint(options.model);

  // Only what the trainer needs to hold this model. The checkpoint's label smoothing is kept so
  // the test loss is the one its run's report.json shows.
  const ModelState& state = checkpoint.state;
  const nlohmann::json& stored = checkpoint.config;
  TrainConfig config;
  try {
    set_model(config, state.kind, state.sizes);
  } catch (const ConfigError& error) {
    throw CheckpointError(printable(options.model) + ": " + error.what());
  }
  if (stored.contains("label_smoothing") && stored["label_smoothing"].is_number()) {
    // Read as double and checked as validate() checks the option: a crafted 1e39 would not fit
    // a float, and 0.99999999 would round to 1.
    const double smoothing = stored["label_smoothing"].get<double>();
    if (!(smoothing >= 0.0 && smoothing < 1.0 && static_cast<float>(smoothing) < 1.f)) {
      char value[32];
      std::snprintf(value, sizeof value, "%.9g", smoothing);
      throw CheckpointError(printable(options.model) + ": its stored label_smoothing " + value + " is not in [0, 1)");
    }
    config.label_smoothing = static_cast<float>(smoothing);
  }
  const std::string trained_on = trained_dataset(checkpoint);
  config.dataset = options.dataset.empty() ? trained_on : options.dataset;
  // Allowed (how does a digit model do on clothes?), but said, so a mistyped --dataset is not
  // read as a broken model.
  if (config.dataset != trained_on)
    std::fprintf(stderr, "mnist: warning: %s was trained on %s; evaluating it on %s\n",
                 printable(options.model).c_str(), trained_on.c_str(), config.dataset.c_str());
  config.data_dir = options.data_dir;
  config.device = options.device;
  const bool on_gpu = choose_device(config.device, "evaluating");

  const Dataset dataset = load_dataset(config.resolved_data_dir());
  DataSplit split;
  split.test = ImageSlice{dataset.test.pixels.data(), dataset.test.labels.data(), static_cast<int>(dataset.test.count())};
  const std::unique_ptr<Trainer> trainer = make_trainer(on_gpu, config, split);
  trainer->load_state(checkpoint.state);
  std::printf("model %s: %s, %d epoch%s trained on %s; testing on the %d images of %s\n", options.model.c_str(),
              describe_model(state.kind, state.sizes).c_str(), checkpoint.epoch, checkpoint.epoch == 1 ? "" : "s",
              trained_on.c_str(), split.test.count, config.resolved_data_dir().c_str());

  TrainResult result;
  result.device_name = trainer->device_name();
  result.test = trainer->evaluate(split.test);
  std::printf("%s", format_summary(result, config.dataset).c_str());
  return 0;
}

}  // namespace mnist
