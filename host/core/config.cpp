#include "mnist/core/config.h"

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>


namespace mnist {

namespace {
void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

// A float option as the decimal it was given as: the shortest decimal that reads back as the
// same float, so report.json says 0.2 and not 0.20000000298023224 (the float widened to double).
double as_decimal(float x) {
  char text[32];
  const auto [end, error] = std::to_chars(text, text + sizeof text - 1, x);
  if (error != std::errc()) return x;
  *end = '\0';
  return std::strtod(text, nullptr);
}
}  // namespace

void check_device_option(const std::string& device) {
  require(device == "auto" || device == "cpu" || device == "gpu",
          "--device must be auto, cpu or gpu, got '" + device + "'");
}

void validate(const TrainConfig& c) {
  require(c.model == "mlp" || c.model == "cnn", "--model must be mlp or cnn, got '" + c.model + "'");
  require(!c.hidden.empty(), "--hidden: give at least one hidden layer width, e.g. --hidden 512,512");
  for (int width : c.hidden)
    require(width >= 1 && width <= 65536, "--hidden: every width must be in 1..65536, got " + std::to_string(width));
  if (c.model == "cnn") {
    require(c.hidden.size() == 1, "--hidden: the CNN has one dense layer: give one width, e.g. --hidden 1024");
    require(c.channels.size() == 2, "--channels: give the filters of the two convolutions, e.g. --channels 32,64");
    for (int filters : c.channels)
      require(filters >= 1 && filters <= 4096, "--channels: every count must be in 1..4096, got " + std::to_string(filters));
    require(c.kernel >= 1 && c.kernel <= 15 && c.kernel % 2 == 1,
            "--kernel must be an odd number in 1..15 (k x k convolutions that keep the image size), got " +
                std::to_string(c.kernel));
  }
  require(std::isfinite(c.dropout) && c.dropout >= 0.f && c.dropout < 1.f, "--dropout must be in [0, 1)");
  require(std::isfinite(c.lr) && c.lr > 0.f && c.lr <= 10.f, "--lr must be a finite number in (0, 10]");
  require(c.lr_schedule == "constant" || c.lr_schedule == "cosine" || c.lr_schedule == "onecycle" ||
              c.lr_schedule == "step",
          "--lr-schedule must be constant, cosine, onecycle or step, got '" + c.lr_schedule + "'");
  require(std::isfinite(c.warmup_epochs) && c.warmup_epochs >= 0.f && c.warmup_epochs <= float(c.epochs),
          "--warmup-epochs must be in [0, --epochs]");
  require(std::isfinite(c.min_lr) && c.min_lr >= 0.f && c.min_lr <= c.lr, "--min-lr must be in [0, --lr]");
  require(std::isfinite(c.lr_decay) && c.lr_decay > 0.f && c.lr_decay <= 1.f, "--lr-decay must be in (0, 1]");
  require(c.lr_step >= 1 && c.lr_step <= 100000, "--lr-step must be in 1..100000 (epochs)");
  require(c.early_stop >= 0 && c.early_stop <= 100000, "--early-stop must be in 0..100000 (epochs; 0: never)");
  require(c.early_stop == 0 || c.val_split > 0.f,
          "--early-stop watches the validation accuracy: it needs a validation split (--val-split > 0)");
  require(c.augment == "none" || c.augment == "affine" || c.augment == "elastic",
          "--augment must be none, affine or elastic, got '" + c.augment + "'");
  require(std::isfinite(c.shift) && c.shift >= 0.f && c.shift <= 14.f, "--shift must be in [0, 14] (pixels)");
  require(std::isfinite(c.rotate) && c.rotate >= 0.f && c.rotate <= 180.f, "--rotate must be in [0, 180] (degrees)");
  require(std::isfinite(c.scale) && c.scale >= 0.f && c.scale <= 0.5f,
          "--scale must be in [0, 0.5] (a relative change of size)");
  require(std::isfinite(c.elastic_alpha) && c.elastic_alpha >= 0.f && c.elastic_alpha <= 100.f,
          "--elastic-alpha must be in [0, 100] (pixels)");
  require(std::isfinite(c.elastic_sigma) && c.elastic_sigma >= 0.5f && c.elastic_sigma <= 10.f,
          "--elastic-sigma must be in [0.5, 10] (pixels)");
  require(std::isfinite(c.weight_decay) && c.weight_decay >= 0.f, "--weight-decay must be a finite number >= 0");
  require(std::isfinite(c.label_smoothing) && c.label_smoothing >= 0.f && c.label_smoothing < 1.f,
          "--label-smoothing must be in [0, 1)");
  require(c.batch_size >= 1 && c.batch_size <= 60000, "--batch-size must be in 1..60000");
  require(c.epochs >= 1 && c.epochs <= 100000, "--epochs must be in 1..100000");
  require(std::isfinite(c.val_split) && c.val_split >= 0.f && c.val_split < 1.f, "--val-split must be in [0, 1)");
  require(c.train_subset >= 0, "--train-subset must be >= 0 (0 means the whole training split)");
  require(c.dataset == "mnist" || c.dataset == "fashion", "--dataset must be mnist or fashion, got '" + c.dataset + "'");
  check_device_option(c.device);
}

void apply_model_defaults(TrainConfig& c, const GivenOptions& given) {
  require(!given.affine || c.augment != "none",
          "--shift, --rotate and --scale are options of --augment affine or elastic (the default is none)");
  require(!given.elastic || c.augment == "elastic", "--elastic-alpha and --elastic-sigma are options of --augment elastic");
  if (c.model != "cnn") {
    require(!given.channels, "--channels is an option of --model cnn (the MLP has no convolutions)");
    require(!given.kernel, "--kernel is an option of --model cnn (the MLP has no convolutions)");
    return;
  }
  if (!given.hidden) c.hidden = {1024};
  if (!given.dropout) c.dropout = 0.5f;
}

nlohmann::json to_json(const TrainConfig& c) {
  nlohmann::json j = {{"model", c.model},
          {"hidden", c.hidden},
          {"dropout", as_decimal(c.dropout)},
          {"lr", as_decimal(c.lr)},
          {"lr_schedule", c.lr_schedule},
          {"warmup_epochs", as_decimal(c.warmup_epochs)},
          {"min_lr", as_decimal(c.min_lr)},
          {"lr_decay", as_decimal(c.lr_decay)},
          {"lr_step", c.lr_step},
          {"early_stop", c.early_stop},
          {"augment", c.augment},
          {"weight_decay", as_decimal(c.weight_decay)},
          {"optimizer", c.adamw ? "adamw" : "adam"},
          {"label_smoothing", as_decimal(c.label_smoothing)},
          {"batch_size", c.batch_size},
          {"epochs", c.epochs},
          {"val_split", as_decimal(c.val_split)},
          {"seed", c.seed},
          {"dataset", c.dataset},
          {"data_dir", c.resolved_data_dir()},
          {"device", c.device},
          {"train_subset", c.train_subset},
          {"drop_last", c.drop_last},
          {"graph", !c.no_graph},
          {"tf32", c.tf32}};
  if (c.augment != "none") {
    j["shift"] = as_decimal(c.shift);
    j["rotate"] = as_decimal(c.rotate);
    j["scale"] = as_decimal(c.scale);
  }
  if (c.augment == "elastic") {
    j["elastic_alpha"] = as_decimal(c.elastic_alpha);
    j["elastic_sigma"] = as_decimal(c.elastic_sigma);
  }
  if (c.model == "cnn") {
    j["channels"] = c.channels;
    j["kernel"] = c.kernel;
  }
  return j;
}

bool same_setting(const nlohmann::json& a, const nlohmann::json& b) {
  // Numbers as the floats the options are: 0.2 and 0.20000000298023224 (how earlier versions
  // wrote a float) are the same --dropout.
  // (A stored value beyond the float range is compared as it is: narrowing it is undefined.)
  const auto as_float = [](double x) { return std::fabs(x) <= FLT_MAX ? double(float(x)) : x; };
  if (a.is_number_float() || b.is_number_float())
    return a.is_number() && b.is_number() && as_float(a.get<double>()) == as_float(b.get<double>());
  return a == b;
}

}  // namespace mnist
