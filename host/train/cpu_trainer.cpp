// The Trainer on the CPU twins: the twin of the GPU driver, with the same model,
// initialisation, dropout masks and optimizer, run through plain C++ and OpenBLAS. One trainer
// for both models: CpuMlp (mlp.h) and CpuCnn (cnn.h) have the same API.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

#include "mnist/data/augmentation.h"
#include "mnist/optim/adam.h"
#include "mnist/optim/adam_config.h"
#include "mnist/model/cnn.h"
#include "mnist/model/mlp.h"
#include "mnist/model/model.h"
#include "mnist/ops/finite_check.h"
#include "mnist/ops/augment.h"
#include "mnist/ops/gather.h"
#include "mnist/ops/gemm.h"
#include "mnist/core/philox.h"
#include "mnist/core/progress.h"
#include "mnist/train/trainer.h"

namespace mnist {

std::vector<std::int32_t> shuffled_indices(int count, std::uint64_t seed, int epoch) {
  std::vector<std::uint64_t> keys(count);
  for (int i = 0; i < count; ++i) keys[i] = shuffle_key(seed, std::uint64_t(epoch), kShuffleStream, std::uint64_t(i));
  std::vector<std::int32_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return keys[a] < keys[b]; });
  return order;
}

namespace {

constexpr int kEvalChunk = 1000;

// Model: CpuMlp or CpuCnn; Shape: its shape type.
template <class Model, class Shape>
class CpuTrainer final : public Trainer {
 public:
  CpuTrainer(const TrainConfig& config, const DataSplit& data, const Shape& shape)
      : config_(config),
        data_(data),
        model_(shape, config.seed, config.dropout, config.label_smoothing, std::max(config.batch_size, kEvalChunk)),
        adam_(adam_config(config, steps_per_epoch(config, data))),
        augment_(augment_params(config)),
        x_(std::size_t(std::max(config.batch_size, kEvalChunk)) * kPixels),
        y_(std::max(config.batch_size, kEvalChunk)),
        indices_(kEvalChunk) {}

  // The thread count is part of what reproduces a run (gemm.h: blas_threads).
  std::string device_name() const override {
    const int threads = twin::blas_threads();
    return "CPU (OpenBLAS, " + std::to_string(threads) + (threads == 1 ? " thread)" : " threads)");
  }

  // Each step is checked: the batch's loss (its sum stays finite while every sample's loss is)
  // and, after Adam, every parameter. The scan of the flat buffer is cheap: ~0.14 ms for the
  // 670k parameters of 784-512-512-10, against ~24 ms for a step of 128 on a 2-core machine.
  EvalTotals train_epoch(int epoch) override {
    const int batch = config_.batch_size;
    const int images = data_.train.count;
    const int steps = steps_per_epoch(config_, data_);
    const std::vector<std::int32_t> order = shuffled_indices(images, config_.seed, epoch);
    EvalTotals totals;
    ProgressBar progress("epoch " + std::to_string(epoch) + "/" + std::to_string(config_.epochs),
                         long(std::min(images, steps * batch)));
    for (int s = take_first_step(); s < steps; ++s) {
      const int first = s * batch;
      const int rows = std::min(batch, images - first);  // the last batch may be partial
      // ++step_ with the batch, as the GPU trainer does
      if (config_.augment != "none")
        twin::gather_augmented_batch(data_.train.pixels, data_.train.labels, order.data() + first, rows, augment_,
                                    x_.data(), y_.data(), &step_);
      else
        twin::gather_batch(data_.train.pixels, data_.train.labels, order.data() + first, rows, kPixels, x_.data(),
                          y_.data(), &step_);
      model_.compute_gradients(x_.data(), y_.data(), rows, step_, &totals);
      if (!std::isfinite(totals.loss_sum))
        throw TrainingDiverged(describe_non_finite(std::isnan(totals.loss_sum) ? kLossNaN : kLossInf), epoch, s + 1,
                               step_);
      adam_update(adam_, model_.buffers(), step_);
      const std::vector<float>& params = model_.buffers().params;
      const std::int64_t flag = twin::finite_check(nullptr, 0, params.data(), params.size(), step_);
      if (flag != kAllFinite) throw TrainingDiverged(describe_non_finite(non_finite_code(flag)), epoch, s + 1, step_);
      progress.update(long(first + rows));
      if (stop_requested()) break;  // Ctrl-C: this step is done; the loop saves it
    }
    return totals;
  }

  EvalTotals evaluate(const ImageSlice& slice, std::int32_t* predictions) override {
    EvalTotals totals;
    for (int first = 0; first < slice.count; first += kEvalChunk) {
      const int rows = std::min(kEvalChunk, slice.count - first);
      std::iota(indices_.begin(), indices_.begin() + rows, first);
      twin::gather_batch(slice.pixels, slice.labels, indices_.data(), rows, kPixels, x_.data(), y_.data());
      model_.evaluate_batch(x_.data(), y_.data(), rows, &totals, predictions ? predictions + first : nullptr);
    }
    return totals;
  }

  std::vector<float> logits(const ImageSlice& slice) override {
    std::vector<float> out(std::size_t(std::max(slice.count, 0)) * kClasses);
    EvalTotals unused;
    for (int first = 0; first < slice.count; first += kEvalChunk) {
      const int rows = std::min(kEvalChunk, slice.count - first);
      std::iota(indices_.begin(), indices_.begin() + rows, first);
      twin::gather_batch(slice.pixels, slice.labels, indices_.data(), rows, kPixels, x_.data(), y_.data());
      model_.evaluate_batch(x_.data(), y_.data(), rows, &unused);
      std::copy(model_.logits(), model_.logits() + std::size_t(rows) * kClasses,
                out.begin() + std::size_t(first) * kClasses);
    }
    return out;
  }

  ModelState state() const override {
    return ModelState{kind_of(model_.shape()), sizes_of(model_.shape()), model_.buffers().params,
                      model_.buffers().adam_m, model_.buffers().adam_v, step_};
  }

  void copy_state(ModelState& out) const override {
    out.kind = kind_of(model_.shape());
    out.sizes = sizes_of(model_.shape());
    out.params.assign(model_.buffers().params.begin(), model_.buffers().params.end());
    out.adam_m.assign(model_.buffers().adam_m.begin(), model_.buffers().adam_m.end());
    out.adam_v.assign(model_.buffers().adam_v.begin(), model_.buffers().adam_v.end());
    out.step = step_;
  }

  void load_state(const ModelState& state) override {
    if (state.kind != kind_of(model_.shape()) || state.sizes != sizes_of(model_.shape()) ||
        state.params.size() != model_.buffers().size() ||
        state.adam_m.size() != state.params.size() || state.adam_v.size() != state.params.size())
      throw std::invalid_argument("model state does not match the model's shape");
    model_.buffers().params = state.params;
    model_.buffers().adam_m = state.adam_m;
    model_.buffers().adam_v = state.adam_v;
    step_ = state.step;
  }

 private:
  TrainConfig config_;
  DataSplit data_;
  Model model_;
  AdamConfig adam_;
  AugmentParams augment_;  // used when config_.augment is not "none"
  std::int64_t step_ = 0;
  std::vector<float> x_;
  std::vector<std::uint8_t> y_;
  std::vector<std::int32_t> indices_;
};

}  // namespace

std::unique_ptr<Trainer> make_cpu_trainer(const TrainConfig& config, const DataSplit& data) {
  if (model_kind(config) == ModelKind::kCnn)
    return std::make_unique<CpuTrainer<CpuCnn, CnnShape>>(config, data, cnn_shape(config));
  return std::make_unique<CpuTrainer<CpuMlp, MlpShape>>(config, data, mlp_shape(config));
}

}  // namespace mnist
