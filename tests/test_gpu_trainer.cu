// The GPU training driver against its CPU twin: one epoch on a small random dataset must give
// the CPU trainer's parameters, Adam moments, step count and metrics (up to the rounding of
// cuBLAS against OpenBLAS); the CUDA graph must replay bit for bit what plain stream launches
// compute; a seed must fix the run; a checkpoint must round-trip; drop_last must drop. The CNN
// goes through the graph, the CPU comparison and the state checks too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mnist/core/check.h"
#include "mnist/model/cnn.h"
#include "mnist/core/device.h"
#include "mnist/model/mlp.h"
#include "mnist/train/trainer.h"
#include "random_dataset.h"
#include "test_util.h"
#include "totals_util.h"

#if defined(MNIST_GPU_EMULATOR)
#include "emu_inject.h"
#endif

namespace mnist {
namespace {

constexpr int kTrainImages = 300;  // with batch 128: two full batches and a partial one of 44
constexpr int kValidationImages = 100;
constexpr int kTestImages = 100;

// hidden {64, 32}, batch 128, dropout 0.2; the validation split is the last 100 of 400 images.
// Training batches are augmented (elastic, so affine too) unless `augment` says otherwise: the
// trainers' comparisons then also hold the augmented gather to its twin, and graph replays to
// draws that follow the device step.
TrainConfig small_config(std::uint64_t seed, const std::string& augment = "elastic") {
  TrainConfig config;
  config.hidden = {64, 32};
  config.batch_size = 128;
  config.dropout = 0.2f;
  config.epochs = 2;
  config.val_split = float(kValidationImages) / float(kTrainImages + kValidationImages);
  config.seed = seed;
  // A schedule with a warm-up, so every comparison of the GPU with the CPU, and of graph replays
  // with stream launches, also compares the rates Adam read from the device step counter.
  config.lr_schedule = "cosine";
  config.warmup_epochs = 0.5f;
  config.min_lr = 1e-4f;
  config.augment = augment;
  return config;
}

// Random pixels and labels: kTrainImages + kValidationImages in the training file, kTestImages.
class RandomDataset : public test::RandomDataset {
 public:
  RandomDataset(std::mt19937_64& rng, const TrainConfig& config)
      : test::RandomDataset(rng, config, kTrainImages + kValidationImages, kTestImages) {}
};

// Values of `got` farther from `want` than rel·max|want| over the same tensor (the weights or
// the biases of one layer), for a flat buffer in the layout of `shape`. A NaN or inf in `got`
// counts as an outlier with an infinite distance.
struct Disagreement {
  std::size_t outliers = 0;
  double worst_abs = 0;  // max |got - want|
};
Disagreement compare_tensors(const MlpShape& shape, const std::vector<float>& got, const std::vector<float>& want,
                             double rel) {
  Disagreement d;
  if (got.size() != want.size() || got.size() != shape.param_count()) {
    d.outliers = std::numeric_limits<std::size_t>::max();
    d.worst_abs = std::numeric_limits<double>::infinity();
    return d;
  }
  const auto tensor = [&](std::size_t begin, std::size_t end) {
    double scale = 0;
    for (std::size_t i = begin; i < end; ++i) scale = std::max(scale, double(std::fabs(want[i])));
    for (std::size_t i = begin; i < end; ++i) {
      const double diff = std::isfinite(got[i]) ? std::fabs(double(got[i]) - want[i])
                                                : std::numeric_limits<double>::infinity();
      d.worst_abs = std::max(d.worst_abs, diff);
      if (!(diff <= rel * scale)) ++d.outliers;
    }
  };
  for (int l = 0; l < shape.layers(); ++l) {
    tensor(shape.weight_offset(l), shape.bias_offset(l));
    tensor(shape.bias_offset(l), shape.weight_offset(l + 1));
  }
  return d;
}

void expect_totals_equal(const EvalTotals& got, const EvalTotals& want) {
  EXPECT_EQ(got.loss_sum, want.loss_sum);
  EXPECT_EQ(got.correct, want.correct);
  EXPECT_EQ(got.count, want.count);
  for (int i = 0; i < kClasses * kClasses; ++i) EXPECT_EQ(got.confusion[i], want.confusion[i]) << "cell " << i;
}

void expect_states_equal(const ModelState& got, const ModelState& want) {
  EXPECT_EQ(got.kind, want.kind);
  EXPECT_EQ(got.sizes, want.sizes);
  EXPECT_EQ(got.step, want.step);
  EXPECT_TRUE(got.params == want.params) << "parameters differ";
  EXPECT_TRUE(got.adam_m == want.adam_m) << "Adam first moments differ";
  EXPECT_TRUE(got.adam_v == want.adam_v) << "Adam second moments differ";
}

TEST(GpuTrainer, OneEpochMatchesTheCpuTrainer) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const char* augment : {"none", "elastic"}) {
  SCOPED_TRACE(std::string("--augment ") + augment);
  const TrainConfig config = small_config(rng(), augment);
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> cpu = make_cpu_trainer(config, data.split());
  const std::unique_ptr<Trainer> gpu = make_gpu_trainer(config, data.split());
  EXPECT_EQ(gpu->device_name().rfind("GPU ", 0), 0u) << gpu->device_name();
  // The same He-uniform draw, uploaded as it is.
  expect_states_equal(gpu->state(), cpu->state());

  // Same shuffle, same dropout masks, same steps: only the GEMMs round differently.
  const EvalTotals cpu_train = cpu->train_epoch(1);
  const EvalTotals gpu_train = gpu->train_epoch(1);
  EXPECT_EQ(gpu_train.count, static_cast<unsigned long long>(kTrainImages));
  test::expect_totals_close(gpu_train, cpu_train);

  const ModelState want = cpu->state();
  const ModelState got = gpu->state();
  EXPECT_EQ(got.sizes, want.sizes);
  EXPECT_EQ(got.step, 3);
  EXPECT_EQ(got.step, want.step);
  // Tolerance: 1e-4 relative to the largest magnitude in each tensor (the floor keeps values
  // near zero from demanding more than the tensor's own rounding). A few values may exceed it:
  // Adam divides by sqrt(v), so where a gradient is a near-cancelling sum, a rounding-size
  // difference in it moves the update by a visible fraction of lr. Simulated on the CPU
  // (OpenBLAS against float GEMMs summed in another order, 1,000 random runs of this setup),
  // at most 3 of the ~160,000 values below were outside 1e-4 and no parameter was more than
  // 0.4·lr off; 2·lr is one update of opposite sign. A real bug (wrong step, mask, layout or
  // formula) moves most values by ~lr.
  const MlpShape shape(kPixels, config.hidden, kClasses);
  const Disagreement params = compare_tensors(shape, got.params, want.params, 1e-4);
  const Disagreement m = compare_tensors(shape, got.adam_m, want.adam_m, 1e-4);
  const Disagreement v = compare_tensors(shape, got.adam_v, want.adam_v, 1e-4);
  EXPECT_LE(params.outliers + m.outliers + v.outliers, 8u)
      << "parameters " << params.outliers << ", m " << m.outliers << ", v " << v.outliers << " of "
      << shape.param_count() << " each outside 1e-4";
  EXPECT_LE(params.worst_abs, 2.0 * config.lr);

  std::vector<std::int32_t> cpu_predictions(kValidationImages, -1), gpu_predictions(kValidationImages, -2);
  test::expect_totals_close(gpu->evaluate(data.split().validation, gpu_predictions.data()),
                            cpu->evaluate(data.split().validation, cpu_predictions.data()));
  test::expect_predictions_close(gpu_predictions, cpu_predictions);
  test::expect_totals_close(gpu->evaluate(data.split().test), cpu->evaluate(data.split().test));
  }
}

// Two epochs (the first runs as stream launches and is captured at its end, the second replays
// the graph on a new shuffle) with and without the graph: the same bits.
void expect_graph_replay_bit_identical(TrainConfig config, std::mt19937_64& rng) {
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> graph = make_gpu_trainer(config, data.split());
  config.no_graph = true;
  const std::unique_ptr<Trainer> stream = make_gpu_trainer(config, data.split());
  for (int epoch = 1; epoch <= 2; ++epoch) {
    SCOPED_TRACE("epoch " + std::to_string(epoch));
    expect_totals_equal(graph->train_epoch(epoch), stream->train_epoch(epoch));
    expect_states_equal(graph->state(), stream->state());
  }
  ASSERT_TRUE(graph->replays_graphs()) << "the graph was not captured: the comparison compared no graph";
  EXPECT_FALSE(stream->replays_graphs());
  EXPECT_EQ(graph->graph_steps(), 3) << "the epoch's 3 steps are one graph";
  EXPECT_EQ(graph->state().step, 6);
  expect_totals_equal(graph->evaluate(data.split().validation), stream->evaluate(data.split().validation));
}

TEST(GpuTrainer, GraphReplayIsBitIdenticalToStreamLaunches) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const char* augment : {"none", "affine", "elastic"}) {
    SCOPED_TRACE(std::string("--augment ") + augment);
    expect_graph_replay_bit_identical(small_config(rng(), augment), rng);
  }
}

// An epoch longer than one graph may hold replays a graph of that many steps over successive
// windows of its shuffle, then a graph of the rest: the same bits as stream launches. The cap is
// 4 steps here (kMaxGraphSteps, 512, in real runs), with batch 32 over two layouts: 10 full
// batches and a partial one of 7 images (two blocks of 4, then a tail of 2 full steps and the
// partial one), and 8 full batches with drop_last and 7 images dropped (two blocks, no tail).
TEST(GpuTrainer, ALongEpochReplaysBoundedGraphsBitIdenticalToStreamLaunches) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kCap = 4;
  struct Layout {
    int images;
    bool drop_last;
    int steps;
  };
  for (const Layout layout : {Layout{327, false, 11}, Layout{263, true, 8}}) {
    SCOPED_TRACE(std::to_string(layout.images) + " images" + (layout.drop_last ? ", drop_last" : ""));
    TrainConfig config = small_config(rng());
    config.batch_size = 32;
    config.val_split = 0;
    config.drop_last = layout.drop_last;
    const test::RandomDataset data(rng, config, layout.images, kTestImages);
    const std::unique_ptr<Trainer> graph = make_gpu_trainer(config, data.split(), kCap);
    config.no_graph = true;
    const std::unique_ptr<Trainer> stream = make_gpu_trainer(config, data.split(), kCap);
    EXPECT_EQ(graph->graph_steps(), kCap);
    EXPECT_EQ(stream->graph_steps(), 0);
    for (int epoch = 1; epoch <= 3; ++epoch) {
      SCOPED_TRACE("epoch " + std::to_string(epoch));
      expect_totals_equal(graph->train_epoch(epoch), stream->train_epoch(epoch));
      expect_states_equal(graph->state(), stream->state());
    }
    ASSERT_TRUE(graph->replays_graphs()) << "the graphs were not captured: the comparison compared none";
    EXPECT_EQ(graph->graph_steps(), kCap);
    EXPECT_EQ(graph->state().step, 3 * layout.steps);
    expect_totals_equal(graph->evaluate(data.split().test), stream->evaluate(data.split().test));
  }
}

// The real cap: batch 1 over 600 images would be 600 steps in one graph; it is 512 a graph.
// The default model's epoch (422 steps at batch 128) stays one graph; the steps of the split,
// not of the training file, count.
TEST(GpuTrainer, OneGraphHoldsAtMostKMaxGraphStepsSteps) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  TrainConfig config = small_config(rng());
  config.batch_size = 1;
  config.val_split = 0.25f;
  const test::RandomDataset data(rng, config, 800, kTestImages);  // 600 to train on
  EXPECT_EQ(make_gpu_trainer(config, data.split())->graph_steps(), kMaxGraphSteps);
  config.batch_size = 2;
  EXPECT_EQ(make_gpu_trainer(config, data.split())->graph_steps(), 300);
  static_assert(kMaxGraphSteps >= (54000 + 127) / 128, "the default model's epoch is one graph");
}

TEST(GpuTrainer, TheSeedFixesTheRun) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  const auto run = [&](const TrainConfig& c) {
    const std::unique_ptr<Trainer> trainer = make_gpu_trainer(c, data.split());
    std::vector<EvalTotals> totals;
    for (int epoch = 1; epoch <= 2; ++epoch) totals.push_back(trainer->train_epoch(epoch));
    return std::make_pair(totals, trainer->state());
  };
  const auto first = run(config);
  const auto again = run(config);
  for (int e = 0; e < 2; ++e) expect_totals_equal(again.first[e], first.first[e]);
  expect_states_equal(again.second, first.second);

  config.seed += 1;  // another initialisation, shuffle and set of masks
  const auto other = run(config);
  EXPECT_FALSE(other.second.params == first.second.params);
  EXPECT_NE(other.first[0].loss_sum, first.first[0].loss_sum);
}

// copy_state writes state() into the buffers it is given, whatever they held: ones large
// enough keep their memory (the checkpoint loop hands each copy the previous one's buffers),
// empty ones grow.
TEST(GpuTrainer, CopyStateIsStateInTheBuffersItIsGiven) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> trainer = make_gpu_trainer(config, data.split());
  trainer->train_epoch(1);
  const ModelState want = trainer->state();
  ModelState reused;
  reused.params = test::nan_filled(want.params.size() + 5);
  reused.adam_m = test::nan_filled(want.adam_m.size());
  reused.step = -1;
  const float* params_memory = reused.params.data();
  const float* moments_memory = reused.adam_m.data();
  trainer->copy_state(reused);
  expect_states_equal(reused, want);
  EXPECT_EQ(reused.params.data(), params_memory);
  EXPECT_EQ(reused.adam_m.data(), moments_memory);
}

TEST(GpuTrainer, StateRoundTripsAndLoadsACpuCheckpoint) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);

  // GPU → GPU: the state comes back as it went in, and training goes on identically (the
  // restored trainer runs its first epoch as launches after the load, the original replays its
  // graph).
  const std::unique_ptr<Trainer> trained = make_gpu_trainer(config, data.split());
  trained->train_epoch(1);
  const ModelState saved = trained->state();
  const std::unique_ptr<Trainer> restored = make_gpu_trainer(config, data.split());
  restored->load_state(saved);
  expect_states_equal(restored->state(), saved);
  expect_totals_equal(restored->train_epoch(2), trained->train_epoch(2));
  expect_states_equal(restored->state(), trained->state());

  // CPU → GPU: the same parameters evaluate to the same predictions.
  const std::unique_ptr<Trainer> cpu = make_cpu_trainer(config, data.split());
  cpu->train_epoch(1);
  const std::unique_ptr<Trainer> gpu = make_gpu_trainer(config, data.split());
  gpu->load_state(cpu->state());
  expect_states_equal(gpu->state(), cpu->state());
  test::expect_totals_close(gpu->evaluate(data.split().validation), cpu->evaluate(data.split().validation));
  test::expect_totals_close(gpu->evaluate(data.split().test), cpu->evaluate(data.split().test));

  // A state of another shape is refused, as the CPU trainer refuses it.
  ModelState wrong = saved;
  wrong.sizes[1] += 1;
  EXPECT_THROW(gpu->load_state(wrong), std::invalid_argument);
  wrong = saved;
  wrong.adam_v.pop_back();
  EXPECT_THROW(gpu->load_state(wrong), std::invalid_argument);
}

TEST(GpuTrainer, EvaluatesAnySliceLikeTheResidentSplits) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> gpu = make_gpu_trainer(config, data.split());
  gpu->train_epoch(1);

  // A copy of the test split in other host memory is uploaded for the call, not recognised.
  const ImageSlice& test = data.split().test;
  const std::vector<std::uint8_t> pixels(test.pixels, test.pixels + std::size_t(test.count) * kPixels);
  const std::vector<std::uint8_t> labels(test.labels, test.labels + test.count);
  const ImageSlice copy{pixels.data(), labels.data(), test.count};
  std::vector<std::int32_t> resident_predictions(kTestImages, -1), copy_predictions(kTestImages, -2);
  expect_totals_equal(gpu->evaluate(copy, copy_predictions.data()),
                      gpu->evaluate(test, resident_predictions.data()));
  EXPECT_EQ(copy_predictions, resident_predictions);

  // A part of it (its predictions are those of the whole), and nothing at all.
  const int head_count = 37;
  const EvalTotals head = gpu->evaluate(ImageSlice{pixels.data(), labels.data(), head_count});
  unsigned long long head_correct = 0;
  for (int i = 0; i < head_count; ++i) head_correct += resident_predictions[i] == labels[i] ? 1 : 0;
  EXPECT_EQ(head.count, static_cast<unsigned long long>(head_count));
  EXPECT_EQ(head.correct, head_correct);
  EXPECT_EQ(gpu->evaluate(ImageSlice{pixels.data(), labels.data(), 0}).count, 0u);
}

TEST(GpuTrainer, LogitsMatchTheCpuTrainer) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> cpu = make_cpu_trainer(config, data.split());
  cpu->train_epoch(1);
  const std::unique_ptr<Trainer> gpu = make_gpu_trainer(config, data.split());
  gpu->load_state(cpu->state());

  // A resident split, and 10,050 other images: uploaded for the call, two evaluation chunks.
  const int many = 10050;
  std::vector<std::uint8_t> pixels(std::size_t(many) * kPixels);
  for (auto& p : pixels) p = static_cast<std::uint8_t>(rng());
  const std::vector<std::uint8_t> labels = test::random_labels(rng, std::size_t(many));
  for (const ImageSlice& slice : {data.split().test, ImageSlice{pixels.data(), labels.data(), many}}) {
    SCOPED_TRACE(std::to_string(slice.count) + " images");
    const std::vector<float> want = cpu->logits(slice);
    const std::vector<float> got = gpu->logits(slice);
    ASSERT_EQ(got.size(), std::size_t(slice.count) * kClasses);
    ASSERT_EQ(want.size(), got.size());
    // 1e-4 relative to the largest logit: the GEMMs of cuBLAS and OpenBLAS round differently.
    double scale = 0, worst = 0;
    for (float w : want) scale = std::max(scale, double(std::fabs(w)));
    for (std::size_t i = 0; i < got.size(); ++i)
      worst = std::max(worst, std::isfinite(got[i]) ? std::fabs(double(got[i]) - want[i])
                                                    : std::numeric_limits<double>::infinity());
    EXPECT_LE(worst, 1e-4 * scale) << "largest |logit| " << scale;

    // The same forward pass as evaluate(): its predictions are the argmax of these logits.
    std::vector<std::int32_t> predictions(std::size_t(slice.count), -1);
    gpu->evaluate(slice, predictions.data());
    for (int i = 0; i < slice.count; ++i) {
      const float* z = got.data() + std::size_t(i) * kClasses;
      ASSERT_EQ(std::max_element(z, z + kClasses) - z, predictions[std::size_t(i)]) << "image " << i;
    }
  }
  EXPECT_TRUE(gpu->logits(ImageSlice{pixels.data(), labels.data(), 0}).empty());
}

TEST(GpuTrainer, DropLastSkipsThePartialBatch) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  const int full_batches = kTrainImages / config.batch_size;  // 2

  config.drop_last = true;
  const std::unique_ptr<Trainer> dropping = make_gpu_trainer(config, data.split());
  for (int epoch = 1; epoch <= 2; ++epoch) {
    EXPECT_EQ(dropping->train_epoch(epoch).count, static_cast<unsigned long long>(full_batches * config.batch_size));
    EXPECT_EQ(dropping->state().step, std::int64_t(epoch) * full_batches);
  }

  config.drop_last = false;
  const std::unique_ptr<Trainer> keeping = make_gpu_trainer(config, data.split());
  EXPECT_EQ(keeping->train_epoch(1).count, static_cast<unsigned long long>(kTrainImages));
  EXPECT_EQ(keeping->state().step, full_batches + 1);
}

// The benchmarks' device time: CUDA events around each epoch's work on the trainer's stream.
TEST(GpuTrainer, ReportsEachEpochsDeviceTime) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> gpu = make_gpu_trainer(config, data.split());
  EXPECT_TRUE(std::isnan(gpu->last_epoch_device_ms()));  // no epoch yet
  for (int epoch = 1; epoch <= 2; ++epoch) {  // stream launches, then the graph
    gpu->train_epoch(epoch);
    const double ms = gpu->last_epoch_device_ms();
    EXPECT_TRUE(std::isfinite(ms) && ms > 0) << "epoch " << epoch << ": " << ms;
  }
  const std::unique_ptr<Trainer> cpu = make_cpu_trainer(config, data.split());
  cpu->train_epoch(1);
  EXPECT_TRUE(std::isnan(cpu->last_epoch_device_ms()));
}

// time_step_phases (what the benchmarks print where Nsight Systems cannot run): the six prefixes
// of a step in the order it runs them, as launches before the epochs replay a graph and as
// graphs after, and training afterwards exactly as if it had never been called.
void expect_phase_timing_leaves_training_unchanged(const TrainConfig& config, std::mt19937_64& rng) {
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> timed = make_gpu_trainer(config, data.split());
  const std::unique_ptr<Trainer> plain = make_gpu_trainer(config, data.split());
  const auto expect_prefixes = [](const StepPhaseTimes& times) {
    const std::vector<std::string> names = {"gather", "forward", "loss", "backward", "optimizer"};
    ASSERT_EQ(times.prefixes.size(), names.size());
    for (std::size_t i = 0; i < names.size(); ++i) {
      EXPECT_EQ(times.prefixes[i].phase, names[i]);
      EXPECT_TRUE(std::isfinite(times.prefixes[i].ms_per_step) && times.prefixes[i].ms_per_step >= 0)
          << names[i] << ": " << times.prefixes[i].ms_per_step;
    }
  };

  // Before the first epoch (nothing shuffled yet): stream launches.
  const StepPhaseTimes before = timed->time_step_phases(5, 3);
  EXPECT_FALSE(before.graph);
  EXPECT_EQ(before.steps, kTrainImages / 128);  // full batches only: 2 of the 3
  EXPECT_EQ(before.repeats, 3);
  expect_prefixes(before);
  expect_states_equal(timed->state(), plain->state());
  for (int epoch = 1; epoch <= 2; ++epoch) {  // launches and capture, then the graph
    SCOPED_TRACE("epoch " + std::to_string(epoch));
    expect_totals_equal(timed->train_epoch(epoch), plain->train_epoch(epoch));
  }
  ASSERT_TRUE(timed->replays_graphs());

  const StepPhaseTimes after = timed->time_step_phases(1, 2);
  EXPECT_TRUE(after.graph);
  EXPECT_EQ(after.steps, 1);
  expect_prefixes(after);
  expect_states_equal(timed->state(), plain->state());
  expect_totals_equal(timed->train_epoch(3), plain->train_epoch(3));  // the epoch graph still replays
  expect_states_equal(timed->state(), plain->state());
  expect_totals_equal(timed->evaluate(data.split().validation), plain->evaluate(data.split().validation));
}

TEST(GpuTrainer, StepPhaseTimingLeavesTrainingUnchanged) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(rng());
  expect_phase_timing_leaves_training_unchanged(config, rng);
  // The CPU trainer has no device phases to time.
  const RandomDataset data(rng, config);
  EXPECT_TRUE(make_cpu_trainer(config, data.split())->time_step_phases(2, 2).prefixes.empty());
}

// --- a graph the driver refuses, a fault before the capture (the emulator's injected faults) ----

#if defined(MNIST_GPU_EMULATOR)
// Injects `fault` for the life of the object: the emulator behaves normally again however the
// test ends. Declare it before the trainers, so that they are destroyed while it holds.
class InjectedFault {
 public:
  explicit InjectedFault(emu::Fault fault) { emu::inject(fault); }
  ~InjectedFault() { emu::inject(emu::Fault::kNone); }
  InjectedFault(const InjectedFault&) = delete;
  InjectedFault& operator=(const InjectedFault&) = delete;
};
#define MNIST_REQUIRE_INJECTED_FAULTS() MNIST_REQUIRE_GPU()
#else
#define MNIST_REQUIRE_INJECTED_FAULTS() GTEST_SKIP() << "needs the emulator's injected faults (tests/emu/emu_inject.h)"
#endif

std::size_t occurrences(const std::string& text, const std::string& part) {
  std::size_t count = 0;
  for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++count;
  return count;
}

// Captures stderr while alive; ends the capture even when an exception leaves the test, so the
// next test's CaptureStderr does not abort on a capture still running.
class StderrCapture {
 public:
  StderrCapture() { testing::internal::CaptureStderr(); }
  ~StderrCapture() {
    if (!taken_) testing::internal::GetCapturedStderr();
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  std::string take() {
    taken_ = true;
    return testing::internal::GetCapturedStderr();
  }

 private:
  bool taken_ = false;
};

// A driver that cannot instantiate the epoch's graph: the run says so once and trains on as
// --no-graph does, to the same bits.
TEST(GpuTrainer, AGraphTheDriverCannotInstantiateTrainsOnWithoutGraphs) {
  MNIST_REQUIRE_INJECTED_FAULTS();
#if defined(MNIST_GPU_EMULATOR)
  std::mt19937_64 rng(test::fresh_seed());
  TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  const InjectedFault fault(emu::Fault::kGraphsNotSupported);
  const std::unique_ptr<Trainer> refused = make_gpu_trainer(config, data.split());
  config.no_graph = true;
  const std::unique_ptr<Trainer> stream = make_gpu_trainer(config, data.split());
  StderrCapture capture;
  for (int epoch = 1; epoch <= 3; ++epoch) {
    SCOPED_TRACE("epoch " + std::to_string(epoch));
    expect_totals_equal(refused->train_epoch(epoch), stream->train_epoch(epoch));
  }
  const std::string warnings = capture.take();
  expect_states_equal(refused->state(), stream->state());
  EXPECT_FALSE(refused->replays_graphs());
  EXPECT_EQ(occurrences(warnings, "could not be captured"), 1u) << warnings;
  EXPECT_NE(warnings.find("cudaErrorNotSupported"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("training on without graphs"), std::string::npos) << warnings;
#endif
}

// The first epoch's steps may still run when its capture begins; a fault of theirs fails the
// capture. That fault is what the run reports (and ends with), not a graph it could not capture.
TEST(GpuTrainer, AFaultOfTheStepsBeforeTheCaptureIsReportedAsThatFault) {
  MNIST_REQUIRE_INJECTED_FAULTS();
#if defined(MNIST_GPU_EMULATOR)
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  const InjectedFault fault(emu::Fault::kFaultBeforeCapture);
  const std::unique_ptr<Trainer> trainer = make_gpu_trainer(config, data.split());
  StderrCapture capture;
  std::string what = "(no error)";
  try {
    trainer->train_epoch(1);
  } catch (const CudaError& error) {
    what = error.what();
  } catch (const std::exception& error) {
    what = std::string("not a CudaError: ") + error.what();
  }
  const std::string warnings = capture.take();
  EXPECT_NE(what.find("cudaErrorIllegalAddress"), std::string::npos) << what;
  EXPECT_EQ(warnings.find("could not be captured"), std::string::npos) << warnings;
#endif
}

// --- the CNN (--model cnn) behind the same trainer --------------------------------------------
// The model itself is held to CpuCnn step by step in test_cnn.cu (GpuCnn.*); these check what the
// trainer adds: the epoch graph (with the convolution plans of the last, partial batch prepared
// before capture), the state, and the CPU trainer's numbers at the end of an epoch.

// 4 and 8 filters of 5×5, a dense layer of 32, batch 128 (a partial batch of 44 per epoch).
TrainConfig small_cnn_config(std::uint64_t seed) {
  TrainConfig config = small_config(seed);
  config.model = "cnn";
  config.channels = {4, 8};
  config.kernel = 5;
  config.hidden = {32};
  config.dropout = 0.5f;
  config.augment = "affine";
  return config;
}

TEST(GpuCnnTrainer, GraphReplayIsBitIdenticalToStreamLaunches) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  expect_graph_replay_bit_identical(small_cnn_config(rng()), rng);  // states carry the CNN's kind
}

TEST(GpuCnnTrainer, TrainsLikeTheCpuTrainerAndLoadsItsState) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_cnn_config(rng());
  const RandomDataset data(rng, config);
  const std::unique_ptr<Trainer> cpu = make_cpu_trainer(config, data.split());
  const std::unique_ptr<Trainer> gpu = make_gpu_trainer(config, data.split());
  expect_states_equal(gpu->state(), cpu->state());  // the same He-uniform draw
  EXPECT_EQ(gpu->state().kind, ModelKind::kCnn);

  // One epoch from the same weights, shuffle and masks. The loss is continuous in the rounding
  // (1e-3 relative allows for three steps of it); the parameters may differ by a visible part of
  // lr only where Adam amplified a near-zero gradient's rounding or a ReLU/max-pool decision
  // split (test_cnn.cu: at most 254 of 3.3 million after a step). A split at a dense1 unit that
  // few images activate changes its whole gradient column: on the emulator, 1 seed in ~400
  // moved 224 of one unit's 392 weights (MNIST_TEST_SEED=15168755315946472177 with
  // OPENBLAS_NUM_THREADS=1). So at most 1% beyond 0.1·lr, plus one dense1 unit's fan-in and
  // bias; a wrong dropout rate (0.45), lr (×1.5) or batch (127) moved 25% to 73% of them.
  const EvalTotals cpu_train = cpu->train_epoch(1);
  const EvalTotals gpu_train = gpu->train_epoch(1);
  EXPECT_EQ(gpu_train.count, cpu_train.count);
  EXPECT_NEAR(gpu_train.loss_sum, cpu_train.loss_sum, 1e-3 * std::fabs(cpu_train.loss_sum));
  const ModelState want = cpu->state(), got = gpu->state();
  ASSERT_EQ(got.params.size(), want.params.size());
  EXPECT_EQ(got.step, 3);
  std::size_t moved = 0;
  for (std::size_t i = 0; i < got.params.size(); ++i)
    moved += !(std::fabs(double(got.params[i]) - want.params[i]) <= 0.1 * config.lr);
  const std::size_t one_dense1_unit = CnnShape::from_sizes(got.sizes).flat() + 1;
  EXPECT_LE(moved, got.params.size() / 100 + one_dense1_unit) << moved << " of " << got.params.size() << " parameters";

  // CPU → GPU: the same parameters give the same predictions, up to an argmax within rounding.
  gpu->load_state(want);
  expect_states_equal(gpu->state(), want);
  std::vector<std::int32_t> cpu_predictions(kValidationImages, -1), gpu_predictions(kValidationImages, -2);
  const EvalTotals cpu_eval = cpu->evaluate(data.split().validation, cpu_predictions.data());
  const EvalTotals gpu_eval = gpu->evaluate(data.split().validation, gpu_predictions.data());
  EXPECT_EQ(gpu_eval.count, cpu_eval.count);
  EXPECT_NEAR(gpu_eval.loss_sum, cpu_eval.loss_sum, 1e-4 * std::fabs(cpu_eval.loss_sum));
  int agree = 0;
  for (int i = 0; i < kValidationImages; ++i) agree += gpu_predictions[i] == cpu_predictions[i];
  EXPECT_GE(agree, kValidationImages - 1);

  // An MLP state is refused.
  ModelState wrong = want;
  wrong.kind = ModelKind::kMlp;
  EXPECT_THROW(gpu->load_state(wrong), std::invalid_argument);
}

// --drop-last with a remainder: the epoch never runs batch + remainder rows, so no convolution
// plan may be asked for them. Here 10,100 training images at batch 5,100 run one batch; a plan
// for 10,100 rows is larger than the model's workspace (the larger of the batch and the
// 10,000-image evaluation chunk), and the trainer refused to start.
TEST(GpuCnnTrainer, StepPhaseTimingLeavesTrainingUnchanged) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  expect_phase_timing_leaves_training_unchanged(small_cnn_config(rng()), rng);
}

TEST(GpuCnnTrainer, DropLastPlansOnlyTheBatchesItRuns) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  TrainConfig config = small_cnn_config(rng());
  config.channels = {2, 2};
  config.hidden = {8};
  config.batch_size = 5100;
  config.val_split = 0;
  config.drop_last = true;
  const test::RandomDataset data(rng, config, 10100, 10);
  ASSERT_EQ(data.split().train.count, 10100);
  std::unique_ptr<Trainer> trainer;
  ASSERT_NO_THROW(trainer = make_gpu_trainer(config, data.split()));
  EXPECT_EQ(trainer->train_epoch(1).count, 5100ull);
  EXPECT_EQ(trainer->state().step, 1);
}

// CPU-only (label cpu): without a device the driver refuses with a message, not a crash.
TEST(DriverWithoutGpu, MakeGpuTrainerSaysThereIsNoDevice) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  std::mt19937_64 rng(test::fresh_seed());
  const TrainConfig config = small_config(rng());
  const RandomDataset data(rng, config);
  try {
    make_gpu_trainer(config, data.split());
    FAIL() << "make_gpu_trainer succeeded without a CUDA device";
  } catch (const std::runtime_error& error) {  // CudaError is a runtime_error too
    EXPECT_NE(std::string(error.what()).find("no CUDA device"), std::string::npos) << error.what();
  }
}


// --- launches per training step (counted by the emulator) -------------------------------------

#if defined(MNIST_GPU_EMULATOR)
// On a GPU each small kernel costs microseconds of latency whatever it does, so the launches of
// a step are its floor. The emulator counts kernels and library calls as they run; a step's
// count is the difference of two epochs of different lengths over their step counts, and the
// epoch that replays the graph must launch what the stream epoch launched.
double launches_per_step(TrainConfig config, std::mt19937_64& rng) {
  config.val_split = 0;
  const auto epoch_launches = [&](int images, bool graph, int epochs) {
    config.no_graph = !graph;
    const test::RandomDataset data(rng, config, images, kTestImages);
    const std::unique_ptr<Trainer> trainer = make_gpu_trainer(config, data.split());
    std::uint64_t launches = 0;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
      const std::uint64_t before = emu::launches();
      trainer->train_epoch(epoch);
      launches = emu::launches() - before;
    }
    if (graph) EXPECT_TRUE(trainer->replays_graphs());
    return launches;
  };
  const int batch = config.batch_size;
  const std::uint64_t two = epoch_launches(2 * batch, false, 1), five = epoch_launches(5 * batch, false, 1);
  EXPECT_EQ(epoch_launches(5 * batch, true, 2), five) << "a replayed epoch launches what a stream epoch does";
  EXPECT_EQ((five - two) % 3, 0u);
  return double(five - two) / 3;
}
#define MNIST_REQUIRE_LAUNCH_COUNTS() MNIST_REQUIRE_GPU()
#else
#define MNIST_REQUIRE_LAUNCH_COUNTS() GTEST_SKIP() << "needs the emulator's launch count (tests/emu/emu_inject.h)"
double launches_per_step(const TrainConfig&, std::mt19937_64&) { return 0; }
#endif

// An MLP of L layers: the batch gather (which advances the step counter); per hidden layer a GEMM
// and the bias-ReLU-dropout forward; the classifier head forward (the output layer, softmax-cross-
// entropy and the batch's totals); the head backward (the output layer's gradients and, through
// the last hidden layer's ReLU-dropout, that layer's delta and bias gradient); per hidden layer a
// weight-gradient GEMM, and for each one above the first an input-gradient GEMM and the
// ReLU-dropout backward with the bias gradient below; Adam. (The divergence watch rides on the
// head forward and Adam.) The default MLP (two hidden layers) is 12, augmented or not (the
// augmented gather replaces the plain one).
TEST(GpuTrainer, LaunchesPerStepAreCounted) {
  MNIST_REQUIRE_LAUNCH_COUNTS();
  std::mt19937_64 rng(test::fresh_seed());
  for (const char* augment : {"none", "elastic"})
  for (const std::vector<int>& hidden : {std::vector<int>{64, 32}, std::vector<int>{16}}) {
    TrainConfig config = small_config(rng(), augment);
    config.hidden = hidden;
    config.batch_size = 16;
    const int hidden_layers = int(hidden.size());
    const int expected = 1 + 2 * hidden_layers + 1 + 1 + hidden_layers + 2 * (hidden_layers - 1) + 1;
    EXPECT_EQ(launches_per_step(config, rng), expected) << hidden.size() << " hidden layers, --augment " << augment;
  }
}

// The CNN: the gather (with the step counter); per convolution the convolution, its bias, ReLU and
// max-pool forward; the hidden dense layer's GEMM and bias-ReLU-dropout forward; the classifier
// head forward (the output layer, softmax-cross-entropy, the batch's totals); the head backward
// (the output layer's gradients, and through the hidden layer's ReLU-dropout its delta and bias
// gradient); the hidden layer's weight and input gradients (the flat one feeds the convolutions);
// per convolution the max-pool and ReLU backward and the filter and bias gradients, for the second
// the data gradient too; Adam.
TEST(GpuCnnTrainer, LaunchesPerStepAreCounted) {
  MNIST_REQUIRE_LAUNCH_COUNTS();
  std::mt19937_64 rng(test::fresh_seed());
  TrainConfig config = small_cnn_config(rng());
  config.batch_size = 16;
  config.channels = {2, 2};  // the count depends on none of the sizes: the smallest run fastest
  config.hidden = {8};
  const int expected = 1 + 2 * 4 + 2 + 1 + (1 + 2) + (4 + 5) + 1;
  EXPECT_EQ(launches_per_step(config, rng), expected);
}

}  // namespace
}  // namespace mnist
