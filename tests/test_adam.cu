// Adam / AdamW: the CPU twin against values worked out by hand from PyTorch's formulas, then the
// single-launch GPU kernel (device step counter, float4 body, scalar head and tail) against the
// CPU twin over several steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/adam.h"
#include "test_util.h"

namespace mnist {
namespace {

using test::fresh_seed;
using test::max_rel_error;
using test::random_floats;

// ---- CPU twin against the math -------------------------------------------------------------

TEST(TwinAdam, HandComputedFirstTwoSteps) {
  // Hyperparameters exact in binary, so the hand arithmetic below is exact too (m and v are).
  // lr = 0.125, β1 = 0.5, β2 = 0.75, ε = 1e-8, no weight decay.
  // Bias corrections: t = 1: 1-β1 = 0.5, 1-β2 = 0.25;  t = 2: 1-β1² = 0.75, 1-β2² = 0.4375.
  AdamConfig config;
  config.lr = 0.125f;
  config.beta1 = 0.5f;
  config.beta2 = 0.75f;
  config.eps = 1e-8f;
  const double eps = 1e-8;

  std::vector<float> theta = {1.0f, -0.5f, 0.25f};
  std::vector<float> m(3, 0.f), v(3, 0.f);
  const std::vector<float> g1 = {0.5f, -0.25f, 0.0f};
  const std::vector<float> g2 = {1.0f, 0.5f, -0.125f};

  // Step 1 (m = 0.5·g, v = 0.25·g², m̂ = g, sqrt(v̂) = |g|):
  //   θ0 = 1:     m = 0.25,   v = 0.0625,   θ = 1 - 0.125·0.5/(0.5 + ε)      = 0.8750000025
  //   θ1 = -0.5:  m = -0.125, v = 0.015625, θ = -0.5 + 0.125·0.25/(0.25 + ε) = -0.3750000050
  //   θ2 = 0.25:  m = 0,      v = 0,        θ = 0.25 - 0.125·0/(0 + ε)       = 0.25
  twin::adam_step(theta.data(), g1.data(), m.data(), v.data(), 3, config, 1);
  EXPECT_EQ(m, (std::vector<float>{0.25f, -0.125f, 0.f}));
  EXPECT_EQ(v, (std::vector<float>{0.0625f, 0.015625f, 0.f}));
  const std::vector<double> theta1 = {1 - 0.125 * 0.5 / (0.5 + eps), -0.5 + 0.125 * 0.25 / (0.25 + eps), 0.25};
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(theta[i], theta1[i], 1e-6 * std::fabs(theta1[i])) << i;

  // Step 2 (m = 0.5·m + 0.5·g, v = 0.75·v + 0.25·g²):
  //   θ0: m = 0.125 + 0.5 = 0.625;      v = 0.046875 + 0.25 = 0.296875
  //       θ = θ1 - 0.125·(0.625/0.75)/(sqrt(0.296875/0.4375) + ε)     = 0.7485464668
  //   θ1: m = -0.0625 + 0.25 = 0.1875;  v = 0.01171875 + 0.0625 = 0.07421875
  //       θ = θ1 - 0.125·(0.1875/0.75)/(sqrt(0.07421875/0.4375) + ε)  = -0.4508721255
  //   θ2: m = -0.0625;                  v = 0.25·0.015625 = 0.00390625
  //       θ = 0.25 + 0.125·(0.0625/0.75)/(sqrt(0.00390625/0.4375) + ε) = 0.3602396263
  twin::adam_step(theta.data(), g2.data(), m.data(), v.data(), 3, config, 2);
  EXPECT_EQ(m, (std::vector<float>{0.625f, 0.1875f, -0.0625f}));
  EXPECT_EQ(v, (std::vector<float>{0.296875f, 0.07421875f, 0.00390625f}));
  const std::vector<double> theta2 = {
      theta1[0] - 0.125 * (0.625 / 0.75) / (std::sqrt(0.296875 / 0.4375) + eps),
      theta1[1] - 0.125 * (0.1875 / 0.75) / (std::sqrt(0.07421875 / 0.4375) + eps),
      0.25 + 0.125 * (0.0625 / 0.75) / (std::sqrt(0.00390625 / 0.4375) + eps)};
  EXPECT_NEAR(theta2[0], 0.7485464668, 1e-9);  // the numbers in the comment above
  EXPECT_NEAR(theta2[1], -0.4508721255, 1e-9);
  EXPECT_NEAR(theta2[2], 0.3602396263, 1e-9);
  // Float arithmetic: a few roundings of 0.5 ulp each in the update and the parameter.
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(theta[i], theta2[i], 1e-6 * std::fabs(theta2[i])) << i;
}

TEST(TwinAdam, DefaultBetasTwoStepsByHand) {
  // PyTorch defaults (β1 = 0.9, β2 = 0.999 as floats, widened to double here), one scalar:
  // θ = 0.3, g1 = 0.02, g2 = -0.01, lr = 1e-3, ε = 1e-8.
  AdamConfig config;  // defaults
  const double b1 = config.beta1, b2 = config.beta2, lr = config.lr, eps = config.eps;
  float theta = 0.3f, m = 0.f, v = 0.f;
  const float g1 = 0.02f, g2 = -0.01f;
  twin::adam_step(&theta, &g1, &m, &v, 1, config, 1);
  twin::adam_step(&theta, &g2, &m, &v, 1, config, 2);

  const double m1 = (1 - b1) * g1, v1 = (1 - b2) * g1 * g1;
  const double theta1 = 0.3f - lr * (m1 / (1 - b1)) / (std::sqrt(v1 / (1 - b2)) + eps);  // ≈ 0.3 - lr
  const double m2 = b1 * m1 + (1 - b1) * g2, v2 = b2 * v1 + (1 - b2) * g2 * g2;
  const double theta2 = theta1 - lr * (m2 / (1 - b1 * b1)) / (std::sqrt(v2 / (1 - b2 * b2)) + eps);
  EXPECT_NEAR(theta1, static_cast<double>(0.3f) - lr, 1e-9);  // ε/|g1| = 5e-7 of lr
  // m, v: a few float roundings of values far from cancellation.
  EXPECT_NEAR(m, m2, 1e-6 * std::fabs(m2));
  EXPECT_NEAR(v, v2, 1e-6 * std::fabs(v2));
  EXPECT_NEAR(theta, theta2, 1e-6 * std::fabs(theta2));
}

TEST(TwinAdam, FirstStepMovesEveryParameterByLr) {
  // t = 1: m̂ = g and sqrt(v̂) = |g|, so θ moves by lr·g/(|g| + ε) ≈ lr·sign(g) whatever |g| is.
  std::mt19937_64 rng(fresh_seed());
  const std::size_t n = 1000;
  AdamConfig config;
  auto theta = random_floats(rng, n);
  const auto before = theta;
  auto g = random_floats(rng, n, 1e-3f, 1.f);
  for (std::size_t i = 0; i < n; i += 2) g[i] = -g[i];
  std::vector<float> m(n, 0.f), v(n, 0.f);
  twin::adam_step(theta.data(), g.data(), m.data(), v.data(), n, config, 1);
  for (std::size_t i = 0; i < n; ++i) {
    const double moved = static_cast<double>(theta[i]) - before[i];
    // |θ| < 1: the stored θ is rounded to 0.5 ulp <= 6e-8; ε/|g| <= 1e-5 of lr is 1e-8.
    EXPECT_NEAR(moved, -config.lr * (g[i] > 0 ? 1.0 : -1.0), 1e-7) << i;
  }
}

TEST(TwinAdam, AdamWDecayDiffersFromL2AsExpected) {
  // θ = {2, 2}, g = {0, 0.5}, lr = 0.01, wd = 0.1, step 1.
  // Adam (L2): g' = g + 0.1·2 = {0.2, 0.7}; the first step is normalised: θ -= lr·g'/(|g'| + ε),
  //   so the decay moves θ0 by the whole lr: {2 - 0.01·0.2/(0.2 + ε), 2 - 0.01·0.7/(0.7 + ε)}.
  // AdamW: θ *= 1 - lr·wd = 0.999 first, no decay in g: {2·0.999 - 0, 2·0.999 - 0.01·0.5/(0.5 + ε)}.
  AdamConfig config;
  config.lr = 0.01f;
  config.weight_decay = 0.1f;
  const double lr = config.lr, wd = config.weight_decay, eps = config.eps;
  const std::vector<float> g = {0.f, 0.5f};

  std::vector<float> adam = {2.f, 2.f}, m(2, 0.f), v(2, 0.f);
  twin::adam_step(adam.data(), g.data(), m.data(), v.data(), 2, config, 1);
  const double l2_0 = wd * 2, l2_1 = 0.5f + wd * 2;
  EXPECT_NEAR(adam[0], 2 - lr * l2_0 / (l2_0 + eps), 1e-6);
  EXPECT_NEAR(adam[1], 2 - lr * l2_1 / (l2_1 + eps), 1e-6);
  EXPECT_NEAR(adam[0], 1.99, 1e-6);

  config.decoupled = true;
  std::vector<float> adamw = {2.f, 2.f};
  std::fill(m.begin(), m.end(), 0.f);
  std::fill(v.begin(), v.end(), 0.f);
  twin::adam_step(adamw.data(), g.data(), m.data(), v.data(), 2, config, 1);
  EXPECT_NEAR(adamw[0], 2 * (1 - lr * wd), 1e-6);
  EXPECT_NEAR(adamw[0], 1.998, 1e-6);
  EXPECT_NEAR(adamw[1], 2 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps), 1e-6);
}

TEST(TwinAdam, ZeroWeightDecayMakesAdamAndAdamWIdentical) {
  // wd = 0: Adam adds 0·θ to g (exact) and AdamW multiplies θ by 1 - 0 = 1 (exact): bit-identical.
  std::mt19937_64 rng(fresh_seed());
  const std::size_t n = 1000;
  AdamConfig config;
  config.lr = 3e-3f;
  std::vector<float> a = random_floats(rng, n), ma(n, 0.f), va(n, 0.f);
  std::vector<float> b = a, mb(n, 0.f), vb(n, 0.f);
  AdamConfig decoupled = config;
  decoupled.decoupled = true;
  for (std::int64_t t = 1; t <= 5; ++t) {
    const auto g = random_floats(rng, n);
    twin::adam_step(a.data(), g.data(), ma.data(), va.data(), n, config, t);
    twin::adam_step(b.data(), g.data(), mb.data(), vb.data(), n, decoupled, t);
  }
  EXPECT_EQ(a, b);
  EXPECT_EQ(ma, mb);
  EXPECT_EQ(va, vb);
}

// ---- GPU kernel against the CPU twin ------------------------------------------------------------

// Tolerances (GPU vs CPU). Both sides make the same float operations in the same order with the
// same roundings (explicit fma on both sides, IEEE sqrt and division), so m and v are expected
// bit-identical; the only possible difference is pow in double (CUDA <= 2 ulp, glibc < 1 ulp),
// which changes the float step size or sqrt(1-β2^t) only if it straddles a float rounding boundary
// (~1e-9 odds), and then by 1 ulp of an update of size <= ~3·lr. Checked: m and v to 1e-6 relative
// (floor 1e-30: expected 0), θ to 1e-6 relative with an absolute floor of 1e-2 (1e-8 absolute,
// above 5 steps × 1 ulp × 3e-3).
constexpr double kTolerance = 1e-6;

constexpr std::size_t kGuard = 8;  // poisoned floats after the buffer (and `offset` of them before)

// n floats at `offset` inside a buffer poisoned with 0xFF, so any write outside [0, n) shows.
class Flat {
 public:
  Flat(const std::vector<float>& host, std::size_t offset)
      : buffer_(host.size() + offset + kGuard), offset_(offset), n_(host.size()) {
    buffer_.fill_bytes(0xFF);
    upload(host);
  }
  float* data() { return buffer_.data() + offset_; }
  void upload(const std::vector<float>& host) {
    ASSERT_EQ(host.size(), n_);
    if (n_ > 0) MNIST_CHECK(cudaMemcpy(data(), host.data(), n_ * sizeof(float), cudaMemcpyHostToDevice));
  }
  std::vector<float> values() const {
    const auto all = buffer_.download();
    return std::vector<float>(all.begin() + offset_, all.begin() + offset_ + n_);
  }
  bool guards_intact() const {
    const auto all = buffer_.download();
    for (std::size_t i = 0; i < all.size(); ++i) {
      if (i >= offset_ && i < offset_ + n_) continue;
      std::uint32_t bits;
      std::memcpy(&bits, &all[i], sizeof bits);
      if (bits != 0xFFFFFFFFu) return false;
    }
    return true;
  }

 private:
  DeviceBuffer<float> buffer_;
  std::size_t offset_, n_;
};

struct Layout {
  std::size_t params, grads, m, v;  // offsets in floats from a 256-byte aligned allocation
};

void check_steps_against_cpu(std::mt19937_64& rng, std::size_t n, Layout layout, bool decoupled) {
  SCOPED_TRACE(::testing::Message() << "n " << n << " offsets " << layout.params << layout.grads << layout.m
                                    << layout.v << (decoupled ? " AdamW" : " Adam"));
  AdamConfig config;
  config.lr = 1e-3f;
  config.weight_decay = 1e-2f;
  config.decoupled = decoupled;

  auto theta = random_floats(rng, n);
  auto m = random_floats(rng, n, -1e-2f, 1e-2f);  // a state from earlier training, not just zeros
  auto v = random_floats(rng, n, 0.f, 1e-4f);
  Flat d_theta(theta, layout.params), d_grads(std::vector<float>(n, 0.f), layout.grads), d_m(m, layout.m),
      d_v(v, layout.v);
  DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{0});

  for (std::int64_t t = 1; t <= 5; ++t) {
    SCOPED_TRACE(::testing::Message() << "step " << t);
    const auto g = random_floats(rng, n);
    d_grads.upload(g);
    gpu::advance_step(d_step.data(), nullptr);
    gpu::adam_step(d_theta.data(), d_grads.data(), d_m.data(), d_v.data(), n, config, d_step.data(), nullptr);
    twin::adam_step(theta.data(), g.data(), m.data(), v.data(), n, config, t);
    MNIST_CHECK(cudaDeviceSynchronize());
    EXPECT_LE(max_rel_error(d_m.values(), m, 1e-30), kTolerance);
    EXPECT_LE(max_rel_error(d_v.values(), v, 1e-30), kTolerance);
    EXPECT_LE(max_rel_error(d_theta.values(), theta, 1e-2), kTolerance);
  }
  EXPECT_EQ(d_step.download()[0], 5);
  EXPECT_TRUE(d_theta.guards_intact());
  EXPECT_TRUE(d_grads.guards_intact());
  EXPECT_TRUE(d_m.guards_intact());
  EXPECT_TRUE(d_v.guards_intact());
}

TEST(GpuAdam, MatchesCpuTwinOverSeveralSteps) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  // Aligned (float4 body + tail), equally offset by 1 and 3 floats (scalar head, then float4),
  // unequally offset (all scalar).
  const Layout layouts[] = {{0, 0, 0, 0}, {1, 1, 1, 1}, {3, 3, 3, 3}, {1, 0, 2, 3}};
  // n: heads and tails, one block, 69 blocks, and the default MLP's parameter count.
  for (const std::size_t n :
       {std::size_t{1}, std::size_t{3}, std::size_t{5}, std::size_t{1000}, std::size_t{70001}, std::size_t{669706}}) {
    if (test::too_large_for_tsan(n)) continue;
    for (const Layout& layout : layouts)
      for (const bool decoupled : {false, true}) check_steps_against_cpu(rng, n, layout, decoupled);
  }
}

TEST(GpuAdam, AdvanceStepCountsOnTheDevice) {
  MNIST_REQUIRE_GPU();
  DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{41});
  for (int i = 0; i < 3; ++i) gpu::advance_step(d_step.data(), nullptr);
  EXPECT_EQ(d_step.download()[0], 44);
}

// Owns a captured graph and its executable.
struct Graph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
};

// advance_step + adam_step captured once and replayed `steps` times: each replay must see
// t = 1, 2, … (the bias correction, and the schedule's rate) as the CPU twin does.
void replay_captured_step_against_cpu(const AdamConfig& config, int steps, std::mt19937_64& rng) {
  const std::size_t n = 1000;
  auto theta = random_floats(rng, n);
  std::vector<float> m(n, 0.f), v(n, 0.f);
  DeviceBuffer<float> d_theta(theta), d_grads(n), d_m(m), d_v(v);
  DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{0});

  Stream stream;
  Graph g;
  MNIST_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  gpu::advance_step(d_step.data(), stream.get());
  gpu::adam_step(d_theta.data(), d_grads.data(), d_m.data(), d_v.data(), n, config, d_step.data(), stream.get());
  MNIST_CHECK(cudaStreamEndCapture(stream.get(), &g.graph));
  MNIST_CHECK(cudaGraphInstantiate(&g.exec, g.graph, 0));

  for (std::int64_t t = 1; t <= steps; ++t) {
    const auto grads = random_floats(rng, n);
    MNIST_CHECK(cudaMemcpyAsync(d_grads.data(), grads.data(), n * sizeof(float), cudaMemcpyHostToDevice,
                                stream.get()));
    MNIST_CHECK(cudaGraphLaunch(g.exec, stream.get()));
    stream.synchronize();  // grads (pageable host memory) must not change under the copy
    twin::adam_step(theta.data(), grads.data(), m.data(), v.data(), n, config, t);
    EXPECT_LE(max_rel_error(d_theta.download(), theta, 1e-2), kTolerance) << "step " << t;
  }
  EXPECT_EQ(d_step.download()[0], steps);
  EXPECT_LE(max_rel_error(d_m.download(), m, 1e-30), kTolerance);
  EXPECT_LE(max_rel_error(d_v.download(), v, 1e-30), kTolerance);
}

TEST(GpuAdam, CapturedGraphReplaysWithAFreshStep) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  AdamConfig config;
  config.decoupled = true;
  config.weight_decay = 1e-2f;
  replay_captured_step_against_cpu(config, 4, rng);
}

// ---- learning-rate schedules -----------------------------------------------------------------

TEST(TwinLrSchedule, ConstantIsTheBaseRateExactly) {
  LrSchedule s;
  s.base = 3e-4f;
  for (const std::int64_t t : {1, 2, 1000, 1000000}) EXPECT_EQ(scheduled_lr(s, t), 3e-4f) << t;
}

TEST(TwinLrSchedule, WarmUpRisesLinearlyThenHoldsForConstant) {
  LrSchedule s;
  s.base = 1e-3f;
  s.warmup_steps = 10;
  s.total_steps = 100;
  EXPECT_FLOAT_EQ(scheduled_lr(s, 1), 1e-4f);
  EXPECT_FLOAT_EQ(scheduled_lr(s, 5), 5e-4f);
  EXPECT_EQ(scheduled_lr(s, 10), 1e-3f);
  EXPECT_EQ(scheduled_lr(s, 11), 1e-3f);
  EXPECT_EQ(scheduled_lr(s, 100), 1e-3f);
}

// min + (base - min)·(1 + cos(π·p))/2: base at the end of the warm-up, the mean halfway, min at
// the end, and never rising in between.
TEST(TwinLrSchedule, CosineFallsFromBaseToMin) {
  LrSchedule s;
  s.kind = LrSchedule::kCosine;
  s.base = 1e-3f;
  s.min = 1e-5;
  s.warmup_steps = 20;
  s.total_steps = 220;
  EXPECT_EQ(scheduled_lr(s, 20), 1e-3f);
  EXPECT_FLOAT_EQ(scheduled_lr(s, 120), float((1e-3 + 1e-5) / 2));
  EXPECT_FLOAT_EQ(scheduled_lr(s, 220), 1e-5f);
  EXPECT_FLOAT_EQ(scheduled_lr(s, 5000), 1e-5f) << "past the end it stays at min";
  for (std::int64_t t = 21; t <= 220; ++t) EXPECT_LE(scheduled_lr(s, t), scheduled_lr(s, t - 1)) << t;
}

TEST(TwinLrSchedule, OneCycleStartsAtAFractionAndPeaksAfterItsWarmUp) {
  LrSchedule s;
  s.kind = LrSchedule::kOneCycle;
  s.base = 2.5e-3f;
  s.warmup_steps = 30;
  s.total_steps = 100;
  EXPECT_FLOAT_EQ(scheduled_lr(s, 1), float(1e-4 + (2.5e-3 - 1e-4) / 30));
  EXPECT_FLOAT_EQ(scheduled_lr(s, 30), 2.5e-3f);
  EXPECT_FLOAT_EQ(scheduled_lr(s, 100), 0.f);
}

TEST(TwinLrSchedule, StepDecaysEveryStepSteps) {
  LrSchedule s;
  s.kind = LrSchedule::kStep;
  s.base = 1e-2f;
  s.step_steps = 10;
  s.decay = 0.5;
  s.total_steps = 100;
  EXPECT_EQ(scheduled_lr(s, 1), 1e-2f);
  EXPECT_EQ(scheduled_lr(s, 10), 1e-2f);
  EXPECT_FLOAT_EQ(scheduled_lr(s, 11), 5e-3f);
  EXPECT_FLOAT_EQ(scheduled_lr(s, 21), 2.5e-3f);
}

// Adam takes the rate of its step from the schedule: one step at t with a schedule equals one
// step with a constant rate equal to lr(t), bit for bit (AdamW's decay follows the rate too).
TEST(TwinAdam, FollowsItsScheduleStepByStep) {
  std::mt19937_64 rng(fresh_seed());
  constexpr std::size_t n = 257;
  for (const bool decoupled : {false, true}) {
    AdamConfig scheduled;
    scheduled.lr = 2e-3f;
    scheduled.weight_decay = 1e-2f;
    scheduled.decoupled = decoupled;
    scheduled.schedule.kind = LrSchedule::kCosine;
    scheduled.schedule.warmup_steps = 3;
    scheduled.schedule.total_steps = 12;
    auto a = random_floats(rng, n), b = a;
    std::vector<float> ma(n, 0.f), va(n, 0.f), mb(n, 0.f), vb(n, 0.f);
    for (std::int64_t t = 1; t <= 12; ++t) {
      const auto g = random_floats(rng, n);
      twin::adam_step(a.data(), g.data(), ma.data(), va.data(), n, scheduled, t);
      AdamConfig fixed = scheduled;
      fixed.schedule = LrSchedule{};
      fixed.lr = scheduled_lr(adam_scalars(scheduled).schedule, t);
      twin::adam_step(b.data(), g.data(), mb.data(), vb.data(), n, fixed, t);
      ASSERT_EQ(a, b) << "step " << t << (decoupled ? " AdamW" : " Adam");
    }
  }
}

// On the device the rate comes from the step counter in device memory: a captured graph replays
// the schedule, step after step, as the CPU twin follows it.
TEST(GpuAdam, CapturedGraphFollowsTheSchedule) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  AdamConfig config;
  config.lr = 3e-3f;
  config.decoupled = true;
  config.weight_decay = 1e-2f;
  config.schedule.kind = LrSchedule::kOneCycle;
  config.schedule.warmup_steps = 2;
  config.schedule.total_steps = 6;
  replay_captured_step_against_cpu(config, 6, rng);
}

}  // namespace
}  // namespace mnist
