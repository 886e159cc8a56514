#pragma once
// What the benchmarks (bench_train.cu, bench_cnn.cu) share: host timing around a synchronized
// device, the median, the step-phase table, and their one-line error reporting.
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <vector>

#include "mnist/core/check.h"
#include "mnist/core/config.h"
#include "mnist/core/device.h"
#include "mnist/data/idx.h"
#include "mnist/train/trainer.h"

namespace bench {

inline double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Milliseconds of `work` as the host sees it, with the whole device idle before and after.
inline double wall_ms(const std::function<void()>& work) {
  MNIST_CHECK(cudaDeviceSynchronize());
  const auto start = std::chrono::steady_clock::now();
  work();
  MNIST_CHECK(cudaDeviceSynchronize());
  const auto stop = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(stop - start).count();
}

// Trainer::time_step_phases, where Nsight Systems cannot run: which part of a step costs most.
// A phase's own cost is the difference between the cut after it and the cut before it (noise
// can make a cheap one come out slightly negative). epoch_us_per_step: the timed epochs' device
// time per step, for comparison with the whole step.
inline void print_step_phases(const mnist::StepPhaseTimes& times, double epoch_us_per_step) {
  if (times.prefixes.empty()) {
    std::printf("phases     not timed (no full batch, or --phase-steps 0)\n");
    return;
  }
  std::printf("phases     %d full steps cut after each phase, %s (median of %d; a phase's cost is the "
              "difference of two cuts):\n",
              times.steps, times.graph ? "one CUDA graph each" : "stream launches", times.repeats);
  std::printf("             %-14s %9s %11s %7s\n", "phase", "us/step", "cut after", "share");
  const double whole = times.prefixes.back().ms_per_step * 1e3;
  double before = 0;
  for (const mnist::StepPhaseTime& cut : times.prefixes) {
    const double us = cut.ms_per_step * 1e3;
    std::printf("             %-14s %9.2f %11.2f %6.1f%%\n", cut.phase.c_str(), us - before, us,
                100 * (us - before) / whole);
    before = us;
  }
  std::printf("             %-14s %9s %11.2f   (the timed epochs: %.2f us/step)\n", "whole step", "", whole,
              epoch_us_per_step);
}

// The two options of the phase table, with each benchmark's defaults in `steps` and `repeats`.
inline void add_phase_options(CLI::App& app, int& steps, int& repeats) {
  app.add_option("--phase-steps", steps,
                 "Full steps per timed cut of a step after each phase (0: do not time the phases)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  app.add_option("--phase-repeats", repeats, "Timed replays of each cut (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
}

inline nlohmann::ordered_json step_phases_json(const mnist::StepPhaseTimes& times) {
  nlohmann::ordered_json j = {{"cuda_graph", times.graph},
                              {"steps", times.steps},
                              {"repeats", times.repeats},
                              {"phases", nlohmann::ordered_json::array()}};
  double before = 0;
  for (const mnist::StepPhaseTime& cut : times.prefixes) {
    const double us = cut.ms_per_step * 1e3;
    j["phases"].push_back({{"phase", cut.phase}, {"us_per_step", us - before}, {"cut_after_us_per_step", us}});
    before = us;
  }
  return j;
}

// `run` on a machine with a GPU, else one line and exit status 1; any failure is one line on
// stderr, "<program>: ... error: ...", and exit status 1.
inline int run_on_gpu(const char* program, const std::function<int()>& run) {
  if (mnist::cuda_device_count() == 0) {
    std::printf("%s: no CUDA device or driver on this machine (%s); nothing to measure\n", program,
                mnist::cuda_device_absence().c_str());
    return 1;
  }
  try {
    return run();
  } catch (const mnist::ConfigError& error) {
    std::fprintf(stderr, "%s: error: %s\n", program, error.what());
  } catch (const mnist::DataError& error) {
    std::fprintf(stderr, "%s: data error: %s\n", program, error.what());
  } catch (const mnist::CudaError& error) {
    std::fprintf(stderr, "%s: GPU error: %s\n", program, error.what());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: error: %s\n", program, error.what());
  }
  return 1;
}

}  // namespace bench
