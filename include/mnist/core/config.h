#pragma once
// Everything a training run is asked to do, as parsed from the command line, checked once
// by validate() before any work starts.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "mnist/core/errors.h"

#include <nlohmann/json_fwd.hpp>

namespace mnist {


struct TrainConfig {
  std::string model = "mlp";            // mlp or cnn (model.h)
  std::vector<int> hidden{512, 512};    // MLP: the hidden widths; CNN: the one dense layer's width
  std::vector<int> channels{32, 64};    // CNN: filters of conv1 and conv2
  int kernel = 5;                       // CNN: k×k convolutions, k odd
  float dropout = 0.2f;                 // MLP: every hidden layer; CNN: the dense layer
  float lr = 1e-3f;
  std::string lr_schedule = "constant";  // constant, cosine, onecycle or step (ops/adam.h)
  float warmup_epochs = 0.f;             // linear warm-up; onecycle: 0 means 30% of the run
  float min_lr = 0.f;                    // cosine, onecycle: the rate at the end
  float lr_decay = 0.1f;                 // step: the factor every lr_step epochs
  int lr_step = 10;
  int early_stop = 0;  // stop after this many epochs without a better validation accuracy; 0: never
  // Training batches only (ops/augment.h): none, affine (shift, rotation, scale) or elastic
  // (affine plus a smoothed displacement field). Defaults after Simard et al. 2003 (α 34, σ 4)
  // and Ciresan et al. 2010 (rotations and scalings of up to 15%, here a milder 10° and 10%).
  std::string augment = "none";
  float shift = 2.f;            // pixels, each axis: uniform in [-shift, shift]
  float rotate = 10.f;          // degrees: uniform in [-rotate, rotate]
  float scale = 0.1f;           // uniform in [1 - scale, 1 + scale]
  float elastic_alpha = 34.f;   // pixels per unit of smoothed noise
  float elastic_sigma = 4.f;    // pixels: the Gaussian that smooths the noise
  float weight_decay = 0.f;
  bool adamw = false;
  float label_smoothing = 0.f;
  int batch_size = 128;
  int epochs = 20;
  float val_split = 0.1f;
  std::uint64_t seed = 1;
  std::string dataset = "mnist";
  std::string data_dir;  // empty: data/<dataset>
  std::string device = "auto";
  std::string out_dir;   // empty: a fresh runs/<timestamp>
  int train_subset = 0;  // 0: the whole training split
  bool drop_last = false;
  bool force = false;
  bool no_graph = false;  // GPU: plain stream launches instead of a captured CUDA graph
  bool tf32 = false;      // GPU: TF32 tensor-core GEMMs instead of fp32
  std::string resume;     // a checkpoint to continue from; empty: start from scratch
  bool no_report = false;  // skip drawing the report at the end (not part of the run: to_json leaves it out)
  bool dry_run = false;    // check the options and the data, train nothing (to_json leaves it out)

  std::string resolved_data_dir() const { return data_dir.empty() ? "data/" + dataset : data_dir; }
};

// Throws ConfigError with one line naming the option and the accepted range.
void validate(const TrainConfig& config);
// --device of any command: auto, cpu or gpu, else a ConfigError.
void check_device_option(const std::string& device);

// Which of the options whose defaults depend on --model the command line gave.
struct GivenOptions {
  bool hidden = false, dropout = false, channels = false, kernel = false;
  bool affine = false;   // --shift, --rotate or --scale
  bool elastic = false;  // --elastic-alpha or --elastic-sigma
};
// --model cnn has its own defaults: --hidden 1024 (its one dense layer) and --dropout 0.5;
// --channels and --kernel only mean something to it. Applies those defaults to what was not
// given; throws ConfigError when --channels or --kernel is given to the MLP, or an augmentation
// parameter to a run whose --augment does not use it.
void apply_model_defaults(TrainConfig& config, const GivenOptions& given);

// The run's settings as report.json and checkpoints store them (no --out, --force, --resume).
nlohmann::json to_json(const TrainConfig& config);

// Whether two stored values of one setting (to_json's, or a checkpoint's) mean the same.
bool same_setting(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace mnist
