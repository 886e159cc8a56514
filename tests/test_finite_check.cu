// Divergence watch (include/mnist/ops/finite_check.{h,cuh}, kernels/finite_check.cpp): flag =
// min(flag, step·4 + code) for the first NaN or infinity in the losses (codes 0, 1) or the
// parameters (codes 2, 3). The scan is checked against hand-made cases; softmax-cross-entropy
// and Adam, which record the flag as they write those values, against their CPU twins with NaN
// and infinities planted at random positions, and for the ordering that makes the answer
// deterministic.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/adam.h"
#include "mnist/ops/finite_check.h"
#include "mnist/ops/softmax_ce.h"
#include "test_util.h"

namespace mnist {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Finite values of every kind: ordinary, huge, tiny, subnormal, signed zeros.
std::vector<float> finite_values(std::mt19937_64& rng, std::size_t n) {
  std::vector<float> values = test::random_floats(rng, n, -3.f, 3.f);
  const float extremes[] = {std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(), -0.f, 0.f};
  for (std::size_t i = 0; i < n && i < 6; ++i) values[(i * 7919) % n] = extremes[i];
  return values;
}

// A NaN of either sign and any payload, or an infinity of either sign.
float non_finite(std::mt19937_64& rng, bool nan) {
  if (!nan) return rng() % 2 ? kInf : -kInf;
  const std::uint32_t bits = 0x7f800000u | (1u + std::uint32_t(rng() % 0x7fffffu)) | (rng() % 2 ? 0x80000000u : 0u);
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// ---- CPU twin ----------------------------------------------------------------------------------

TEST(TwinFiniteCheck, FiniteValuesAreAllFinite) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> losses = finite_values(rng, 100), params = finite_values(rng, 10000);
  EXPECT_EQ(twin::finite_check(losses.data(), losses.size(), params.data(), params.size(), 17), kAllFinite);
  EXPECT_EQ(twin::finite_check(nullptr, 0, nullptr, 0, 17), kAllFinite);
}

TEST(TwinFiniteCheck, CodeSaysWhereAndWhatFoldedWithTheStep) {
  const std::vector<float> fine(5, 1.f);
  struct Case {
    std::vector<float> losses, params;
    int code;
  };
  const Case cases[] = {
      {{1, kNaN, 1}, fine, kLossNaN},
      {{1, kInf, 1}, fine, kLossInf},
      {{-kInf, 1}, fine, kLossInf},
      {fine, {1, 2, kNaN}, kParamNaN},
      {fine, {-kInf, 2, 3}, kParamInf},
      {{kInf, 1}, {kNaN}, kLossInf},        // losses rank before parameters
      {{kInf, kNaN}, fine, kLossNaN},       // NaN before infinity, wherever it is
      {fine, {kInf, 0, kNaN, kInf}, kParamNaN},
  };
  for (const Case& c : cases) {
    const std::int64_t flag =
        twin::finite_check(c.losses.data(), c.losses.size(), c.params.data(), c.params.size(), 812);
    EXPECT_EQ(flag, 812 * kNonFiniteCodes + c.code);
    EXPECT_EQ(non_finite_step(flag), 812);
    EXPECT_EQ(non_finite_code(flag), c.code);
  }
}

TEST(TwinFiniteCheck, DescribesEveryCode) {
  EXPECT_STREQ(describe_non_finite(kLossNaN), "loss is NaN");
  EXPECT_STREQ(describe_non_finite(kLossInf), "loss is infinite");
  EXPECT_STREQ(describe_non_finite(kParamNaN), "a parameter is NaN");
  EXPECT_STREQ(describe_non_finite(kParamInf), "a parameter is infinite");
}

// One NaN or infinity at a random position of one array: found, with its code, whatever the
// position and the payload.
TEST(TwinFiniteCheck, FindsOnePlantedValueAnywhere) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> losses = finite_values(rng, 1 + rng() % 300), params = finite_values(rng, 1 + rng() % 5000);
    const bool in_loss = rng() % 2, nan = rng() % 2;
    std::vector<float>& target = in_loss ? losses : params;
    target[rng() % target.size()] = non_finite(rng, nan);
    const int code = (in_loss ? kLossNaN : kParamNaN) + (nan ? 0 : 1);
    EXPECT_EQ(twin::finite_check(losses.data(), losses.size(), params.data(), params.size(), trial + 1),
              std::int64_t(trial + 1) * kNonFiniteCodes + code);
  }
}

// ---- the watch on the device: softmax-cross-entropy and Adam against their CPU twins ------------

// A training step's two watched writes on a flag that holds `flag_before`: softmax-cross-entropy
// over logits whose rows give the kinds of `losses` (a finite row; a NaN logit for a NaN loss;
// the label's logit -inf, for an infinite one), then Adam over `params` with zero gradients,
// which leaves each parameter's kind as it is (AdamW without decay: θ·1, m = v = 0, an update of
// 0·θ). Returns the flag after, from the device (param_offset: the parameters that far into
// their buffer) or from the CPU twins (device = false).
std::int64_t run_step(const std::vector<float>& losses, const std::vector<float>& params, std::size_t param_offset,
                      std::int64_t step, std::int64_t flag_before, bool device, std::mt19937_64& rng) {
  constexpr int kClassCount = 10;
  const int rows = static_cast<int>(losses.size());
  std::vector<float> logits = test::random_floats(rng, losses.size() * kClassCount, -3.f, 3.f);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, losses.size(), kClassCount);
  for (int r = 0; r < rows; ++r) {
    float* row = logits.data() + std::size_t(r) * kClassCount;
    const std::int64_t kind = twin::finite_check(&losses[r], 1, nullptr, 0, 0);
    if (kind == kLossNaN) row[rng() % kClassCount] = non_finite(rng, true);
    if (kind == kLossInf) row[labels[r]] = -kInf;
  }
  AdamConfig adam;
  adam.decoupled = true;
  const std::size_t n = params.size();
  const std::vector<float> zeros(n, 0.f);
  if (!device) {
    std::vector<float> loss(losses.size()), dlogits(logits.size()), p = params, m = zeros, v = zeros;
    std::int64_t flag = flag_before;
    twin::softmax_cross_entropy(logits.data(), labels.data(), loss.data(), dlogits.data(), rows, kClassCount, 0.f,
                               nullptr, step, &flag);
    twin::adam_step(p.data(), zeros.data(), m.data(), v.data(), n, adam, step, &flag);
    return flag;
  }
  DeviceBuffer<float> d_logits(logits), d_loss(std::max<std::size_t>(losses.size(), 1)), d_dlogits(logits.size() + 1);
  DeviceBuffer<std::uint8_t> d_labels(std::max<std::size_t>(labels.size(), 1));
  if (!labels.empty()) d_labels.upload(labels);
  std::vector<float> padded(param_offset, 0.f);
  padded.insert(padded.end(), params.begin(), params.end());
  const std::vector<float> padded_zeros(padded.size(), 0.f);
  DeviceBuffer<float> d_params(padded), d_grads(padded_zeros), d_m(padded_zeros), d_v(padded_zeros);
  DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step}), d_flag(std::vector<std::int64_t>{flag_before});
  gpu::softmax_cross_entropy(d_logits.data(), d_labels.data(), d_loss.data(), d_dlogits.data(), rows, kClassCount,
                             0.f, nullptr, SoftmaxCeTraining{nullptr, nullptr, d_step.data(), d_flag.data()});
  gpu::adam_step(d_params.data() + param_offset, d_grads.data() + param_offset, d_m.data() + param_offset,
                 d_v.data() + param_offset, n, adam, d_step.data(), nullptr, d_flag.data());
  MNIST_CHECK(cudaDeviceSynchronize());
  return d_flag.download()[0];
}

// What the step must leave in the flag: the planted values' lowest code, the earliest step first.
std::int64_t expected_flag(const std::vector<float>& losses, const std::vector<float>& params, std::int64_t step,
                           std::int64_t flag_before) {
  return std::min(flag_before, twin::finite_check(losses.data(), losses.size(), params.data(), params.size(), step));
}

// Sizes around the block (256) and around the grid caps, up to a 784-512-512-10 model's 669,706
// parameters; up to four values planted at random, of random kinds, in either array; parameters
// aligned or not. The twins must find what was planted, and the kernels what the twins found.
TEST(GpuFiniteCheck, MatchesTwinWithValuesPlantedAtRandom) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const std::size_t sizes[] = {0, 1, 7, 255, 256, 257, 4096, 262143, 262145, 669706};
  for (std::size_t losses_n : {std::size_t(0), std::size_t(1), std::size_t(128), std::size_t(10000)}) {
    for (std::size_t params_n : sizes) {
      if (test::too_large_for_tsan(params_n)) continue;
      for (int plants = 0; plants <= 4; ++plants) {
        std::vector<float> losses = finite_values(rng, losses_n), params = finite_values(rng, params_n);
        for (int p = 0; p < plants; ++p) {
          std::vector<float>& target = (rng() % 2 && !losses.empty()) || params.empty() ? losses : params;
          if (!target.empty()) target[rng() % target.size()] = non_finite(rng, rng() % 2);
        }
        const std::int64_t step = 1 + std::int64_t(rng() % 100000);
        const std::size_t offset = rng() % 4;
        const std::string what = std::to_string(losses_n) + " losses, " + std::to_string(params_n) + " params, " +
                                 std::to_string(plants) + " planted, offset " + std::to_string(offset);
        const std::int64_t want = expected_flag(losses, params, step, kAllFinite);
        EXPECT_EQ(run_step(losses, params, offset, step, kAllFinite, false, rng), want) << "CPU twins: " << what;
        EXPECT_EQ(run_step(losses, params, offset, step, kAllFinite, true, rng), want) << what;
      }
    }
  }
}

// The earliest step wins: a flag already set by an earlier step stays as it is, even if this
// step's code would be lower; a later flag (never happens in training) is lowered.
TEST(GpuFiniteCheck, EarliestStepWins) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<float> losses{1.f, kNaN}, params{kInf, 2.f};
  const std::int64_t earlier = 3 * kNonFiniteCodes + kParamInf;
  for (const bool device : {false, true}) {
    EXPECT_EQ(run_step(losses, params, 0, 4, earlier, device, rng), earlier);
    EXPECT_EQ(run_step(losses, params, 0, 4, 9 * kNonFiniteCodes + kParamNaN, device, rng),
              4 * kNonFiniteCodes + kLossNaN);
    EXPECT_EQ(run_step({1.f}, {1.f}, 0, 4, earlier, device, rng), earlier);  // all finite: untouched
  }
}

// Many NaNs and infinities spread over many blocks: the same answer on every launch (integers
// under the atomic minimum, lowest code wins), and it is the twins'.
TEST(GpuFiniteCheck, ManyPlantsGiveTheSameAnswerEveryTime) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  // The default MLP's parameter count (fewer under ThreadSanitizer).
  const std::size_t param_count = test::kThreadSanitizer ? test::kTsanMaxElements : 669706;
  std::vector<float> losses = finite_values(rng, 512), params = finite_values(rng, param_count);
  for (int p = 0; p < 1000; ++p) params[rng() % params.size()] = non_finite(rng, p % 3 == 0);
  const std::int64_t want = expected_flag(losses, params, 1656, kAllFinite);
  ASSERT_EQ(want, 1656 * kNonFiniteCodes + kParamNaN);
  const int repeats = test::kThreadSanitizer ? 5 : 20;
  for (int repeat = 0; repeat < repeats; ++repeat)
    EXPECT_EQ(run_step(losses, params, 0, 1656, kAllFinite, true, rng), want) << repeat;
}

}  // namespace
}  // namespace mnist
