// The classifier head (kernels/classifier_head.{cu,cpp}): the CPU twin against independent
// double-precision loops, then the fused GPU kernels against the twin.
//
// Tolerance. Every output is a float sum of products; its error against the exact value is at
// most 1e-5·S, S the same sum over absolute values (tests/test_gemm.cu explains the 1e-5: above
// the worst case of the GEMM twins' blocked FMA summation for these lengths). S is computed by
// running the twin on |x|, |W|, |dl| with the same masks. The loss and gradient of the fused
// forward pass are the softmax-cross-entropy of its own logits, so they are compared with the
// twin applied to the GPU's logits, at softmax_ce's tolerance (1e-6 relative).
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/classifier_head.h"
#include "mnist/ops/finite_check.h"
#include "mnist/core/philox.h"
#include "test_util.h"

namespace mnist {
namespace {

constexpr double kSumTolerance = 1e-5;

std::vector<float> absolute(std::vector<float> v) {
  for (float& x : v) x = std::fabs(x);
  return v;
}

// max over i of |got - want| / S_i (S_i ≥ tiny), +inf for a non-finite `got`.
double max_scaled_error(const std::vector<float>& got, const std::vector<float>& want,
                        const std::vector<float>& scale) {
  if (got.size() != want.size() || got.size() != scale.size()) return INFINITY;
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    worst = std::fmax(worst, std::fabs(double(got[i]) - want[i]) / std::fmax(scale[i], 1e-30));
  }
  return worst;
}

struct Case {
  int rows, in, classes;
  std::vector<float> x, w, b, dl, z_below, b_below;
  std::vector<std::uint8_t> labels;
};

Case make_case(std::mt19937_64& rng, int rows, int in, int classes) {
  Case c{rows, in, classes};
  c.x = test::random_floats(rng, std::size_t(rows) * in);
  c.w = test::random_floats(rng, std::size_t(in) * classes);
  c.b = test::random_floats(rng, classes);
  c.dl = test::random_floats(rng, std::size_t(rows) * classes);
  c.z_below = test::random_floats(rng, std::size_t(rows) * in);
  c.b_below = test::random_floats(rng, in);
  c.labels = test::random_labels(rng, rows, classes);
  return c;
}

struct Backward {
  std::vector<float> dw, db, dz, db_below;
};

// The twin's backward; below: through the ReLU-dropout of (z_below, b_below) with `key`.
Backward ref_backward(const Case& c, const std::vector<float>& x, const std::vector<float>& dl,
                      const std::vector<float>& w, const DropoutKey* key, std::int64_t step) {
  Backward out{test::nan_filled(std::size_t(c.in) * c.classes), test::nan_filled(c.classes),
               test::nan_filled(std::size_t(c.rows) * c.in), test::nan_filled(c.in)};
  HiddenBelow below{c.z_below.data(), c.b_below.data(), key ? *key : DropoutKey{}, out.dz.data(), out.db_below.data()};
  twin::classifier_head_backward(x.data(), dl.data(), w.data(), out.dw.data(), out.db.data(), c.rows, c.in, c.classes,
                                key ? &below : nullptr, step);
  return out;
}

// ---- CPU twin against the definitions ---------------------------------------------------------

TEST(TwinClassifierHead, ForwardIsTheDenseLayerThenSoftmaxCrossEntropy) {
  std::mt19937_64 rng(test::fresh_seed());
  const Case c = make_case(rng, 9, 37, 10);
  std::vector<float> logits = test::nan_filled(9 * 10), loss = test::nan_filled(9), dl = test::nan_filled(9 * 10);
  twin::classifier_head_forward(c.x.data(), c.w.data(), c.b.data(), logits.data(), c.labels.data(), loss.data(),
                               dl.data(), c.rows, c.in, c.classes, 0.f);
  for (int r = 0; r < c.rows; ++r) {
    double z[10], zmax = -INFINITY;
    for (int k = 0; k < 10; ++k) {
      double s = c.b[k], abs_s = std::fabs(c.b[k]);
      for (int i = 0; i < c.in; ++i) {
        s += double(c.x[r * c.in + i]) * c.w[i * 10 + k];
        abs_s += std::fabs(double(c.x[r * c.in + i]) * c.w[i * 10 + k]);
      }
      EXPECT_NEAR(logits[r * 10 + k], s, kSumTolerance * abs_s) << r << "," << k;
      z[k] = logits[r * 10 + k];
      zmax = std::fmax(zmax, z[k]);
    }
    double sum = 0;
    for (const double v : z) sum += std::exp(v - zmax);
    const int label = c.labels[r];
    EXPECT_NEAR(loss[r], std::log(sum) - (z[label] - zmax), 1e-5) << r;
    for (int k = 0; k < 10; ++k)
      EXPECT_NEAR(dl[r * 10 + k], (std::exp(z[k] - zmax) / sum - (k == label)) / c.rows, 1e-6) << r << "," << k;
  }
}

TEST(TwinClassifierHead, BackwardIsTheGradientThroughTheLayerAndTheDropoutBelow) {
  std::mt19937_64 rng(test::fresh_seed());
  const Case c = make_case(rng, 11, 14, 10);  // 14 inputs: rows start off a multiple of four
  const DropoutKey key{rng(), 2, 0.3f};
  const std::int64_t step = 5;
  const Backward got = ref_backward(c, c.x, c.dl, c.w, &key, step);
  for (int i = 0; i < c.in; ++i) {
    double db_below = 0;
    for (int r = 0; r < c.rows; ++r) {
      double dh = 0;
      for (int k = 0; k < 10; ++k) dh += double(c.dl[r * 10 + k]) * c.w[i * 10 + k];
      const std::size_t e = std::size_t(r) * c.in + i;
      const bool pass = dropout_keep(key.seed, step, key.layer, e, dropout_threshold(key.p)) &&
                        c.z_below[e] + c.b_below[i] > 0.f;
      const double want = pass ? dh / (1.0 - 0.3) : 0.0;
      EXPECT_NEAR(got.dz[e], want, 1e-5) << r << "," << i;
      db_below += want;
    }
    EXPECT_NEAR(got.db_below[i], db_below, 1e-4) << i;
    for (int k = 0; k < 10; ++k) {
      double dw = 0;
      for (int r = 0; r < c.rows; ++r) dw += double(c.x[r * c.in + i]) * c.dl[r * 10 + k];
      EXPECT_NEAR(got.dw[i * 10 + k], dw, 1e-5) << i << "," << k;
    }
  }
  for (int k = 0; k < 10; ++k) {
    double db = 0;
    for (int r = 0; r < c.rows; ++r) db += c.dl[r * 10 + k];
    EXPECT_NEAR(got.db[k], db, 1e-6) << k;
  }
}

TEST(TwinClassifierHead, RejectsClassCountsTheKernelCannotHold) {
  const std::vector<float> v(64, 0.f);
  EXPECT_THROW(twin::classifier_head_forward(v.data(), v.data(), v.data(), nullptr, nullptr, nullptr, nullptr, 1, 1,
                                            17, 0.f),
               std::invalid_argument);
  EXPECT_THROW(twin::classifier_head_backward(v.data(), v.data(), v.data(), nullptr, nullptr, 1, 1, 0),
               std::invalid_argument);
}

// ---- GPU against the CPU twin -----------------------------------------------------------------

struct Shape {
  int rows, in, classes;
};
// Rows around the 8-row blocks and past 256 blocks (grid stride); inputs around the 64-column
// blocks, not multiples of four, the default MLP's 512 and the images' 784; 1, 3, 10, 16 classes.
const Shape kShapes[] = {{1, 1, 10},   {7, 13, 10},   {8, 64, 10},   {9, 65, 10},  {128, 512, 10},
                         {33, 784, 10}, {129, 30, 3}, {50, 100, 16}, {3, 5, 1},    {2100, 12, 10}};

std::string describe(Shape s) {
  return std::to_string(s.rows) + " rows, " + std::to_string(s.in) + " in, " + std::to_string(s.classes) + " classes";
}

TEST(GpuClassifierHead, ForwardMatchesTheCpuTwinWithItsTotals) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : kShapes) {
    // Past 256 blocks of fibers ThreadSanitizer takes half a minute; the grid stride is the only
    // thing that shape adds, and the other builds run it.
    if (test::too_large_for_tsan(std::size_t(s.rows) * s.in) || (test::kThreadSanitizer && s.rows > 1000)) continue;
    SCOPED_TRACE(describe(s));
    const Case c = make_case(rng, s.rows, s.in, s.classes);
    const std::size_t n = std::size_t(s.rows) * s.classes;
    std::vector<float> want_logits(n), scale(n), ignored_loss(s.rows);
    twin::classifier_head_forward(c.x.data(), c.w.data(), c.b.data(), want_logits.data(), nullptr, nullptr, nullptr,
                                 s.rows, s.in, s.classes, 0.f);
    twin::classifier_head_forward(absolute(c.x).data(), absolute(c.w).data(), absolute(c.b).data(), scale.data(),
                                 nullptr, nullptr, nullptr, s.rows, s.in, s.classes, 0.f);

    const DeviceBuffer<float> d_x(c.x), d_w(c.w), d_b(c.b);
    const DeviceBuffer<std::uint8_t> d_labels(c.labels);
    DeviceBuffer<float> d_logits(n), d_loss(s.rows), d_dl(n);
    DeviceBuffer<EvalTotals> d_totals(std::vector<EvalTotals>{EvalTotals{}});
    DeviceBuffer<SoftmaxCeScratch> d_scratch(1);
    d_scratch.fill_bytes(0);
    DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{3}), d_flag(std::vector<std::int64_t>{kAllFinite});
    std::vector<float> first_logits;
    EvalTotals first_totals{};
    for (int run = 0; run < 2; ++run) {  // the emulator runs blocks and threads in a fresh order each time
      d_logits.fill_bytes(0xFF);
      d_loss.fill_bytes(0xFF);
      d_dl.fill_bytes(0xFF);
      d_totals.upload({EvalTotals{}});
      gpu::classifier_head_forward(d_x.data(), d_w.data(), d_b.data(), d_logits.data(), d_labels.data(),
                                   d_loss.data(), d_dl.data(), s.rows, s.in, s.classes, 0.1f, nullptr,
                                   {d_totals.data(), d_scratch.data(), d_step.data(), d_flag.data()});
      MNIST_CHECK(cudaDeviceSynchronize());
      const std::vector<float> logits = d_logits.download();
      EXPECT_LE(max_scaled_error(logits, want_logits, scale), kSumTolerance);

      std::vector<float> want_loss(s.rows), want_dl(n);
      EvalTotals want_totals{};
      twin::softmax_cross_entropy(logits.data(), c.labels.data(), want_loss.data(), want_dl.data(), s.rows, s.classes,
                                 0.1f, &want_totals);
      EXPECT_LE(test::max_rel_error(d_loss.download(), want_loss, 1.0), 1e-6);
      EXPECT_LE(test::max_rel_error(d_dl.download(), want_dl, 1e-3 / s.rows), 1e-6);
      const EvalTotals got_totals = d_totals.download()[0];
      EXPECT_EQ(got_totals.correct, want_totals.correct);
      EXPECT_EQ(got_totals.count, want_totals.count);
      EXPECT_NEAR(got_totals.loss_sum, want_totals.loss_sum, 1e-9 * (1 + std::fabs(want_totals.loss_sum)));
      if (run == 0) {
        first_logits = logits;
        first_totals = got_totals;
      } else {
        EXPECT_EQ(logits, first_logits) << "a repeat differs";
        EXPECT_EQ(got_totals.loss_sum, first_totals.loss_sum) << "a repeat differs";
      }
    }
    EXPECT_EQ(d_flag.download()[0], kAllFinite);
    EXPECT_EQ(d_scratch.download()[0].blocks_done, 0u) << "the ticket counter is left for the next launch";
  }
}

// Without labels (prediction): the logits only; the loss and gradient buffers are not touched.
TEST(GpuClassifierHead, ForwardWithoutLabelsWritesTheLogitsOnly) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const Case c = make_case(rng, 20, 50, 10);
  std::vector<float> want(200), scale(200);
  twin::classifier_head_forward(c.x.data(), c.w.data(), c.b.data(), want.data(), nullptr, nullptr, nullptr, 20, 50,
                               10, 0.f);
  twin::classifier_head_forward(absolute(c.x).data(), absolute(c.w).data(), absolute(c.b).data(), scale.data(), nullptr,
                               nullptr, nullptr, 20, 50, 10, 0.f);
  const DeviceBuffer<float> d_x(c.x), d_w(c.w), d_b(c.b);
  DeviceBuffer<float> d_logits(200), d_loss(20);
  d_logits.fill_bytes(0xFF);
  d_loss.fill_bytes(0x7F);
  gpu::classifier_head_forward(d_x.data(), d_w.data(), d_b.data(), d_logits.data(), nullptr, d_loss.data(), nullptr,
                               20, 50, 10, 0.f, nullptr);
  MNIST_CHECK(cudaDeviceSynchronize());
  EXPECT_LE(max_scaled_error(d_logits.download(), want, scale), kSumTolerance);
  std::vector<unsigned char> bytes(20 * sizeof(float));
  MNIST_CHECK(cudaMemcpy(bytes.data(), d_loss.data(), bytes.size(), cudaMemcpyDeviceToHost));
  for (const unsigned char byte : bytes) ASSERT_EQ(byte, 0x7F) << "the loss buffer was written";
}

// A non-finite logit (an infinite input) reaches the divergence flag at the step read on the device.
TEST(GpuClassifierHead, ANonFiniteLossIsFlaggedAtTheDeviceStep) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  Case c = make_case(rng, 16, 8, 10);
  c.x[5 * 8 + 3] = INFINITY;
  const DeviceBuffer<float> d_x(c.x), d_w(c.w), d_b(c.b);
  const DeviceBuffer<std::uint8_t> d_labels(c.labels);
  DeviceBuffer<float> d_logits(160), d_loss(16), d_dl(160);
  const std::int64_t step = 41 + std::int64_t(rng() % 1000);
  DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step}), d_flag(std::vector<std::int64_t>{kAllFinite});
  gpu::classifier_head_forward(d_x.data(), d_w.data(), d_b.data(), d_logits.data(), d_labels.data(), d_loss.data(),
                               d_dl.data(), 16, 8, 10, 0.f, nullptr, {nullptr, nullptr, d_step.data(), d_flag.data()});
  MNIST_CHECK(cudaDeviceSynchronize());
  const std::int64_t flag = d_flag.download()[0];
  EXPECT_EQ(flag / kNonFiniteCodes, step);
  EXPECT_TRUE(flag % kNonFiniteCodes == kLossNaN || flag % kNonFiniteCodes == kLossNaN + 1) << flag;
}

TEST(GpuClassifierHead, BackwardMatchesTheCpuTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Shape s : kShapes) {
    if (test::too_large_for_tsan(std::size_t(s.rows) * s.in)) continue;
    for (const float p : {-1.f, 0.f, 0.25f}) {  // -1: no hidden layer below (x is the input)
      SCOPED_TRACE(describe(s) + (p < 0 ? ", input below" : ", dropout " + std::to_string(p)));
      const Case c = make_case(rng, s.rows, s.in, s.classes);
      const DropoutKey key{rng(), std::uint32_t(rng() % 3), p < 0 ? 0.f : p};
      const DropoutKey* below_key = p < 0 ? nullptr : &key;
      const std::int64_t step = std::int64_t(rng() % 100000);
      const Backward want = ref_backward(c, c.x, c.dl, c.w, below_key, step);
      const Backward scale = ref_backward(c, absolute(c.x), absolute(c.dl), absolute(c.w), below_key, step);

      const DeviceBuffer<float> d_x(c.x), d_w(c.w), d_dl(c.dl), d_z(c.z_below), d_bz(c.b_below);
      DeviceBuffer<float> d_dw(want.dw.size()), d_db(s.classes), d_dz(want.dz.size()), d_db_below(s.in);
      DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{step});
      Backward first;
      for (int run = 0; run < 2; ++run) {
        for (DeviceBuffer<float>* b : {&d_dw, &d_db, &d_dz, &d_db_below}) b->fill_bytes(0xFF);
        const HiddenBelow below{d_z.data(), d_bz.data(), key, d_dz.data(), d_db_below.data()};
        gpu::classifier_head_backward(d_x.data(), d_dl.data(), d_w.data(), d_dw.data(), d_db.data(), s.rows, s.in,
                                      s.classes, nullptr, below_key ? &below : nullptr, d_step.data());
        MNIST_CHECK(cudaDeviceSynchronize());
        const Backward got{d_dw.download(), d_db.download(), d_dz.download(), d_db_below.download()};
        EXPECT_LE(max_scaled_error(got.dw, want.dw, scale.dw), kSumTolerance) << "dW";
        EXPECT_LE(max_scaled_error(got.db, want.db, scale.db), kSumTolerance) << "db";
        if (below_key != nullptr) {
          EXPECT_LE(max_scaled_error(got.dz, want.dz, scale.dz), kSumTolerance) << "dz below";
          std::size_t zero_mismatches = 0;  // the same mask, element for element
          for (std::size_t i = 0; i < got.dz.size(); ++i) zero_mismatches += (got.dz[i] == 0.f) != (want.dz[i] == 0.f);
          EXPECT_EQ(zero_mismatches, 0u);
          EXPECT_LE(max_scaled_error(got.db_below, want.db_below, scale.db_below), kSumTolerance) << "db below";
        } else {
          for (const float v : got.dz) ASSERT_TRUE(std::isnan(v)) << "dz written without a layer below";
        }
        if (run == 0) {
          first = got;
        } else {
          EXPECT_EQ(got.dw, first.dw) << "a repeat differs";
          EXPECT_EQ(got.db, first.db) << "a repeat differs";
          if (below_key != nullptr) EXPECT_EQ(got.db_below, first.db_below) << "a repeat differs";
        }
      }
    }
  }
}

TEST(GpuClassifierHead, RejectsWhatTheKernelsCannotDo) {
  MNIST_REQUIRE_GPU();
  DeviceBuffer<float> d(64);
  EXPECT_THROW(gpu::classifier_head_forward(d.data(), d.data(), d.data(), d.data(), nullptr, nullptr, nullptr, 1, 1,
                                            17, 0.f, nullptr),
               std::invalid_argument);
  const HiddenBelow below{d.data(), d.data(), DropoutKey{1, 0, 0.5f}, d.data() + 8, d.data() + 16};
  EXPECT_THROW(gpu::classifier_head_backward(d.data(), d.data(), d.data(), d.data(), d.data(), 1, 1, 10, nullptr,
                                             &below, nullptr),
               std::invalid_argument)
      << "dropout below without the step counter";
}

}  // namespace
}  // namespace mnist
