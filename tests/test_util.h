#pragma once
// Helpers shared by the tests: fresh random inputs (seed printed on failure), NaN poison,
// error measures in which a NaN always fails, and the GPU skip.
#include <gtest/gtest.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mnist/core/device.h"

namespace mnist::test {

// After the last test, with MNIST_RESET_DEVICE_AT_EXIT=1 (gpu_check.sh's sanitizer runs): the
// CUDA context is destroyed, so that compute-sanitizer's memcheck reports leaks.
class ResetDeviceAfterTheTests : public ::testing::Environment {
 public:
  void TearDown() override { reset_device_if_asked(); }
};
inline ::testing::Environment* const kResetDeviceAfterTheTests =
    ::testing::AddGlobalTestEnvironment(new ResetDeviceAfterTheTests);

// A fresh seed per test, so every run draws new inputs. A failing test prints it (below), and
// MNIST_TEST_SEED=<seed> makes every test draw that seed instead, to replay the failure.
inline std::uint64_t fresh_seed() {
  std::uint64_t seed = 0;
  if (const char* fixed = std::getenv("MNIST_TEST_SEED"); fixed != nullptr && *fixed != '\0') {
    // strtoull alone would take " 5", "+5" and "-5" (as 2^64 - 5) and clamp an overflow.
    char* end = nullptr;
    errno = 0;
    seed = std::strtoull(fixed, &end, 10);
    if (!std::isdigit(static_cast<unsigned char>(*fixed)) || *end != '\0' || errno == ERANGE)
      ADD_FAILURE() << "MNIST_TEST_SEED must be an unsigned decimal number, got '" << fixed << "'";
  } else {
    std::random_device device;
    seed = (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// GoogleTest writes recorded properties only to its XML, so a failure's seed would be lost in
// ctest's output: this listener prints it with the command line that replays the test.
class SeedOfFailedTestPrinter : public ::testing::EmptyTestEventListener {
  void OnTestEnd(const ::testing::TestInfo& test) override {
    const ::testing::TestResult& result = *test.result();
    if (!result.Failed()) return;
    for (int i = 0; i < result.test_property_count(); ++i)
      if (std::string(result.GetTestProperty(i).key()) == "seed")
        std::printf("[  SEED    ] replay: MNIST_TEST_SEED=%s %s --gtest_filter=%s.%s\n",
                    result.GetTestProperty(i).value(), ::testing::internal::GetArgvs().front().c_str(),
                    test.test_suite_name(), test.name());
  }
};
inline const bool seed_of_failed_test_printer_installed = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new SeedOfFailedTestPrinter);
  return true;
}();

inline std::vector<float> random_floats(std::mt19937_64& rng, std::size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> out(n);
  for (auto& x : out) x = dist(rng);
  return out;
}

inline std::vector<std::uint8_t> random_labels(std::mt19937_64& rng, std::size_t n, int classes = 10) {
  std::uniform_int_distribution<int> dist(0, classes - 1);
  std::vector<std::uint8_t> out(n);
  for (auto& x : out) x = static_cast<std::uint8_t>(dist(rng));
  return out;
}

// The GPU emulator (tests/emu: the asan and tsan presets) stands in for cuBLAS and cuDNN with the
// same loops at every shape, where the real libraries choose their algorithms by shape: the tests
// that sweep shapes for those choices leave out the largest batches there.
#if defined(MNIST_GPU_EMULATOR)
inline constexpr bool kEmulator = true;
#else
inline constexpr bool kEmulator = false;
#endif

// ThreadSanitizer (preset tsan) tracks every emulated GPU thread, at about 10 µs a thread, and
// gives 4096 of them TSan threads of their own (tests/emu/README.md): a launch far larger than
// that repeats the same access pattern at great cost. Under it, tests leave out (or shrink)
// inputs of more than kTsanMaxElements; the asan preset and GPU runs still run them all.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif
#else
inline constexpr bool kThreadSanitizer = false;
#endif
inline constexpr std::size_t kTsanMaxElements = std::size_t{1} << 16;
inline bool too_large_for_tsan(std::size_t elements) { return kThreadSanitizer && elements > kTsanMaxElements; }

inline std::vector<float> nan_filled(std::size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// max_i |got_i - want_i| / max(|want_i|, floor). Any NaN or inf in `got` gives +inf.
inline double max_rel_error(const float* got, const float* want, std::size_t n, double floor = 1e-6) {
  double worst = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]) / std::fmax(std::fabs(want[i]), floor);
    worst = std::fmax(worst, err);
  }
  return worst;
}
inline double max_rel_error(const std::vector<float>& got, const std::vector<float>& want, double floor = 1e-6) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  return max_rel_error(got.data(), want.data(), got.size(), floor);
}

// Whether a GPU test without a usable device fails instead of skipping: profiling/gpu_session.sh
// and gpu_check.sh set MNIST_GPU_TESTS_MUST_RUN=1, since nvidia-smi can list a GPU that the CUDA
// runtime cannot use (a driver older than the runtime), and a run of skips would pass.
inline bool gpu_tests_must_run() {
  const char* value = std::getenv("MNIST_GPU_TESTS_MUST_RUN");
  return value != nullptr && std::string(value) == "1";
}

}  // namespace mnist::test

// GPU tests call this first: without a usable device they report SKIPPED with the reason (or
// fail, under MNIST_GPU_TESTS_MUST_RUN=1).
#define MNIST_REQUIRE_GPU()                                                                        \
  do {                                                                                             \
    if (::mnist::cuda_device_count() == 0) {                                                       \
      if (::mnist::test::gpu_tests_must_run())                                                     \
        FAIL() << "MNIST_GPU_TESTS_MUST_RUN=1 but no usable CUDA device: " << ::mnist::cuda_device_absence(); \
      GTEST_SKIP() << "no CUDA device or driver on this machine (" << ::mnist::cuda_device_absence() << ")"; \
    }                                                                                              \
  } while (0)
