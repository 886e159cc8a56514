#pragma once
// What the benchmarks (bench_train.cu, bench_cnn.cu) share: host timing around a synchronized
// device, the median, and their one-line error reporting.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <vector>

#include "mnist/check.h"
#include "mnist/config.h"
#include "mnist/device.h"
#include "mnist/idx.h"

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
