// `mnist`: the command line. It parses options into a config and hands over to the
// subcommand; every failure reaches the user as one line on stderr and a non-zero exit.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <map>
#include <string>
#include <vector>

#include "mnist/cli/augment_command.h"
#include "mnist/core/check.h"
#include "mnist/io/checkpoint.h"
#include "mnist/core/config.h"
#include "mnist/core/device.h"
#include "mnist/data/idx.h"
#include "mnist/cli/predict.h"
#include "mnist/core/printable.h"
#include "mnist/cli/script_commands.h"
#include "mnist/cli/serve_command.h"
#include "mnist/cli/train_command.h"
#include "mnist/train/trainer.h"
#include "mnist/cli/versions.h"

namespace {

// A path given as '' (most often an unset shell variable, as in --out "$RUN") is refused rather
// than taken as "not given", which would quietly train from scratch or into a fresh run directory.
const CLI::Validator kNonEmptyPath(
    [](std::string& value) { return value.empty() ? std::string("is empty; give a path") : std::string(); }, "");

// --seed as a decimal number of 64 bits. CLI11 alone reads -1 and 10^20 as 2^64 - 1 without a
// word, so two different mistakes would silently train with the same, unasked-for seed; and it
// reads '010' as octal 8. Leading zeros are decimal: the value is rewritten without them.
const CLI::Validator kSeed(
    [](std::string& value) {
      const std::string refusal = "must be a whole number in 0..18446744073709551615, got '" + value + "'";
      if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos) return refusal;
      value = value.substr(std::min(value.find_first_not_of('0'), value.size() - 1));
      errno = 0;
      std::strtoull(value.c_str(), nullptr, 10);
      return errno == ERANGE ? refusal : std::string();
    },
    "");

// The numbers of the other options are read in decimal only. CLI11 alone takes '' as 0, reads
// '010' as octal 8 and '0x10' (also for the fractional options: '0x1p-3') as hexadecimal, so an
// unset shell variable or a zero-padded number trained another run than the one asked for,
// without a word. Leading zeros are decimal: '010' is ten (the value is rewritten as '10').
const CLI::Validator kDecimalWholeNumber(
    [](std::string& value) {
      if (value.empty()) return std::string("is empty; give a whole number");
      const std::size_t sign = value[0] == '-' || value[0] == '+' ? 1 : 0;
      if (value.size() == sign || value.find_first_not_of("0123456789", sign) != std::string::npos)
        return "must be a whole number (in decimal), got '" + value + "'";
      const std::size_t first = std::min(value.find_first_not_of('0', sign), value.size() - 1);
      value = value.substr(0, sign) + value.substr(first);
      return std::string();
    },
    "");

// Whether text is a decimal number: [+-] digits [. digits] [e|E [+-] digits], with at least one
// digit before or after the point. Checked by hand: std::regex_match recurses once a character and
// overflowed the stack on a value of some 50,000 characters.
bool is_decimal(const std::string& text) {
  std::size_t at = 0;
  const auto sign = [&] { at += at < text.size() && (text[at] == '+' || text[at] == '-') ? 1 : 0; };
  const auto digits = [&] {
    const std::size_t start = at;
    while (at < text.size() && text[at] >= '0' && text[at] <= '9') ++at;
    return at - start;
  };
  sign();
  std::size_t mantissa_digits = digits();
  if (at < text.size() && text[at] == '.') {
    ++at;
    mantissa_digits += digits();
  }
  if (mantissa_digits == 0) return false;
  if (at < text.size() && (text[at] == 'e' || text[at] == 'E')) {
    ++at;
    sign();
    if (digits() == 0) return false;
  }
  return at == text.size();
}

// nan and inf pass, for the range checks to refuse with the option's own range.
const CLI::Validator kDecimalNumber(
    [](std::string& value) {
      if (value.empty()) return std::string("is empty; give a number");
      std::string word = value.substr(value[0] == '+' || value[0] == '-' ? 1 : 0);
      std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
      if (is_decimal(value) || word == "nan" || word == "inf" || word == "infinity") return std::string();
      return "must be a decimal number (like 0.001 or 1e-3), got '" + value + "'";
    },
    "");

// The items of a comma-separated list, empty ones included ("512,,512": 512, "", 512).
std::vector<std::string> comma_items(const std::string& text) {
  std::vector<std::string> items;
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    items.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return items;
}

// --hidden and --channels: whole numbers separated by single commas. Each argument is split here,
// not by CLI11, whose splitting drops empty items: '512,,512' trained a 512-512 model without a
// word, and a lone ',' took the option after it as the list.
CLI::Validator whole_number_list(const std::string& example) {
  return CLI::Validator(
      [example](std::string& value) {
        const std::string advice = "; give whole numbers separated by commas, e.g. " + example;
        if (value.empty()) return "is empty" + advice;
        for (const std::string& item : comma_items(value)) {
          if (item.empty()) return "'" + value + "' has an empty item" + advice;
          if (item.find_first_not_of("0123456789") != std::string::npos)
            return "'" + item + "' is not a whole number" + advice;
          if (item.size() > 9) return "'" + item + "' is far too large";  // and would overflow an int
        }
        return std::string();
      },
      "");
}

// The numbers of whole_number_list-checked arguments, in order.
std::vector<int> whole_numbers(const std::vector<std::string>& arguments) {
  std::vector<int> numbers;
  for (const std::string& argument : arguments)
    for (const std::string& item : comma_items(argument)) numbers.push_back(std::stoi(item));
  return numbers;
}

// The options whose text is parsed after CLI11 (whole_numbers), and where they go.
struct ListOptions {
  std::vector<std::string> hidden, channels;
  std::string recipe;
};

// --augment and its parameters: of `mnist train`, and of `mnist augment`, which draws them.
void add_augmentation_options(CLI::App& app, mnist::TrainConfig& c) {
  app.add_option("--augment", c.augment,
                   "Augment training batches (never validation or test): none, affine (random shift, rotation and "
                   "scale per image) or elastic (affine plus a smoothed random displacement field, Simard et al. "
                   "2003); `mnist augment` draws examples")
      ->capture_default_str();
  app.add_option("--shift", c.shift, "affine, elastic: the largest shift, in pixels, along each axis")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  app.add_option("--rotate", c.rotate, "affine, elastic: the largest rotation, in degrees, either way")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  app.add_option("--scale", c.scale, "affine, elastic: the largest relative change of size (0.1: 90% to 110%)")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  app.add_option("--elastic-alpha", c.elastic_alpha, "elastic: the displacement per unit of smoothed noise, in pixels")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  app.add_option("--elastic-sigma", c.elastic_sigma, "elastic: the width of the Gaussian that smooths the noise, in pixels")
      ->transform(kDecimalNumber)
      ->capture_default_str();
}

// --recipe NAME: the options of a measured recipe (README, docs/performance.md), each applied
// unless the command line gives that option itself.
struct Recipe {
  const char* name;
  std::vector<std::pair<const char*, const char*>> options;
};
const Recipe kRecipes[] = {
    {"mlp-best",
     {{"--model", "mlp"}, {"--hidden", "1024,1024"}, {"--augment", "elastic"}, {"--lr-schedule", "cosine"},
      {"--warmup-epochs", "1"}, {"--epochs", "40"}}},
    {"cnn-best",
     {{"--model", "cnn"}, {"--augment", "affine"}, {"--lr-schedule", "cosine"}, {"--warmup-epochs", "1"},
      {"--epochs", "20"}}},
};

void apply_recipe(CLI::App& train, const std::string& name) {
  const auto recipe = std::find_if(std::begin(kRecipes), std::end(kRecipes),
                                   [&](const Recipe& r) { return name == r.name; });
  if (recipe == std::end(kRecipes))
    throw mnist::ConfigError("--recipe must be mlp-best or cnn-best, got '" + mnist::printable(name) + "'");
  for (const auto& [option_name, value] : recipe->options) {
    CLI::Option* option = train.get_option(option_name);
    if (option->count() > 0) continue;
    option->add_result(value);
    option->run_callback();
  }
}

// Which augmentation parameters a command line of add_augmentation_options gave.
mnist::GivenOptions augmentation_given(const CLI::App& app) {
  mnist::GivenOptions given;
  given.affine = app.count("--shift") + app.count("--rotate") + app.count("--scale") > 0;
  given.elastic = app.count("--elastic-alpha") + app.count("--elastic-sigma") > 0;
  return given;
}

void add_train_options(CLI::App& train, mnist::TrainConfig& c, ListOptions& lists) {
  train.add_option("--recipe", lists.recipe,
                   "A measured recipe: mlp-best or cnn-best (the README's table); options given beside it win");
  train.add_option("--model", c.model,
                   "mlp (784-hidden...-10) or cnn (conv 5x5 32 -> pool -> conv 5x5 64 -> pool -> dense 1024 -> 10, "
                   "convolutions through cuDNN on the GPU)")
      ->capture_default_str();
  train.add_option("--hidden", lists.hidden,
                   "Hidden layer widths, comma-separated (mlp); the width of the one dense layer (cnn) "
                   "[default: 512,512 (mlp), 1024 (cnn)]")
      ->type_name("INT")
      ->check(whole_number_list("512,512"));
  train.add_option("--dropout", c.dropout,
                   "Dropout probability of the hidden layers (mlp) or the dense layer (cnn), in [0, 1) "
                   "[default: 0.2 (mlp), 0.5 (cnn)]")
      ->transform(kDecimalNumber);
  for (int filters : c.channels) lists.channels.push_back(std::to_string(filters));
  train.add_option("--channels", lists.channels, "cnn: filters of the two convolutions, comma-separated")
      ->type_name("INT")
      ->check(whole_number_list("32,64"))
      ->capture_default_str();
  train.add_option("--kernel", c.kernel, "cnn: k x k convolutions (odd k, padded to keep the image size)")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  train.add_option("--lr", c.lr, "Adam learning rate (the schedule's peak)")->transform(kDecimalNumber)->capture_default_str();
  train.add_option("--lr-schedule", c.lr_schedule,
                   "constant, cosine (down to --min-lr over the run), onecycle (from lr/25 up to lr over the warm-up, "
                   "then cosine down) or step (times --lr-decay every --lr-step epochs)")
      ->capture_default_str();
  train.add_option("--warmup-epochs", c.warmup_epochs,
                   "Linear warm-up from 0 (onecycle: from lr/25) over this many epochs; onecycle's 0 means 30% of the run")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  train.add_option("--min-lr", c.min_lr, "cosine, onecycle: the rate at the end of the run")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  train.add_option("--lr-decay", c.lr_decay, "step: the factor applied every --lr-step epochs")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  train.add_option("--lr-step", c.lr_step, "step: epochs between decays")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  train.add_option("--early-stop", c.early_stop,
                   "Stop after this many epochs without a better validation accuracy (0: never); best.ckpt "
                   "holds the best epoch")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  add_augmentation_options(train, c);
  train.add_option("--weight-decay", c.weight_decay, "L2 penalty (Adam) or decoupled decay (--adamw)")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  train.add_flag("--adamw", c.adamw, "Use AdamW (decoupled weight decay) instead of Adam");
  train.add_option("--label-smoothing", c.label_smoothing, "Label smoothing of the cross-entropy, in [0, 1)")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  train.add_option("--batch-size", c.batch_size, "Images per training step")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  train.add_option("--epochs", c.epochs, "Passes over the training split")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  train.add_option("--val-split", c.val_split,
                   "Fraction of the 60,000 training images held out for validation (the last ones), in [0, 1)")
      ->transform(kDecimalNumber)
      ->capture_default_str();
  train.add_option("--seed", c.seed, "Seed of initialisation, shuffling and dropout")
      ->transform(kSeed)
      ->capture_default_str();
  train.add_option("--dataset", c.dataset, "mnist or fashion")->capture_default_str();
  train.add_option("--data-dir", c.data_dir, "Folder with the four IDX files (raw or .gz) [default: data/<dataset>]")
      ->check(kNonEmptyPath);
  train.add_option("--device", c.device, "auto (GPU if present, else CPU), cpu or gpu")->capture_default_str();
  train.add_option("--out", c.out_dir, "Run directory for metrics.jsonl and report.json [default: runs/<timestamp>]")
      ->check(kNonEmptyPath);
  train.add_option("--train-subset", c.train_subset, "Train on the first N training images only (0: all)")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  train.add_flag("--drop-last", c.drop_last,
                 "Drop the last partial batch of each epoch (default: train on it, averaged over its own size)");
  train.add_flag("--force", c.force,
                 "Reuse an --out directory that already holds a run (its checkpoints, report and pictures are "
                 "deleted first)");
  train.add_flag("--no-report", c.no_report,
                 "Do not draw the report (curves.png, confusion.png, errors.png, report.md) at the end; "
                 "`mnist report RUN_DIR` draws it later");
  train.add_flag("--dry-run", c.dry_run,
                 "Check the options, the checkpoint to resume and the data, say what would be trained, and exit "
                 "without training or writing anything");
  train.add_flag("--no-graph", c.no_graph, "GPU: launch each kernel on the stream instead of replaying a CUDA graph");
  train.add_flag("--tf32", c.tf32, "GPU: TF32 tensor-core GEMMs and convolutions (default: full fp32)");
  train.add_option("--resume", c.resume,
                   "Continue from a checkpoint (a run's last.ckpt or best.ckpt) up to --epochs, in its run directory "
                   "unless --out is given; pass the options of the original run again. After Ctrl-C, last.ckpt "
                   "continues at the very step it stopped at and ends with the same weights as an uninterrupted "
                   "run; only the train loss/accuracy logged for that one epoch cover just the steps run after "
                   "the resume")
      ->check(kNonEmptyPath);
}

void add_augment_command_options(CLI::App& augment, mnist::TrainConfig& c, mnist::AugmentPicture& picture) {
  augment.add_option("--out", picture.out, "The PNG to write")->required()->check(kNonEmptyPath);
  add_augmentation_options(augment, c);
  augment.add_option("--rows", picture.rows, "Training images, one a row (the first of each digit, then the next)")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  augment.add_option("--versions", picture.versions, "Augmented versions of each, beside it")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  augment.add_option("--zoom", picture.zoom, "Screen pixels per image pixel")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  augment.add_option("--seed", c.seed, "Seed of the draws, as in mnist train (the same seed draws the same versions)")
      ->transform(kSeed)
      ->capture_default_str();
  augment.add_option("--dataset", c.dataset, "mnist or fashion")->capture_default_str();
  augment.add_option("--data-dir", c.data_dir, "Folder with the four IDX files (raw or .gz) [default: data/<dataset>]")
      ->check(kNonEmptyPath);
}

void add_evaluate_options(CLI::App& evaluate, mnist::EvaluateConfig& c) {
  evaluate.add_option("--model", c.model, "Checkpoint to evaluate (a run's last.ckpt or best.ckpt)")
      ->required()
      ->check(kNonEmptyPath);
  // Empty means "not given" inside EvaluateConfig, so an empty value ('' from an unset variable)
  // is refused here rather than quietly testing on the model's own dataset.
  evaluate.add_option("--dataset", c.dataset, "mnist or fashion [default: the one the model was trained on]")
      ->check(CLI::Validator(
          [](std::string& value) { return value.empty() ? std::string("is empty; give mnist or fashion") : ""; }, ""));
  evaluate.add_option("--data-dir", c.data_dir, "Folder with the four IDX files (raw or .gz) [default: data/<dataset>]")
      ->check(kNonEmptyPath);
  evaluate.add_option("--device", c.device, "auto (GPU if present, else CPU), cpu or gpu")->capture_default_str();
}

void add_predict_options(CLI::App& predict, std::string& model, std::vector<std::string>& files,
                         mnist::PredictOptions& options) {
  predict.add_option("--model", model, "Checkpoint to predict with (a run's last.ckpt or best.ckpt)")
      ->required()
      ->check(kNonEmptyPath);
  predict.add_option("FILE", files,
                     "Images of one digit each, any size up to 8192x8192: PNG (any colour type, bit depth, palette, "
                     "interlace; transparency becomes paper), JPEG or PGM (P2/P5). Each is prepared as MNIST's "
                     "digits were: ink made white on black, the ink's box scaled to fit 20x20 (aspect kept) and "
                     "centred in 28x28 by its centre of mass; an image that already is an MNIST digit is used as "
                     "it is")
      ->required()
      ->check(kNonEmptyPath);
  static const std::map<std::string, mnist::Invert> kInvert{
      {"auto", mnist::Invert::kAuto}, {"yes", mnist::Invert::kYes}, {"no", mnist::Invert::kNo}};
  predict
      .add_option("--invert", options.invert,
                  "auto (dark ink on light paper when the border is bright), yes (the ink is dark) or no")
      ->transform(CLI::CheckedTransformer(kInvert))
      ->default_str("auto");
  predict.add_flag("--show", options.show, "Also print the 28x28 image the model saw, as text shades");
  predict.add_option("--top", options.top, "Print the K most likely digits with their probabilities")
      ->check(CLI::Range(1, 10))
      ->capture_default_str();
  predict.add_option("--device", options.device,
                     "cpu, gpu or auto (GPU if present): where all the files run through the model as one batch")
      ->capture_default_str();
  predict.add_flag("--json", options.json,
                   "One JSON object per file on stdout: file, digit, probability, top, class (Fashion-MNIST), "
                   "pixels (with --show), or file and error");
}

void add_serve_options(CLI::App& serve, mnist::ServeOptions& options) {
  serve.add_option("--model", options.model, "Checkpoint to serve (a run's best.ckpt or last.ckpt), loaded once")
      ->required()
      ->check(kNonEmptyPath);
  serve.add_option("--host", options.host,
                   "Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every network (anyone who can "
                   "reach it can use it)")
      ->check(kNonEmptyPath)
      ->capture_default_str();
  serve.add_option("--port", options.port, "TCP port (0: any free one, named in the first line printed)")
      ->transform(kDecimalWholeNumber)
      ->capture_default_str();
  serve.add_option("--device", options.device, "cpu, gpu or auto (GPU if present): where the model runs")
      ->capture_default_str();
  serve.add_option("--timeout", options.timeout, "Seconds to read a request or write a response before giving up")
      ->transform(kDecimalNumber)
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  serve.add_option("--batch-window", options.batch_window_ms,
                   "Milliseconds a request waits for others to share its forward pass (0: only those already "
                   "waiting)")
      ->transform(kDecimalNumber)
      ->check(CLI::Range(0.0, 1000.0))
      ->capture_default_str();
  serve.add_option("--max-batch", options.max_batch, "Images in one forward pass at most")
      ->transform(kDecimalWholeNumber)
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  serve.add_option("--threads", options.threads, "Connections served at once")
      ->transform(kDecimalWholeNumber)
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
}

// An argument as the shell must see it: bare when it is plainly safe, else single-quoted.
std::string shell_quoted(const std::string& arg) {
  const bool plain = !arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                           "0123456789_-+=.,:/@%") == std::string::npos;
  if (plain) return arg;
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The command that continues an interrupted `mnist train`: the same arguments, with --resume
// (replaced if it was given) naming the checkpoint just saved.
std::string resume_command(int argc, char** argv, const std::string& checkpoint) {
  std::string command = shell_quoted(argv[0]);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--resume") == 0) {
      ++i;  // and its value
      continue;
    }
    if (std::strncmp(argv[i], "--resume=", 9) == 0) continue;
    command += " " + shell_quoted(argv[i]);
  }
  return command + " --resume " + shell_quoted(checkpoint);
}

// The exit status once the command is done: a command whose results could not all be written to
// standard output (a full disk under `> results.txt`, a closed stdout) has not succeeded, though
// printf said nothing at the time.
int status_after_flushing_stdout(int status, bool training) {
  errno = 0;
  const bool failed = std::fflush(stdout) != 0 || std::ferror(stdout);
  if (!failed) return status;
  const int error = errno;
  // errno is 0 when the failed write was an earlier one (ferror), whose reason is gone.
  const std::string reason = error != 0 ? std::string(" (") + std::strerror(error) + ")" : "";
  std::fprintf(stderr, "mnist: error: writing to standard output failed%s: not all the results were printed%s\n",
               reason.c_str(), training ? "; the run directory holds them" : "");
  return status == 0 ? 1 : status;
}

}  // namespace

int main(int argc, char** argv) {
  // Runs last, once the command's objects have freed their device memory: under
  // MNIST_RESET_DEVICE_AT_EXIT=1 the CUDA context is destroyed, so memcheck's leak check reports.
  struct ResetDeviceAtExit {
    ~ResetDeviceAtExit() { mnist::reset_device_if_asked(); }
  } reset_device_at_exit;
  CLI::App app{"mnist: train and evaluate handwritten-digit classifiers on an NVIDIA GPU (or the CPU)", "mnist"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] {
    std::string text = "mnist: the versions it was built with and runs on (also in each run's report.json)";
    const nlohmann::json versions = mnist::program_versions();
    for (auto it = versions.begin(); it != versions.end(); ++it)
      text += "\n  " + it.key() + std::string(14 - std::min<std::size_t>(it.key().size(), 13), ' ') +
              it.value().get<std::string>();
    return text;
  }, "Print the versions of the compiler, CUDA runtime and driver, cuBLAS, cuDNN and OpenBLAS, and exit");
  mnist::TrainConfig config;
  ListOptions lists;
  CLI::App* train = app.add_subcommand("train", "Train the MLP (or --model cnn) and report test accuracy");
  add_train_options(*train, config, lists);
  mnist::EvaluateConfig evaluate_config;
  CLI::App* evaluate =
      app.add_subcommand("evaluate", "Test accuracy, loss and confusion matrix of a checkpoint on the test set");
  add_evaluate_options(*evaluate, evaluate_config);
  std::string predict_model;
  std::vector<std::string> predict_files;
  mnist::PredictOptions predict_options;
  CLI::App* predict = app.add_subcommand(
      "predict", "Print the digit (and its probability) in each image: PNG, JPEG or PGM, any size, dark or light ink");
  add_predict_options(*predict, predict_model, predict_files, predict_options);
  mnist::TrainConfig augment_config;
  augment_config.augment = "affine";
  mnist::AugmentPicture augment_picture;
  CLI::App* augment = app.add_subcommand(
      "augment", "Draw training digits beside augmented versions of them (a PNG), to see what --augment and its "
                 "parameters do before training with them");
  add_augment_command_options(*augment, augment_config, augment_picture);
  std::string report_dir;
  CLI::App* report = app.add_subcommand(
      "report", "Draw a run's learning curves, confusion matrix and misclassified digits (PNGs and "
                "report.md in the run directory); needs python3-matplotlib");
  report->add_option("RUN_DIR", report_dir, "Run directory of a finished training (holds report.json)")
      ->required()
      ->check(kNonEmptyPath);
  mnist::ServeOptions serve_options;
  CLI::App* serve = app.add_subcommand(
      "serve", std::string("A page to draw a digit on and see what the model reads, and a JSON API (POST /predict), "
                           "over HTTP on 127.0.0.1:8080") +
                   (mnist::serve_available() ? "" : " (not in this build: it needs libcpp-httplib-dev)"));
  add_serve_options(*serve, serve_options);
  // Listed here for `mnist --help`; its options are the tune script's own (mnist tune --help).
  app.add_subcommand("tune", "Search hyperparameters with Optuna, each trial an `mnist train` process; one "
                             "study shared by any number of workers through PostgreSQL (mnist tune --help)");

  // CLI11 answers a word that is no command with "A subcommand is required", naming neither.
  if (argc >= 2 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const CLI::App* command : app.get_subcommands([](CLI::App*) { return true; })) {
      known = known || command->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + command->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "mnist: error: unknown command '%s'; the commands are %s (see mnist --help)\n",
                   mnist::printable(argv[1]).c_str(), names.c_str());
      return 2;
    }
  }

  if (argc >= 2 && std::strcmp(argv[1], "tune") == 0) {
    try {
      mnist::exec_tune(std::vector<std::string>(argv + 2, argv + argc));
    } catch (const std::exception& error) {
      std::fprintf(stderr, "mnist: error: %s\n", error.what());
      return 1;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForVersion& version) {
    return app.exit(version);
  } catch (const CLI::ParseError& error) {
    std::fprintf(stderr, "mnist: error: %s (see mnist --help or mnist <command> --help)\n", error.what());
    return 2;
  }

  try {
    if (train->parsed()) {
      if (!lists.recipe.empty()) apply_recipe(*train, lists.recipe);
      if (train->count("--hidden")) config.hidden = whole_numbers(lists.hidden);
      if (train->count("--channels")) config.channels = whole_numbers(lists.channels);
      mnist::GivenOptions given = augmentation_given(*train);
      given.hidden = train->count("--hidden") > 0;
      given.dropout = train->count("--dropout") > 0;
      given.channels = train->count("--channels") > 0;
      given.kernel = train->count("--kernel") > 0;
      mnist::apply_model_defaults(config, given);
      return status_after_flushing_stdout(mnist::run_train(config), /*training=*/true);
    }
    if (augment->parsed()) {
      mnist::apply_model_defaults(augment_config, augmentation_given(*augment));
      mnist::run_augment(augment_config, augment_picture);
      return status_after_flushing_stdout(0, false);
    }
    if (serve->parsed()) return mnist::run_serve(serve_options);
    if (evaluate->parsed()) return status_after_flushing_stdout(mnist::run_evaluate(evaluate_config), false);
    if (predict->parsed()) return status_after_flushing_stdout(mnist::run_predict(predict_model, predict_files, predict_options), false);
    if (report->parsed()) {
      const int status = mnist::run_report(report_dir);  // the script said what failed, in one line
      return status == mnist::kReportDrawnButNotPrinted ? 1 : status_after_flushing_stdout(status, false);
    }
  } catch (const mnist::ConfigError& error) {
    std::fprintf(stderr, "mnist: error: %s\n", error.what());
    return 2;
  } catch (const mnist::IoError& error) {
    std::fprintf(stderr, "mnist: error: %s\n", error.what());
    return 1;
  } catch (const mnist::CheckpointError& error) {
    std::fprintf(stderr, "mnist: checkpoint error: %s\n", error.what());
    return 1;
  } catch (const mnist::DataError& error) {
    std::fprintf(stderr, "mnist: data error: %s\n", error.what());
    return 1;
  } catch (const mnist::TrainingDiverged& error) {
    std::fprintf(stderr, "mnist: training diverged: %s\n", error.what());
    return 1;
  } catch (const mnist::TrainingInterrupted& error) {
    std::fprintf(stderr, "mnist: %s; resume with: %s\n", error.what(),
                 resume_command(argc, argv, error.checkpoint()).c_str());
    return mnist::interrupted_exit_status();
  } catch (const mnist::CudaError& error) {
    std::string advice;
    if (error.out_of_memory())
      advice = "; " + (train->parsed() ? mnist::out_of_memory_advice(config.batch_size) : "try --device cpu");
    std::fprintf(stderr, "mnist: GPU error: %s%s\n", error.what(), advice.c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    // The CPU path's model, its Adam moments and the data live in host memory; a model that
    // passes the range checks can still be far larger than the machine holds.
    std::fprintf(stderr, "mnist: error: out of host memory%s\n",
                 train->parsed() ? "; try narrower --hidden layers (or --channels), or a smaller --batch-size" : "");
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "mnist: error: %s\n", error.what());
    return 1;
  }
  return 0;
}
