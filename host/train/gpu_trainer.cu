// The Trainer on the GPU: the twin of CpuTrainer (host/train/cpu_trainer.cpp), with the models'
// GPU twins GpuMlp (host/model/gpu_mlp.cu) and GpuCnn (host/model/gpu_cnn.cu). Same parameter
// layout, same He-uniform initialisation, same shuffle, same dropout keys, same step
// counting and the same Adam, run through the kernels of include/mnist/ops on one stream:
//
//   construct:   upload the dataset once (uint8, resident) and the initial parameters
//   each epoch:  shuffle on the device → every step (gather, forward, loss, backward, Adam; the
//                last two also watch for divergence) → one copy of the epoch's totals and
//                divergence flag to the host
//   evaluate:    chunks of up to 10,000 images through the forward pass without dropout
//   logits:      the same forward pass, each chunk's logits copied back to the host
//
// Nothing inside an epoch waits for the host: the step counter lives on the device (the batch
// gather advances it) and so do the running totals. That is what lets the steps of an epoch be
// captured once into CUDA graphs and replayed every epoch after: a step of the default MLP is 12
// small launches (5 of them cuBLAS GEMMs), and launching them one by one costs more than running
// them.
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>
#include <thrust/execution_policy.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>
#include <thrust/transform.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mnist/data/augmentation.h"
#include "mnist/optim/adam.h"
#include "mnist/optim/adam_config.h"
#include "mnist/core/check.h"
#include "mnist/core/device.h"
#include "mnist/core/graph.h"
#include "mnist/model/gpu_cnn.h"
#include "mnist/model/gpu_mlp.h"
#include "mnist/model/mlp.h"
#include "mnist/model/model.h"
#include "mnist/ops/adam.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/ops/classifier_head.h"
#include "mnist/ops/eval_metrics.h"
#include "mnist/ops/finite_check.h"
#include "mnist/ops/augment.h"
#include "mnist/ops/gather.h"
#include "mnist/ops/gemm.h"
#include "mnist/ops/softmax_ce.h"
#include "mnist/core/philox.h"
#include "mnist/train/trainer.h"

namespace mnist {
namespace {

// Evaluation runs in chunks this large: 10,000 images need ~31 MB of float input, so the
// whole test set is one chunk and the activation buffers stay modest for wide models. A CNN
// whose convolutions are too wide for cuDNN's tensor size takes smaller ones (eval_chunk).
constexpr int kEvalChunk = 10000;

// The phases of a training step, in the order they run; time_step_phases cuts a step after each.
enum class Phase { kGather, kForward, kLoss, kBackward, kOptimizer };
constexpr const char* kPhaseNames[] = {"gather", "forward", "loss", "backward", "optimizer"};
constexpr int kPhases = static_cast<int>(Phase::kOptimizer) + 1;
static_assert(sizeof kPhaseNames / sizeof kPhaseNames[0] == kPhases);

// A slice of labelled images held on the device as uint8 (a quarter of the float size); the
// gather kernel converts a batch to floats as it assembles it.
struct DeviceImages {
  DeviceBuffer<std::uint8_t> pixels, labels;
  int count = 0;
};

DeviceImages upload_images(const ImageSlice& slice, cudaStream_t stream) {
  DeviceImages images;
  images.count = std::max(slice.count, 0);
  const std::size_t n = std::size_t(images.count);
  images.pixels = DeviceBuffer<std::uint8_t>(n * kPixels);
  images.labels = DeviceBuffer<std::uint8_t>(n);
  copy_to_device(images.pixels.data(), slice.pixels, n * kPixels, stream);
  copy_to_device(images.labels.data(), slice.labels, n, stream);
  return images;
}

// keys[i] = shuffle_key(seed, epoch, kShuffleStream, i): sorting the indices by these keys
// (stably) is the permutation shuffled_indices() computes on the CPU.
struct ShuffleKey {
  std::uint64_t seed;
  std::uint64_t epoch;
  __host__ __device__ std::uint64_t operator()(std::int64_t i) const {
    return shuffle_key(seed, epoch, kShuffleStream, static_cast<std::uint64_t>(i));
  }
};

// The two models behind one trainer. Both are built in place (C++17 elides the copy of the
// returned object, which neither model could make). GpuCnn has cuBLAS and cuDNN handles of its
// own; GpuMlp borrows the trainer's cuBLAS handle.
GpuMlp make_gpu_model(const MlpShape& shape, const TrainConfig& config, int max_batch, int max_train_batch,
                      cublasHandle_t cublas, cudaStream_t stream) {
  return GpuMlp(shape, config, max_batch, max_train_batch, cublas, stream);
}
GpuCnn make_gpu_model(const CnnShape& shape, const TrainConfig& config, int max_batch, int max_train_batch,
                      cublasHandle_t, cudaStream_t stream) {
  return GpuCnn(shape, config.seed, config.dropout, config.label_smoothing, max_batch, max_train_batch, stream,
                config.tf32 ? GemmMath::kTf32 : GemmMath::kFp32);
}

// The evaluation chunk of a model: kEvalChunk, or fewer images where one cuDNN call could not
// take that many.
int eval_chunk(const MlpShape&) { return kEvalChunk; }
int eval_chunk(const CnnShape& shape) { return std::min(kEvalChunk, shape.cudnn_batch_limit()); }

// Work a batch size needs before a graph that runs it is captured: the CNN's convolution plans
// (cuDNN's algorithm choice and workspace allocation may not happen during a capture).
void prepare_batch(GpuMlp&, int) {}
void prepare_batch(GpuCnn& model, int rows) { model.prepare(rows); }

// ---------------------------------------------------------------------------------------------
// The trainer: data residency, the epoch (shuffle, steps, totals), evaluation, checkpoints.
// Model: GpuMlp or GpuCnn; Shape: its shape type.

template <class Model, class Shape>
class GpuTrainer final : public Trainer {
 public:
  GpuTrainer(const TrainConfig& config, const DataSplit& data, const Shape& shape, int max_graph_steps)
      : config_(config),
        host_data_(data),
        adam_(adam_config(config, steps_per_epoch(config, data))),
        augment_(augment_params(config)),
        batch_(config.batch_size),
        steps_(steps_per_epoch(config, data)),
        max_graph_steps_(std::max(max_graph_steps, 1)),
        eval_chunk_(eval_chunk(shape)),
        cublas_workspace_(kCublasWorkspaceBytes),
        cublas_(stream_.get()),
        train_(upload_images(data.train, stream_.get())),
        validation_(upload_images(data.validation, stream_.get())),
        test_(upload_images(data.test, stream_.get())),
        model_(make_gpu_model(shape, config, std::max(config.batch_size, eval_chunk_), config.batch_size,
                              cublas_.get(), stream_.get())),
        step_(1),
        x_(std::size_t(std::max(config.batch_size, eval_chunk_)) * kPixels),
        y_(std::size_t(std::max(config.batch_size, eval_chunk_))),
        keys_(std::size_t(train_.count)),
        order_(std::size_t(train_.count)),
        identity_(std::size_t(eval_chunk_)),
        predictions_(std::size_t(eval_chunk_)),
        epoch_totals_(1),
        eval_totals_(1),
        first_bad_(1),
        augment_scratch_(1) {
    // After the stream: cublasSetStream resets the handle to its default workspace pool.
    MNIST_CHECK(cublasSetWorkspace(cublas_.get(), cublas_workspace_.data(), cublas_workspace_.bytes()));
    int device = 0;
    cudaDeviceProp properties{};
    MNIST_CHECK(cudaGetDevice(&device));
    MNIST_CHECK(cudaGetDeviceProperties(&properties, device));
    device_name_ = std::string("GPU ") + properties.name;

    const cudaStream_t stream = stream_.get();
    MNIST_CHECK(cudaMemsetAsync(step_.data(), 0, step_.bytes(), stream));
    MNIST_CHECK(cudaMemsetAsync(augment_scratch_.data(), 0, augment_scratch_.bytes(), stream));
    copy_to_device(first_bad_.data(), &kAllFinite, 1, stream);
    thrust::sequence(thrust::cuda::par_nosync(scratch_).on(stream), identity_.data(),
                     identity_.data() + identity_.size());
    // The epoch graph runs full batches and, unless drop_last, a last partial one; evaluation
    // runs chunks of eval_chunk_ and a last, smaller one. Their CNN plans are built now, so that
    // cuDNN chooses every algorithm at start-up (and never inside the graph's capture).
    if (steps_ > 0) prepare_batch(model_, std::min(batch_, train_.count - (steps_ - 1) * batch_));
    for (const DeviceImages* images : {&validation_, &test_}) {
      if (images->count == 0) continue;
      prepare_batch(model_, std::min(images->count, eval_chunk_));
      if (images->count % eval_chunk_) prepare_batch(model_, images->count % eval_chunk_);
    }
    stream_.synchronize();
  }

  std::string device_name() const override { return device_name_; }
  // True once the first full epoch has been captured: the epochs after it replay the graph.
  bool replays_graphs() const override { return graphs_captured(); }
  int graph_steps() const override {
    return config_.no_graph || graph_refused_ ? 0 : std::min(steps_, max_graph_steps_);
  }
  double last_epoch_device_ms() const override { return last_epoch_device_ms_; }

  // A stop request (Ctrl-C) is honoured by the loop when the epoch ends: the epoch's graphs are
  // enqueued together. A divergence is found then too, from the flag the steps' finite checks left.
  EvalTotals train_epoch(int epoch) override {
    NvtxRange epoch_range("epoch " + std::to_string(epoch));
    const cudaStream_t stream = stream_.get();
    const int first_step = std::min(take_first_step(), steps_);
    last_epoch_device_ms_ = std::numeric_limits<double>::quiet_NaN();  // until this epoch's is read
    epoch_start_.record(stream);
    shuffle(epoch);
    MNIST_CHECK(cudaMemsetAsync(epoch_totals_.data(), 0, epoch_totals_.bytes(), stream));
    {
      NvtxRange train_range("train");
      if (config_.no_graph || graph_refused_ || steps_ == 0 || first_step > 0) {
        run_steps(first_step, steps_);  // a resume mid-epoch runs the rest of that epoch outside the graph
      } else if (graphs_captured()) {
        replay_epoch();
      } else {
        // The first full epoch runs as stream launches, then records its steps for the next
        // epochs to replay: so every kernel and every cuBLAS and cuDNN call has run once, with
        // the shapes the graph records, before the capture (CUDA loads a kernel at its first
        // launch, and the libraries set themselves up at their first call: work that has no
        // place in a capture). Only the contents of order_ (and the device step counter) differ
        // from epoch to epoch, not any address.
        run_steps(0, steps_);
        capture_epoch();
      }
    }
    // The one synchronisation of the epoch.
    EvalTotals totals;
    std::int64_t first_bad = kAllFinite;
    MNIST_CHECK(cudaMemcpyAsync(&totals, epoch_totals_.data(), sizeof totals, cudaMemcpyDeviceToHost, stream));
    MNIST_CHECK(cudaMemcpyAsync(&first_bad, first_bad_.data(), sizeof first_bad, cudaMemcpyDeviceToHost, stream));
    epoch_stop_.record(stream);
    stream_.synchronize();
    last_epoch_device_ms_ = epoch_stop_.elapsed_ms_since(epoch_start_);
    const std::int64_t epoch_start_step = host_step_;
    host_step_ += steps_ - first_step;
    if (first_bad != kAllFinite) {
      const std::int64_t step = non_finite_step(first_bad);
      throw TrainingDiverged(describe_non_finite(non_finite_code(first_bad)), epoch,
                             static_cast<int>(first_step + (step - epoch_start_step)), step);
    }
    return totals;
  }

  EvalTotals evaluate(const ImageSlice& slice, std::int32_t* predictions) override {
    NvtxRange range("evaluate");
    if (slice.count <= 0) return EvalTotals{};
    const cudaStream_t stream = stream_.get();
    DeviceImages uploaded;
    const DeviceImages* images = on_device(slice, uploaded);

    MNIST_CHECK(cudaMemsetAsync(eval_totals_.data(), 0, eval_totals_.bytes(), stream));
    for (int first = 0; first < slice.count; first += eval_chunk_) {
      const int rows = std::min(eval_chunk_, slice.count - first);
      gpu::gather_batch(images->pixels.data() + std::size_t(first) * kPixels, images->labels.data() + first,
                        identity_.data(), rows, kPixels, x_.data(), y_.data(), stream);
      model_.forward(x_.data(), rows, /*train=*/false, step_.data());
      model_.loss(y_.data(), rows, /*gradient=*/false, eval_totals_.data(),
                  predictions ? predictions_.data() : nullptr);
      if (predictions)
        MNIST_CHECK(cudaMemcpyAsync(predictions + first, predictions_.data(), std::size_t(rows) * sizeof(std::int32_t),
                                    cudaMemcpyDeviceToHost, stream));
    }
    EvalTotals totals;
    MNIST_CHECK(cudaMemcpyAsync(&totals, eval_totals_.data(), sizeof totals, cudaMemcpyDeviceToHost, stream));
    stream_.synchronize();
    return totals;
  }

  // The forward pass of evaluate(), chunk by chunk, each chunk's logits copied to the host.
  std::vector<float> logits(const ImageSlice& slice) override {
    NvtxRange range("logits");
    std::vector<float> out(std::size_t(std::max(slice.count, 0)) * kClasses);
    if (slice.count <= 0) return out;
    const cudaStream_t stream = stream_.get();
    DeviceImages uploaded;
    const DeviceImages* images = on_device(slice, uploaded);

    for (int first = 0; first < slice.count; first += eval_chunk_) {
      const int rows = std::min(eval_chunk_, slice.count - first);
      gpu::gather_batch(images->pixels.data() + std::size_t(first) * kPixels, images->labels.data() + first,
                        identity_.data(), rows, kPixels, x_.data(), y_.data(), stream);
      model_.forward(x_.data(), rows, /*train=*/false, step_.data());
      model_.compute_logits(rows);
      // The next chunk's forward pass overwrites the logits, but only after this copy: one stream.
      MNIST_CHECK(cudaMemcpyAsync(out.data() + std::size_t(first) * kClasses, model_.logits(),
                                  std::size_t(rows) * kClasses * sizeof(float), cudaMemcpyDeviceToHost, stream));
    }
    stream_.synchronize();
    return out;
  }

  ModelState state() const override {
    ModelState state;
    copy_state(state);
    return state;
  }

  // The checkpoint's copy at each epoch's end: into the buffers of the previous checkpoint,
  // four copies and one wait.
  void copy_state(ModelState& out) const override {
    const cudaStream_t stream = stream_.get();
    out.kind = kind_of(model_.shape());
    out.sizes = sizes_of(model_.shape());
    enqueue_copy_to_host(model_.buffers().params, out.params, stream);
    enqueue_copy_to_host(model_.buffers().adam_m, out.adam_m, stream);
    enqueue_copy_to_host(model_.buffers().adam_v, out.adam_v, stream);
    MNIST_CHECK(cudaMemcpyAsync(&out.step, step_.data(), sizeof out.step, cudaMemcpyDeviceToHost, stream));
    stream_.synchronize();
  }

  StepPhaseTimes time_step_phases(int steps, int repeats) override {
    NvtxRange range("time step phases");
    StepPhaseTimes result;
    result.steps = std::clamp(steps, 0, train_.count / batch_);  // full batches only
    result.repeats = std::max(repeats, 1);
    // Graphs where the epochs replay one (then these captures succeed too), else launches.
    result.graph = replays_graphs();
    if (result.steps == 0) return result;
    const ModelState saved = state();
    const cudaStream_t stream = stream_.get();
    shuffle(1);  // order_ holds a permutation even before the first epoch
    Event start, stop;
    for (int p = 0; p < kPhases; ++p) {
      const auto record = [&] { run_steps(0, result.steps, static_cast<Phase>(p)); };
      record();  // as stream launches first, as before the epoch's capture
      GraphExec graph;
      if (result.graph) graph = GraphExec::capture(stream, record);
      const auto launch = [&] {
        if (graph)
          graph.launch(stream);
        else
          record();
      };
      launch();  // warm-up
      std::vector<double> samples;
      for (int r = 0; r < result.repeats; ++r) {
        start.record(stream);
        launch();
        stop.record(stream);
        samples.push_back(stop.elapsed_ms_since(start) / result.steps);
      }
      std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
      result.prefixes.push_back(StepPhaseTime{kPhaseNames[p], samples[samples.size() / 2]});
    }
    load_state(saved);  // parameters, moments, step and the divergence flag as they were
    return result;
  }

  void load_state(const ModelState& state) override {
    const std::size_t n = model_.buffers().params.size();
    if (state.kind != kind_of(model_.shape()) || state.sizes != sizes_of(model_.shape()) ||
        state.params.size() != n || state.adam_m.size() != n || state.adam_v.size() != n)
      throw std::invalid_argument("model state does not match the model's shape");
    // Into the same buffers: a captured epoch graph stays valid.
    const cudaStream_t stream = stream_.get();
    copy_to_device(model_.buffers().params.data(), state.params.data(), n, stream);
    copy_to_device(model_.buffers().adam_m.data(), state.adam_m.data(), n, stream);
    copy_to_device(model_.buffers().adam_v.data(), state.adam_v.data(), n, stream);
    copy_to_device(step_.data(), &state.step, 1, stream);
    copy_to_device(first_bad_.data(), &kAllFinite, 1, stream);
    host_step_ = state.step;
  }

 private:
  // order_ ← the training indices stably sorted by shuffle_key(seed, epoch, i): the order the
  // CPU trainer uses. Outside any graph: Thrust may allocate (the first time) and sorts with a
  // size-dependent launch sequence of its own.
  void shuffle(int epoch) {
    const std::int64_t n = train_.count;
    if (n == 0) return;
    const auto policy = thrust::cuda::par_nosync(scratch_).on(stream_.get());
    thrust::transform(policy, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(n),
                      keys_.data(), ShuffleKey{config_.seed, static_cast<std::uint64_t>(epoch)});
    thrust::sequence(policy, order_.data(), order_.data() + n);
    thrust::stable_sort_by_key(policy, keys_.data(), keys_.data() + n, order_.data());
  }

  // An epoch of up to max_graph_steps_ steps is one graph (tail_graph_). A longer one is
  // block_graph_, max_graph_steps_ full batches gathered through window_, replayed block_count()
  // times with window_ loaded from the next part of the shuffle before each replay (a copy on
  // the stream, between the graphs), then tail_graph_: the steps after the blocks, from order_
  // itself (the same part of order_ every epoch), the partial batch included.
  int block_count() const { return steps_ > max_graph_steps_ ? (train_.count / batch_) / max_graph_steps_ : 0; }
  int tail_first_step() const { return block_count() * max_graph_steps_; }
  // An epoch of steps_ > 0 always has a block or a tail graph once captured.
  bool graphs_captured() const { return block_graph_ || tail_graph_; }

  // Records the epoch's steps into the graphs. Nothing the capture records runs, so a capture
  // that fails (a library call that cannot be captured on this machine's cuBLAS or cuDNN, a
  // graph the driver cannot instantiate) leaves the model as it was: the run goes on without
  // graphs, as --no-graph would, and says so once. But the first epoch's steps may still be
  // running when the capture begins, and a fault of theirs (an illegal address) fails the
  // capture too: that fault is the error to report, not the graph.
  void capture_epoch() {
    try {
      const cudaStream_t stream = stream_.get();
      if (block_count() > 0) {
        window_ = DeviceBuffer<std::int32_t>(std::size_t(max_graph_steps_) * batch_);
        block_graph_ = GraphExec::capture(
            stream, [this] { run_steps(0, max_graph_steps_, Phase::kOptimizer, window_.data()); });
      }
      if (tail_first_step() < steps_)
        tail_graph_ = GraphExec::capture(stream, [this] { run_steps(tail_first_step(), steps_); });
    } catch (const std::exception& error) {
      cudaGetLastError();  // a failed end of capture or instantiation is not the next launch's error
      stream_.synchronize();  // throws the fault of the steps before the capture, if there was one
      block_graph_ = GraphExec();
      tail_graph_ = GraphExec();
      graph_refused_ = true;
      std::cerr << "mnist: warning: the CUDA graph of an epoch could not be captured (" << error.what()
                << "); training on without graphs, as --no-graph does\n";
    }
  }

  void replay_epoch() {
    const cudaStream_t stream = stream_.get();
    const std::size_t window = window_.size();
    for (int b = 0; b < block_count(); ++b) {
      MNIST_CHECK(cudaMemcpyAsync(window_.data(), order_.data() + b * window, window * sizeof(std::int32_t),
                                  cudaMemcpyDeviceToDevice, stream));
      block_graph_.launch(stream);
    }
    if (tail_graph_) tail_graph_.launch(stream);
  }

  // Steps first_step..end_step-1 of the epoch, enqueued on the stream (or recorded into a
  // graph), gathering their images through `order` (default: order_ from step first_step on).
  // The last batch is partial unless drop_last; its row count is part of what is recorded.
  // Each step stops after phase `last` (time_step_phases alone cuts it short).
  void run_steps(int first_step, int end_step, Phase last = Phase::kOptimizer,
                 const std::int32_t* order = nullptr) {
    const cudaStream_t stream = stream_.get();
    const std::int64_t* step = step_.data();
    const auto runs = [last](Phase phase) { return phase <= last; };
    if (order == nullptr) order = order_.data() + std::size_t(first_step) * batch_;
    for (int s = first_step; s < end_step; ++s) {
      const int first = s * batch_;
      const int rows = std::min(batch_, train_.count - first);
      {
        NvtxRange range("forward");
        // ++step with the batch, before anything reads it, as CpuTrainer does.
        const std::int32_t* indices = order + std::size_t(s - first_step) * batch_;
        if (config_.augment != "none")
          gpu::gather_augmented_batch(train_.pixels.data(), train_.labels.data(), indices, rows, augment_, x_.data(),
                                      y_.data(), step_.data(), augment_scratch_.data(), stream);
        else
          gpu::gather_batch(train_.pixels.data(), train_.labels.data(), indices, rows, kPixels, x_.data(), y_.data(),
                            stream, step_.data());
        if (runs(Phase::kForward)) model_.forward(x_.data(), rows, /*train=*/true, step);
        if (runs(Phase::kLoss))
          model_.loss(y_.data(), rows, /*gradient=*/true, epoch_totals_.data(), nullptr, step, first_bad_.data());
      }
      if (runs(Phase::kBackward)) {
        NvtxRange range("backward");
        model_.backward(rows, step);
      }
      if (runs(Phase::kOptimizer)) {
        NvtxRange range("optimizer");
        adam_update(adam_, model_.buffers(), step, stream, first_bad_.data());
      }
    }
  }

  // `slice` on the device: the splits are resident; any other slice is uploaded into `uploaded`
  // for the caller's call.
  const DeviceImages* on_device(const ImageSlice& slice, DeviceImages& uploaded) {
    if (const DeviceImages* resident = resident_copy(slice)) return resident;
    uploaded = upload_images(slice, stream_.get());
    return &uploaded;
  }

  // The resident copy of `slice` when it is one of the splits the trainer was built with (the
  // same host arrays: the loop evaluates data.validation and data.test), else null.
  const DeviceImages* resident_copy(const ImageSlice& slice) const {
    const auto same = [&](const ImageSlice& held) {
      return slice.pixels == held.pixels && slice.labels == held.labels && slice.count == held.count;
    };
    if (same(host_data_.validation)) return &validation_;
    if (same(host_data_.test)) return &test_;
    if (same(host_data_.train)) return &train_;
    return nullptr;
  }

  TrainConfig config_;
  DataSplit host_data_;  // host pointers, only to recognise the resident slices
  AdamConfig adam_;
  AugmentParams augment_;  // used when config_.augment is not "none"
  int batch_;
  int steps_;            // per epoch
  int max_graph_steps_;  // the most steps one graph holds (make_gpu_trainer)
  int eval_chunk_;  // images per evaluation call
  std::string device_name_;

  // Declaration order is construction order: the stream and the cuBLAS handle before anything
  // that enqueues work on them, and (in reverse) the graph before the buffers it points into.
  Stream stream_;
  DeviceBuffer<char> cublas_workspace_;  // outlives the handle that uses it
  CublasHandle cublas_;
  ScratchAllocator scratch_;
  DeviceImages train_, validation_, test_;
  Model model_;
  DeviceBuffer<std::int64_t> step_;  // optimizer steps taken; advanced on the device
  DeviceBuffer<float> x_;            // the batch as floats
  DeviceBuffer<std::uint8_t> y_;     // its labels
  DeviceBuffer<std::uint64_t> keys_;
  DeviceBuffer<std::int32_t> order_;       // this epoch's permutation of the training images
  DeviceBuffer<std::int32_t> identity_;    // 0, 1, 2, …: evaluation gathers in order
  DeviceBuffer<std::int32_t> predictions_;
  DeviceBuffer<EvalTotals> epoch_totals_, eval_totals_;
  DeviceBuffer<std::int64_t> first_bad_;  // kAllFinite, or step·4 + code of the first NaN/inf (finite_check.h)
  DeviceBuffer<gpu::AugmentScratch> augment_scratch_;  // the augmented gather's ticket, zeroed
  std::int64_t host_step_ = 0;            // the device step counter as of the last epoch's end
  DeviceBuffer<std::int32_t> window_;  // block_graph_'s part of order_ (only for epochs of > max_graph_steps_ steps)
  GraphExec block_graph_, tail_graph_;  // replay_epoch
  bool graph_refused_ = false;  // the capture failed once: no graphs for this trainer
  Event epoch_start_, epoch_stop_;  // around each train_epoch's work on the stream
  double last_epoch_device_ms_ = std::numeric_limits<double>::quiet_NaN();
};

}  // namespace

void check_gpu_config(const TrainConfig& config) {
  if (model_kind(config) != ModelKind::kCnn) return;
  const CnnShape shape = cnn_shape(config);
  const int limit = shape.cudnn_batch_limit();
  if (config.batch_size > limit) {
    const std::size_t per_image = shape.largest_conv_tensor();
    throw ConfigError("--batch-size " + std::to_string(config.batch_size) + ": a convolution of the CNN would hold " +
                      std::to_string(per_image) + " floats per image, " +
                      std::to_string(per_image * std::size_t(config.batch_size)) +
                      " for the batch, and cuDNN takes at most 2^31 - 1 per tensor; on the GPU use --batch-size " +
                      std::to_string(limit) + " or less, or fewer --channels");
  }
}

std::unique_ptr<Trainer> make_gpu_trainer(const TrainConfig& config, const DataSplit& data, int max_graph_steps) {
  if (cuda_device_count() == 0)
    throw std::runtime_error("no CUDA device or driver found (" + cuda_device_absence() +
                             "): the GPU trainer cannot run here (use the CPU trainer)");
  check_gpu_config(config);
  if (model_kind(config) == ModelKind::kCnn)
    return std::make_unique<GpuTrainer<GpuCnn, CnnShape>>(config, data, cnn_shape(config), max_graph_steps);
  return std::make_unique<GpuTrainer<GpuMlp, MlpShape>>(config, data, mlp_shape(config), max_graph_steps);
}

}  // namespace mnist
