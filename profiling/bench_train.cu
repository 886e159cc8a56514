// One-run benchmark of the GPU trainer end to end: epoch time, images/s, and how far the epoch
// is from the two floors (arithmetic and memory), both measured in the same run.
//
//   cmake --build build --target bench_train && ./build/profiling/bench_train [--epochs 10] [--json]
//   profiling/bench.sh [options]          (builds first when needed)
//
// What it does. Loads the dataset and splits it as `mnist train` does (split_dataset: the last
// val_split of the 60,000 training images are held out), builds the GPU trainer, trains one
// warm-up epoch (stream launches that load the modules and allocate Thrust's scratch, then the
// capture of the CUDA graph the timed epochs replay), then N timed epochs, then evaluates the
// test set (timed too: target ≤ 2 ms for 10,000 images). Last it
// measures the two ceilings on this GPU: a large GEMM through the trainer's own GEMM call
// (gpu::dense_forward, fp32 and tf32) and a large device-to-device copy.
//
// Timing. Each epoch is timed on the host: the device is synchronized (cudaDeviceSynchronize),
// steady_clock read, train_epoch() called (it enqueues the shuffle and the epoch's steps and
// waits for them: its one synchronization), the device synchronized again and the clock read.
// That is the epoch as a user pays for it (device time plus the launches and the one wait), and
// how the peers time theirs. Beside it, the device time from the CUDA events the trainer records
// on its own stream around the epoch's work (Trainer::last_epoch_device_ms). The ceilings are
// timed with CUDA events on their own stream, median of several runs after warm-up.
//
// Work counted from the model's shape (nothing is looked up):
//   FLOPs per image: forward 2·Σ_l in·out, weight gradients 2·Σ_l in·out, input gradients
//   2·Σ_{l≥1} in·out (layer 0 needs none); GEMMs only (bias, ReLU, dropout, softmax and Adam are
//   a few FLOPs per element and are left out).
//   Bytes per epoch: every training image and label read once (uint8), plus, at every step, the
//   optimizer's 28 bytes per parameter (read params, grads, m, v; write params, m, v): what an
//   unfused step must move if nothing stays in L2 between kernels.
// Floor = work / measured ceiling; the ratio printed is measured time over floor.
//
// Serving: the forward pass of `mnist serve` (Trainer::logits) at batches of 1, 8, 32 and 256.
//
// Phases (after the test set; the trainer restores its state): Trainer::time_step_phases cuts
// --phase-steps full steps after each phase (gather, forward, loss, backward, optimizer, finite
// check) and replays each cut as a CUDA graph: which part of a step costs most, without Nsight.
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.h"
#include "mnist/core/check.h"
#include "mnist/core/config.h"
#include "mnist/core/device.h"
#include "mnist/data/idx.h"
#include "mnist/model/mlp.h"
#include "mnist/ops/gemm.h"
#include "mnist/train/trainer.h"
#include "mnist/cli/versions.h"

namespace {

using mnist::cuda_version_text;
using mnist::DeviceBuffer;
using mnist::nvidia_driver_release;

struct Options {
  std::string data_dir = "data/mnist";
  int epochs = 10;
  int batch_size = 128;
  std::vector<int> hidden{512, 512};
  bool tf32 = false;
  bool no_graph = false;
  bool json = false;
  int gemm_size = 8192;
  int eval_repeats = 5;
  int phase_steps = 100;  // Trainer::time_step_phases
  int phase_repeats = 7;
};

constexpr double kEvalTargetMs = 2.0;  // 10,000 test images

// --- work counted from the model's shape ----------------------------------------------------

struct EpochWork {
  int images = 0;  // trained per epoch
  int steps = 0;
  double flops = 0;          // GEMM FLOPs of one epoch
  double dataset_bytes = 0;  // images and labels read once
  double state_bytes = 0;    // optimizer state touched at every step
  double bytes() const { return dataset_bytes + state_bytes; }
};

EpochWork count_epoch_work(const mnist::MlpShape& shape, int train_images, int batch, bool drop_last) {
  EpochWork work;
  work.steps = drop_last ? train_images / batch : (train_images + batch - 1) / batch;
  work.images = drop_last ? work.steps * batch : train_images;
  double forward = 0, weight_grad = 0, input_grad = 0;  // per image
  for (int l = 0; l < shape.layers(); ++l) {
    const double macs = double(shape.in(l)) * shape.out(l);
    forward += 2 * macs;
    weight_grad += 2 * macs;
    if (l >= 1) input_grad += 2 * macs;
  }
  work.flops = double(work.images) * (forward + weight_grad + input_grad);
  work.dataset_bytes = double(work.images) * (mnist::kPixels + 1);
  work.state_bytes = double(work.steps) * 7.0 * sizeof(float) * double(shape.param_count());
  return work;
}

// --- small helpers ------------------------------------------------------------------------------

using bench::median;
using bench::wall_ms;

// Median milliseconds of `launch` on `stream`, timed with events one run at a time.
double event_median_ms(cudaStream_t stream, int warmup, int repeats, const std::function<void()>& launch) {
  mnist::Event start, stop;
  for (int i = 0; i < warmup; ++i) launch();
  std::vector<double> samples;
  for (int r = 0; r < repeats; ++r) {
    start.record(stream);
    launch();
    stop.record(stream);
    samples.push_back(stop.elapsed_ms_since(start));
  }
  return median(samples);
}

// Inputs for the ceilings: never zeros (they can run faster than real data).
__global__ void fill_uniform_kernel(float* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 0x9E3779B9u ^ seed;
    h ^= h >> 16;
    h *= 0x7FEB352Du;
    h ^= h >> 15;
    h *= 0x846CA68Bu;
    h ^= h >> 16;
    p[i] = 2.f * (h >> 8) * (1.0f / 16777216.0f) - 1.f;
  }
}

void fill_uniform(DeviceBuffer<float>& buffer, std::uint32_t seed, cudaStream_t stream) {
  fill_uniform_kernel<<<1024, 256, 0, stream>>>(buffer.data(), buffer.size(), seed);
  MNIST_CHECK_LAUNCH();
}

// --- the ceilings --------------------------------------------------------------------------------

struct Ceilings {
  double gemm_tflops_fp32 = 0, gemm_tflops_tf32 = 0;
  double copy_gbps = 0;  // (read + write) / time
  int gemm_size = 0;
  std::size_t copy_bytes = 0;
};

Ceilings measure_ceilings(int n) {
  Ceilings c;
  c.gemm_size = n;
  mnist::Stream stream;
  {
    mnist::CublasHandle handle(stream.get());
    const std::size_t elements = std::size_t(n) * n;
    DeviceBuffer<float> a(elements), b(elements), out(elements);
    fill_uniform(a, 1, stream.get());
    fill_uniform(b, 2, stream.get());
    const double flops = 2.0 * n * double(n) * n;
    const auto rate = [&](mnist::GemmMath math) {
      const double ms = event_median_ms(stream.get(), 2, 10, [&] {
        mnist::gpu::dense_forward(handle.get(), a.data(), b.data(), out.data(), n, n, n, math);
      });
      return flops / (ms * 1e-3) / 1e12;
    };
    c.gemm_tflops_fp32 = rate(mnist::GemmMath::kFp32);
    c.gemm_tflops_tf32 = rate(mnist::GemmMath::kTf32);
  }
  c.copy_bytes = std::size_t(1) << 30;
  DeviceBuffer<std::uint8_t> src(c.copy_bytes), dst(c.copy_bytes);
  src.fill_bytes(0x5A);
  const double ms = event_median_ms(stream.get(), 2, 20, [&] {
    MNIST_CHECK(cudaMemcpyAsync(dst.data(), src.data(), c.copy_bytes, cudaMemcpyDeviceToDevice, stream.get()));
  });
  c.copy_gbps = 2.0 * double(c.copy_bytes) / (ms * 1e-3) / 1e9;
  return c;
}

// --- the device ------------------------------------------------------------------------------------

struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0, sms = 0;
  std::string driver;       // the kernel module's release, e.g. 570.86.15
  int driver_cuda = 0;      // the newest CUDA the driver supports, e.g. 12080
  int runtime_cuda = 0;     // the CUDA runtime this program runs with
};

DeviceInfo device_info() {
  DeviceInfo info;
  int device = 0;
  cudaDeviceProp prop{};
  MNIST_CHECK(cudaGetDevice(&device));
  MNIST_CHECK(cudaGetDeviceProperties(&prop, device));
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  info.sms = prop.multiProcessorCount;
  info.driver = nvidia_driver_release();
  MNIST_CHECK(cudaDriverGetVersion(&info.driver_cuda));
  MNIST_CHECK(cudaRuntimeGetVersion(&info.runtime_cuda));
  return info;
}

// --- the run -----------------------------------------------------------------------------------------

std::string join_sizes(const std::vector<int>& sizes) {
  std::string text;
  for (std::size_t i = 0; i < sizes.size(); ++i) text += (i ? "-" : "") + std::to_string(sizes[i]);
  return text;
}

const char* kTimingMethod =
    "ms: host steady_clock around each train_epoch() call with cudaDeviceSynchronize before and after "
    "(device time plus launches and the epoch's one synchronization; how the peers time an epoch); "
    "device ms: CUDA events the trainer records on its stream around the epoch's work; "
    "ceilings: CUDA events, median after warm-up";

int run(const Options& options) {
  const DeviceInfo gpu = device_info();

  mnist::TrainConfig config;  // everything else as `mnist train` defaults it
  config.hidden = options.hidden;
  config.batch_size = options.batch_size;
  config.epochs = options.epochs + 1;
  config.data_dir = options.data_dir;
  config.device = "gpu";
  config.tf32 = options.tf32;
  config.no_graph = options.no_graph;
  mnist::validate(config);

  const mnist::Dataset dataset = mnist::load_dataset(config.resolved_data_dir());
  const mnist::DataSplit split = mnist::split_dataset(dataset, config);
  const mnist::MlpShape shape(mnist::kPixels, config.hidden, mnist::kClasses);
  const EpochWork work = count_epoch_work(shape, split.train.count, config.batch_size, config.drop_last);
  const std::unique_ptr<mnist::Trainer> trainer = mnist::make_gpu_trainer(config, split);

  if (!options.json) {
    std::printf("bench_train: %s (sm_%d%d, %d SMs), driver %s (CUDA %s), CUDA runtime %s\n", gpu.name.c_str(),
                gpu.major, gpu.minor, gpu.sms, gpu.driver.c_str(), cuda_version_text(gpu.driver_cuda).c_str(),
                cuda_version_text(gpu.runtime_cuda).c_str());
    std::printf("model %s, dropout %g, Adam lr %g, batch %d, %s GEMMs, %s\n", join_sizes(shape.sizes).c_str(),
                config.dropout, config.lr, config.batch_size, config.tf32 ? "tf32" : "fp32",
                config.no_graph ? "stream launches (--no-graph)"
                                : ("CUDA graphs of " + std::to_string(trainer->graph_steps()) + " steps").c_str());
    std::printf("data %s: %d training images (%d steps/epoch), %d test images\n",
                config.resolved_data_dir().c_str(), work.images, work.steps, split.test.count);
    std::printf("timing: %s\n\n", kTimingMethod);
    std::printf("epoch        ms  device ms  train loss  train acc\n");
    std::fflush(stdout);
  }

  // Warm-up epoch 1, timed epochs 2..N+1: the trainer's epochs number from 1 as in `mnist train`.
  std::vector<double> epoch_ms, event_ms;
  double warmup_ms = 0, warmup_event_ms = 0, last_loss = 0, last_accuracy = 0;
  for (int epoch = 1; epoch <= options.epochs + 1; ++epoch) {
    mnist::EvalTotals totals;
    const double ms = wall_ms([&] { totals = trainer->train_epoch(epoch); });
    last_loss = mnist::mean_loss(totals);
    last_accuracy = mnist::accuracy(totals);
    const double device_ms = trainer->last_epoch_device_ms();
    if (epoch == 1) {
      warmup_ms = ms;
      warmup_event_ms = device_ms;
    } else {
      epoch_ms.push_back(ms);
      event_ms.push_back(device_ms);
    }
    if (!options.json) {
      std::printf("%5d %9.3f  %9.3f  %10.4f  %8.2f%%%s\n", epoch, ms, device_ms, last_loss, 100 * last_accuracy,
                  epoch == 1 ? "  (warm-up, not counted)" : "");
      std::fflush(stdout);
    }
  }

  if (!options.json && !config.no_graph && !trainer->replays_graphs())
    std::printf("(the CUDA graph could not be captured: these epochs ran as stream launches)\n");

  // Test set: one warm-up evaluation, then the median of several (evaluation changes nothing).
  mnist::EvalTotals test;
  wall_ms([&] { test = trainer->evaluate(split.test); });
  std::vector<double> eval_samples;
  for (int r = 0; r < options.eval_repeats; ++r)
    eval_samples.push_back(wall_ms([&] { test = trainer->evaluate(split.test); }));
  const double eval_ms = median(eval_samples);
  // What one forward pass of `mnist serve` costs at the batch sizes its batching forms: logits()
  // of the first N test images, uploads and downloads included (as the server pays them), the
  // median of 50 after 5 warm-ups. Its growth from batch 1 to 256 says what a batching window buys.
  nlohmann::ordered_json logits_ms;
  for (const int batch : {1, 8, 32, 256}) {
    const mnist::ImageSlice images{split.test.pixels, split.test.labels, std::min(batch, split.test.count)};
    for (int r = 0; r < 5; ++r) trainer->logits(images);
    std::vector<double> samples;
    for (int r = 0; r < 50; ++r) samples.push_back(wall_ms([&] { trainer->logits(images); }));
    logits_ms[std::to_string(batch)] = median(samples);
  }
  const mnist::StepPhaseTimes phases = trainer->time_step_phases(options.phase_steps, options.phase_repeats);

  const Ceilings ceilings = measure_ceilings(options.gemm_size);

  const double ms = median(epoch_ms);
  const double ms_min = *std::min_element(epoch_ms.begin(), epoch_ms.end());
  const double ms_max = *std::max_element(epoch_ms.begin(), epoch_ms.end());
  const double event_median_ms = median(event_ms);
  const double images_per_s = work.images / (ms * 1e-3);
  const double achieved_tflops = work.flops / (ms * 1e-3) / 1e12;
  const double gemm_tflops = config.tf32 ? ceilings.gemm_tflops_tf32 : ceilings.gemm_tflops_fp32;
  const double flop_floor_ms = work.flops / (gemm_tflops * 1e12) * 1e3;
  const double byte_floor_ms = work.bytes() / (ceilings.copy_gbps * 1e9) * 1e3;
  const double test_accuracy = mnist::accuracy(test);
  const int trained = options.epochs + 1;

  if (options.json) {
    nlohmann::ordered_json j;
    j["system"] = "mnist-cuda";
    j["gpu"] = {{"name", gpu.name},
                {"compute_capability", std::to_string(gpu.major) + "." + std::to_string(gpu.minor)},
                {"sms", gpu.sms},
                {"driver", gpu.driver},
                {"driver_cuda", cuda_version_text(gpu.driver_cuda)},
                {"runtime_cuda", cuda_version_text(gpu.runtime_cuda)}};
    j["config"] = {{"model", join_sizes(shape.sizes)}, {"dropout", config.dropout},  {"lr", config.lr},
                   {"batch_size", config.batch_size},  {"math", config.tf32 ? "tf32" : "fp32"},
                   {"cuda_graph", trainer->replays_graphs()},   {"graph_steps", trainer->graph_steps()},
                   {"data_dir", config.resolved_data_dir()}};
    j["timing_method"] = kTimingMethod;
    j["train_images"] = work.images;
    j["steps_per_epoch"] = work.steps;
    j["epochs"] = options.epochs;
    j["epochs_trained"] = trained;
    j["warmup_epoch_ms"] = warmup_ms;
    j["epoch_ms"] = epoch_ms;
    j["ms_per_epoch"] = ms;
    j["ms_per_epoch_min"] = ms_min;
    j["ms_per_epoch_max"] = ms_max;
    j["warmup_event_ms"] = warmup_event_ms;
    j["event_epoch_ms"] = event_ms;
    j["event_ms_per_epoch"] = event_median_ms;
    j["images_per_s"] = images_per_s;
    j["flops_per_epoch"] = work.flops;
    j["achieved_tflops"] = achieved_tflops;
    j["gemm_size"] = ceilings.gemm_size;
    j["gemm_tflops_fp32"] = ceilings.gemm_tflops_fp32;
    j["gemm_tflops_tf32"] = ceilings.gemm_tflops_tf32;
    j["flop_floor_ms"] = flop_floor_ms;
    j["ratio_to_flop_floor"] = ms / flop_floor_ms;
    j["dataset_bytes_per_epoch"] = work.dataset_bytes;
    j["optimizer_bytes_per_epoch"] = work.state_bytes;
    j["copy_bytes"] = ceilings.copy_bytes;
    j["copy_gbps"] = ceilings.copy_gbps;
    j["byte_floor_ms"] = byte_floor_ms;
    j["ratio_to_byte_floor"] = ms / byte_floor_ms;
    j["last_train_loss"] = std::isfinite(last_loss) ? nlohmann::json(last_loss) : nlohmann::json();
    j["last_train_accuracy"] = std::isfinite(last_accuracy) ? nlohmann::json(last_accuracy) : nlohmann::json();
    j["eval_images"] = split.test.count;
    j["eval_ms"] = eval_ms;
    j["eval_target_ms"] = kEvalTargetMs;
    j["test_accuracy"] = std::isfinite(test_accuracy) ? nlohmann::json(test_accuracy) : nlohmann::json();
    j["test_loss"] = std::isfinite(mnist::mean_loss(test)) ? nlohmann::json(mnist::mean_loss(test)) : nlohmann::json();
    j["logits_ms_by_batch"] = logits_ms;
    j["step_phases"] = bench::step_phases_json(phases);
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }

  std::printf("\nms/epoch   median %.3f  min %.3f  max %.3f  (%d timed epochs; warm-up %.3f)\n", ms, ms_min, ms_max,
              options.epochs, warmup_ms);
  std::printf("device     median %.3f ms/epoch from CUDA events (host clock minus this: launches and the sync)\n",
              event_median_ms);
  std::printf("images/s   %.0f (median epoch)\n", images_per_s);
  std::printf("work       %.2f GFLOP/epoch (GEMMs: forward 2*sum(in*out), dW 2*sum(in*out), dX 2*sum_{l>=1}(in*out) "
              "per image)\n",
              work.flops / 1e9);
  std::printf("           %.3f GB/epoch (dataset once: %.1f MB; optimizer 28 B/param/step: %.1f MB)\n",
              work.bytes() / 1e9, work.dataset_bytes / 1e6, work.state_bytes / 1e6);
  std::printf("GEMM rate  %.1f TFLOP/s fp32, %.1f TFLOP/s tf32 (%d^3 through gpu::dense_forward, median of 10)\n",
              ceilings.gemm_tflops_fp32, ceilings.gemm_tflops_tf32, ceilings.gemm_size);
  std::printf("copy       %.0f GB/s (cudaMemcpy D2D of %zu MiB, read + write, median of 20)\n", ceilings.copy_gbps,
              ceilings.copy_bytes >> 20);
  std::printf("floors     FLOP %.3f ms (at the %s rate), bytes %.3f ms\n", flop_floor_ms, config.tf32 ? "tf32" : "fp32",
              byte_floor_ms);
  std::printf("achieved   %.2f TFLOP/s: %.2fx the FLOP floor, %.2fx the byte floor\n", achieved_tflops,
              ms / flop_floor_ms, ms / byte_floor_ms);
  std::printf("evaluate   %d test images in %.3f ms (median of %d; target <= %.0f ms: %s)\n", split.test.count, eval_ms,
              options.eval_repeats, kEvalTargetMs, eval_ms <= kEvalTargetMs ? "met" : "MISSED");
  std::printf("test       accuracy %.2f%% after %d epochs (1 warm-up + %d timed)\n", 100 * test_accuracy, trained,
              options.epochs);
  std::printf("serve      one forward pass (logits, copies included, median of 50): batch 1 %.3f ms, 8 %.3f ms, "
              "32 %.3f ms, 256 %.3f ms\n",
              logits_ms["1"].get<double>(), logits_ms["8"].get<double>(), logits_ms["32"].get<double>(),
              logits_ms["256"].get<double>());
  bench::print_step_phases(phases, event_median_ms * 1e3 / work.steps);
  std::printf("RESULT system=mnist-cuda ms_per_epoch=%.4f images_per_s=%.0f test_accuracy=%.4f epochs=%d "
              "event_ms_per_epoch=%.4f\n",
              ms, images_per_s, test_accuracy, options.epochs, event_median_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"bench_train: time the GPU trainer's epochs and compare them with the GEMM and copy ceilings",
               "bench_train"};
  app.add_option("--data-dir", options.data_dir, "Folder with the four MNIST IDX files (raw or .gz)")
      ->capture_default_str();
  app.add_option("--epochs", options.epochs, "Timed epochs (after one warm-up epoch)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--batch-size", options.batch_size, "Images per training step")
      ->capture_default_str()
      ->check(CLI::Range(1, 60000));
  app.add_option("--hidden", options.hidden, "Hidden layer widths, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_flag("--tf32", options.tf32, "TF32 tensor-core GEMMs (default: full fp32)");
  app.add_flag("--no-graph", options.no_graph, "Launch each kernel on the stream instead of replaying a CUDA graph");
  app.add_flag("--json", options.json, "Print one JSON object instead of the text report");
  app.add_option("--gemm-size", options.gemm_size, "Side of the square GEMM that measures the FLOP rate")
      ->capture_default_str()
      ->check(CLI::Range(256, 16384));
  app.add_option("--eval-repeats", options.eval_repeats, "Timed evaluations of the test set")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  bench::add_phase_options(app, options.phase_steps, options.phase_repeats);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    std::fprintf(stderr, "bench_train: error: %s (see bench_train --help)\n", error.what());
    return 2;
  }

  return bench::run_on_gpu("bench_train", [&] { return run(options); });
}
