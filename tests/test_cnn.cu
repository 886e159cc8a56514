// The CNN model (include/mnist/model/cnn.h, gpu_cnn.h): its parameter layout and initialisation, the
// im2col convolution of the CPU model against twin::conv2d's direct loops, the gradient of the
// whole network against finite differences of an independent double-precision forward pass (same
// Philox dropout mask), Adam on a fixed batch, and the GPU model against the CPU one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mnist/optim/adam.h"
#include "mnist/model/cnn.h"
#include "mnist/core/device.h"
#include "mnist/model/gpu_cnn.h"
#include "mnist/ops/adam.h"
#include "mnist/ops/conv2d.h"
#include "mnist/core/philox.h"
#include "test_util.h"
#include "totals_util.h"

namespace mnist {
namespace {

const char* const kLayerNames[CnnShape::kLayers] = {"conv1", "conv2", "dense1", "dense2"};

// A small network for the checks that run the double-precision reference many times. 10×12 is
// not square (a swapped height and width shows) and pools to 5×6 and then 2×3: the second pooling
// drops a row, the case PyTorch's MaxPool2d(2) floors.
CnnShape small_shape() {
  CnnShape s;
  s.height = 10;
  s.width = 12;
  s.channels = {2, 3};
  s.hidden = 16;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Layout and initialisation.

TEST(TwinCnn, ParameterLayoutIsWeightsThenBiasPerLayer) {
  const CnnShape s;  // the issue's network
  EXPECT_EQ(s.flat(), 3136);
  EXPECT_EQ(s.pad(), 2);
  EXPECT_EQ(s.inputs(), 784);
  EXPECT_EQ(s.weight_offset(0), 0u);
  EXPECT_EQ(s.bias_offset(0), 32u * 25);
  EXPECT_EQ(s.weight_offset(1), 32u * 25 + 32);
  EXPECT_EQ(s.bias_offset(1), 32u * 25 + 32 + 64u * 32 * 25);
  EXPECT_EQ(s.weight_offset(2), 32u * 25 + 32 + 64u * 32 * 25 + 64);
  EXPECT_EQ(s.bias_offset(2), s.weight_offset(2) + 3136u * 1024);
  EXPECT_EQ(s.weight_offset(3), s.bias_offset(2) + 1024);
  EXPECT_EQ(s.bias_offset(3), s.weight_offset(3) + 1024u * 10);
  EXPECT_EQ(s.param_count(), s.bias_offset(3) + 10);
  EXPECT_EQ(s.param_count(), 32u * 25 + 32 + 64u * 32 * 25 + 64 + 3136u * 1024 + 1024 + 1024u * 10 + 10);
  EXPECT_EQ(s.param_count(), 3274634u);

  const Conv2dShape c1 = s.conv(0, 128), c2 = s.conv(1, 128);
  EXPECT_EQ(c1.batch, 128);
  EXPECT_EQ(c1.in_channels, 1);
  EXPECT_EQ(c1.out_channels, 32);
  EXPECT_EQ(c1.out_height(), 28);
  EXPECT_EQ(c1.out_width(), 28);
  EXPECT_EQ(c2.in_channels, 32);
  EXPECT_EQ(c2.height, 14);
  EXPECT_EQ(c2.width, 14);
  EXPECT_EQ(c2.out_channels, 64);
  EXPECT_EQ(c2.kernel, 5);
  EXPECT_EQ(c2.pad, 2);
  EXPECT_EQ(s.fan_in(0), 25);
  EXPECT_EQ(s.fan_in(1), 800);
  EXPECT_EQ(s.fan_in(2), 3136);
  EXPECT_EQ(s.fan_in(3), 1024);

  const CnnShape small = small_shape();  // 10×12 → 5×6 → 2×3
  EXPECT_EQ(small.conv(1, 1).height, 5);
  EXPECT_EQ(small.conv(1, 1).width, 6);
  EXPECT_EQ(small.flat(), 3 * 2 * 3);
  EXPECT_EQ(small.param_count(), (2u * 25 + 2) + (3u * 2 * 25 + 3) + (18u * 16 + 16) + (16u * 10 + 10));
}

// cuDNN takes at most 2^31 - 1 elements a tensor; the largest per image is conv1's output.
TEST(TwinCnn, CudnnBatchLimitIsTheLargestConvolutionTensorThatFits) {
  std::mt19937_64 rng(test::fresh_seed());
  CnnShape s;
  EXPECT_EQ(s.largest_conv_tensor(), 32u * 28 * 28);
  EXPECT_EQ(s.cudnn_batch_limit(), 85598);  // 2147483647 / 25088, rounded down
  for (int trial = 0; trial < 20; ++trial) {
    s.channels = {std::uniform_int_distribution<int>(1, 4096)(rng), std::uniform_int_distribution<int>(1, 4096)(rng)};
    SCOPED_TRACE("channels " + std::to_string(s.channels[0]) + "," + std::to_string(s.channels[1]));
    std::size_t largest = 0;
    for (int l = 0; l < 2; ++l) largest = std::max({largest, s.conv(l, 1).x_size(), s.conv(l, 1).y_size()});
    EXPECT_EQ(s.largest_conv_tensor(), largest);
    const std::size_t limit = static_cast<std::size_t>(s.cudnn_batch_limit());
    EXPECT_LE(limit * largest, 2147483647u);
    EXPECT_GT((limit + 1) * largest, 2147483647u);
  }
}

TEST(TwinCnn, RejectsBadShapesAndBatches) {
  CnnShape s = small_shape();
  s.kernel = 4;  // even: pad k/2 would grow the map
  EXPECT_THROW(s.validate(), std::invalid_argument);
  s = small_shape();
  s.height = 3;  // pools to nothing
  EXPECT_THROW(s.validate(), std::invalid_argument);
  s = small_shape();
  s.channels[1] = 0;
  EXPECT_THROW(CpuCnn(s, 1, 0.f, 0.f, 4), std::invalid_argument);

  CpuCnn model(small_shape(), 1, 0.f, 0.f, 4);
  const std::vector<float> x(5 * small_shape().inputs(), 0.5f);
  const std::vector<std::uint8_t> labels(5, 1);
  EXPECT_THROW(model.compute_gradients(x.data(), labels.data(), 5, 1, nullptr), std::invalid_argument);
  EXPECT_THROW(model.compute_gradients(x.data(), labels.data(), 0, 1, nullptr), std::invalid_argument);
}

TEST(TwinCnn, HeUniformInitHasTheRightBoundsAndVariance) {
  const std::uint64_t seed = test::fresh_seed();
  const CnnShape shape;
  const std::vector<float> params = he_uniform_init(shape, seed);
  ASSERT_EQ(params.size(), shape.param_count());
  for (int l = 0; l < CnnShape::kLayers; ++l) {
    SCOPED_TRACE(kLayerNames[l]);
    const double bound = std::sqrt(6.0 / shape.fan_in(l));
    const std::size_t n = shape.weight_size(l);
    double sum = 0, sum_sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double w = params[shape.weight_offset(l) + i];
      ASSERT_LE(std::fabs(w), bound);
      sum += w;
      sum_sq += w * w;
    }
    // U(-a, a): mean 0, variance a²/3 = 2/fan_in. Tolerances: 6 standard errors of the estimates
    // (the variance of w² for U(-a, a) is 0.8·(a²/3)²).
    const double variance = bound * bound / 3;
    EXPECT_NEAR(sum / n, 0.0, 6 * std::sqrt(variance / n));
    EXPECT_NEAR(sum_sq / n, variance, 6 * variance * std::sqrt(0.8 / n));
    for (std::size_t o = 0; o < shape.bias_size(l); ++o) ASSERT_EQ(params[shape.bias_offset(l) + o], 0.f);
    // Weight i of layer l is Philox stream kInitStream + l, element i (as the MLP draws it).
    const float bound_f = std::sqrt(6.f / static_cast<float>(shape.fan_in(l)));
    EXPECT_EQ(params[shape.weight_offset(l) + 7], (2.f * philox_uniform(seed, 0, kInitStream + l, 7) - 1.f) * bound_f);
  }
  EXPECT_EQ(he_uniform_init(shape, seed), params);
  EXPECT_NE(he_uniform_init(shape, seed + 1), params);
  EXPECT_EQ(CpuCnn(shape, seed, 0.5f, 0.f, 1).buffers().params, params);
}

// ---------------------------------------------------------------------------------------------
// The im2col convolution against twin::conv2d.
//
// Tolerance: |im2col - ref| ≤ 1e-5 · S per output, with S the sum of the absolute values of the
// output's terms (the twin run on |x|, |w|, |b|, |dy|), the bound test_conv2d.cu holds cuDNN to and
// explains: ref is within 2u·S of the exact value; the BLAS float sum of n products is within
// γ_n·S (4.8e-5 at n = 800) in the worst case and ~sqrt(n)·u·S with random signs; a missing,
// doubled or misplaced term moves an output by ~S/n, above 1e-5·S for the sizes here (n ≤ 4704).

std::vector<float> absolute(std::vector<float> v) {
  for (float& x : v) x = std::fabs(x);
  return v;
}

void expect_within(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& scale,
                   double tolerance, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  std::size_t bad = 0;
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::isfinite(got[i]) ? std::fabs(double(got[i]) - want[i]) : HUGE_VAL;
    const double ratio = err / std::max(double(scale[i]), 1e-30);
    worst = std::max(worst, ratio);
    if (!(err <= tolerance * scale[i])) ++bad;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " outside " << tolerance
                     << "·S, worst " << worst << "·S";
}

TEST(TwinCnn, Im2colConvolutionMatchesDirectLoops) {
  std::mt19937_64 rng(test::fresh_seed());
  struct Case {
    int batch, in_channels, height, width, out_channels, kernel, pad;
  };
  const Case cases[] = {
      {3, 1, 28, 28, 8, 5, 2},   // conv1's geometry
      {2, 32, 14, 14, 16, 5, 2},  // conv2's (n = 800 terms per output)
      {2, 3, 9, 11, 4, 5, 2},    // odd, not square
      {1, 2, 7, 6, 3, 3, 0},     // 'valid': the output shrinks
      {2, 3, 8, 8, 2, 4, 1},     // even kernel: the output grows by one
      {1, 1, 5, 5, 1, 5, 4},     // pad k-1: corners see one pixel
      {2, 4, 1, 6, 3, 3, 1},     // a single row
  };
  std::vector<float> scratch;  // shared across cases, as the model shares it across layers
  for (const Case& c : cases) {
    Conv2dShape s;
    s.batch = c.batch;
    s.in_channels = c.in_channels;
    s.height = c.height;
    s.width = c.width;
    s.out_channels = c.out_channels;
    s.kernel = c.kernel;
    s.pad = c.pad;
    const std::string name = std::to_string(c.batch) + "x" + std::to_string(c.in_channels) + "x" +
                             std::to_string(c.height) + "x" + std::to_string(c.width) + " -> " +
                             std::to_string(c.out_channels) + " k" + std::to_string(c.kernel) + " pad" +
                             std::to_string(c.pad);
    SCOPED_TRACE(name);
    const std::vector<float> x = test::random_floats(rng, s.x_size());
    const std::vector<float> w = test::random_floats(rng, s.w_size());
    const std::vector<float> b = test::random_floats(rng, std::size_t(s.out_channels));
    const std::vector<float> dy = test::random_floats(rng, s.y_size());

    std::vector<float> want = test::nan_filled(s.y_size()), got = test::nan_filled(s.y_size()),
                       scale = test::nan_filled(s.y_size());
    twin::conv2d_forward(x.data(), w.data(), b.data(), want.data(), s);
    im2col::conv2d_forward(x.data(), w.data(), b.data(), got.data(), s, scratch);
    twin::conv2d_forward(absolute(x).data(), absolute(w).data(), absolute(b).data(), scale.data(), s);
    expect_within(got, want, scale, 1e-5, "forward");
    im2col::conv2d_forward(x.data(), w.data(), nullptr, got.data(), s, scratch);
    twin::conv2d_forward(x.data(), w.data(), nullptr, want.data(), s);
    expect_within(got, want, scale, 1e-5, "forward without bias");

    want = test::nan_filled(s.x_size()), got = test::nan_filled(s.x_size()), scale = test::nan_filled(s.x_size());
    twin::conv2d_backward_data(dy.data(), w.data(), want.data(), s);
    im2col::conv2d_backward_data(dy.data(), w.data(), got.data(), s, scratch);
    twin::conv2d_backward_data(absolute(dy).data(), absolute(w).data(), scale.data(), s);
    expect_within(got, want, scale, 1e-5, "backward data");

    want = test::nan_filled(s.w_size()), got = test::nan_filled(s.w_size()), scale = test::nan_filled(s.w_size());
    twin::conv2d_backward_filter(x.data(), dy.data(), want.data(), s);
    im2col::conv2d_backward_filter(x.data(), dy.data(), got.data(), s, scratch);
    twin::conv2d_backward_filter(absolute(x).data(), absolute(dy).data(), scale.data(), s);
    expect_within(got, want, scale, 1e-5, "backward filter");
  }
}

// ---------------------------------------------------------------------------------------------
// The gradient of the whole network against finite differences.
//
// The reference is the network written from its definition in double, sharing nothing with
// CpuCnn but the Philox dropout mask. ReLU and max-pooling are piecewise linear: a perturbation
// of ±h that moves an activation across zero or changes a window's maximum makes the central
// difference wrong by up to half the jump in slope, and with ~10³ activations per parameter that
// happens in a noticeable fraction of runs. So the reference records its branch decisions (which
// ReLUs pass, which element of each window wins, first maximum first as the op has it) at the
// unperturbed parameters and replays them for the perturbed ones. With the branches frozen every
// logit is an affine function of any single parameter, the loss a smooth function of it, and the
// derivative is the true gradient wherever that exists (everywhere but a set of measure zero).

struct Branches {
  std::vector<char> relu;  // one flag per ReLU, in evaluation order
  std::vector<int> pool;   // the winning window element (0..3) per pooled output, in order
  bool record = true;
  std::size_t relu_at = 0, pool_at = 0;

  bool pass(double z) {
    if (record) relu.push_back(z > 0);
    return relu.at(relu_at++) != 0;
  }
  int winner(const double v[4]) {
    if (record) {
      int best = 0;
      for (int k = 1; k < 4; ++k)
        if (v[k] > v[best]) best = k;
      pool.push_back(best);
    }
    return pool.at(pool_at++);
  }
  void replay() {
    record = false;
    relu_at = pool_at = 0;
  }
};

// y[n, o, i, j] = b[o] + sum_{c,u,v} w[o, c, u, v] · x[n, c, i+u-pad, j+v-pad], 'same' size,
// followed by the ReLU.
std::vector<double> conv_relu(const std::vector<double>& x, int rows, int in_c, int h, int w, const double* weights,
                              const double* bias, int out_c, int k, Branches& branches) {
  const int pad = k / 2;
  std::vector<double> y(std::size_t(rows) * out_c * h * w);
  for (int n = 0; n < rows; ++n)
    for (int o = 0; o < out_c; ++o)
      for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j) {
          double sum = bias[o];
          for (int c = 0; c < in_c; ++c)
            for (int u = 0; u < k; ++u)
              for (int v = 0; v < k; ++v) {
                const int r = i + u - pad, q = j + v - pad;
                if (r < 0 || r >= h || q < 0 || q >= w) continue;
                sum += weights[((o * in_c + c) * k + u) * k + v] * x[((std::size_t(n) * in_c + c) * h + r) * w + q];
              }
          y[((std::size_t(n) * out_c + o) * h + i) * w + j] = branches.pass(sum) ? sum : 0.0;
        }
  return y;
}

std::vector<double> pool(const std::vector<double>& x, int maps, int h, int w, Branches& branches) {
  std::vector<double> y(std::size_t(maps) * (h / 2) * (w / 2));
  std::size_t out = 0;
  for (int m = 0; m < maps; ++m)
    for (int i = 0; i < h / 2; ++i)
      for (int j = 0; j < w / 2; ++j) {
        const double* top = x.data() + (std::size_t(m) * h + 2 * i) * w + 2 * j;
        const double v[4] = {top[0], top[1], top[w], top[w + 1]};
        y[out++] = v[branches.winner(v)];
      }
  return y;
}

double reference_loss(const CnnShape& s, const std::vector<double>& params, const std::vector<float>& x,
                      const std::vector<std::uint8_t>& labels, int rows, std::uint64_t seed, float p,
                      float smoothing, std::int64_t step, Branches& branches) {
  const auto w = [&](int l) { return params.data() + s.weight_offset(l); };
  const auto b = [&](int l) { return params.data() + s.bias_offset(l); };
  const int c1 = s.channels[0], c2 = s.channels[1];
  std::vector<double> a(x.begin(), x.end());
  a = conv_relu(a, rows, s.in_channels, s.height, s.width, w(0), b(0), c1, s.kernel, branches);
  a = pool(a, rows * c1, s.height, s.width, branches);
  const int h2 = s.height / 2, w2 = s.width / 2;
  a = conv_relu(a, rows, c1, h2, w2, w(1), b(1), c2, s.kernel, branches);
  a = pool(a, rows * c2, h2, w2, branches);
  const int flat = c2 * (h2 / 2) * (w2 / 2);

  std::vector<double> hidden(std::size_t(rows) * s.hidden);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < s.hidden; ++o) {
      double sum = b(2)[o];
      for (int i = 0; i < flat; ++i) sum += a[std::size_t(r) * flat + i] * w(2)[std::size_t(i) * s.hidden + o];
      const std::size_t index = std::size_t(r) * s.hidden + o;
      const bool keep = dropout_keep(seed, step, CnnShape::kDropoutLayer, index, dropout_threshold(p));
      const bool pass = branches.pass(sum);
      hidden[index] = keep && pass ? sum / (1.0 - p) : 0.0;
    }

  double total = 0;
  const int classes = s.classes;
  for (int r = 0; r < rows; ++r) {
    std::vector<double> logits(classes);
    for (int o = 0; o < classes; ++o) {
      double sum = b(3)[o];
      for (int i = 0; i < s.hidden; ++i)
        sum += hidden[std::size_t(r) * s.hidden + i] * w(3)[std::size_t(i) * classes + o];
      logits[o] = sum;
    }
    const double max = *std::max_element(logits.begin(), logits.end());
    double sum_exp = 0, target_dot = 0;
    for (int c = 0; c < classes; ++c) {
      sum_exp += std::exp(logits[c] - max);
      const double target = (c == labels[r] ? 1.0 - smoothing : 0.0) + smoothing / classes;
      target_dot += target * logits[c];
    }
    total += std::log(sum_exp) + max - target_dot;
  }
  return total / rows;
}

// Checks d(mean loss)/dθ of CpuCnn for every parameter of `shape` (every `stride`-th one of
// dense1's weights, the big tensor) against central differences of the reference.
void check_gradient(const CnnShape& shape, int rows, std::size_t dense1_stride) {
  std::mt19937_64 rng(test::fresh_seed());
  const float p = 0.5f;  // the issue's dropout; 1/(1-p) = 2 is exact in float
  const float smoothing = 0.1f;
  const std::uint64_t seed = rng();
  const std::int64_t step = 1 + rng() % 1000;
  CpuCnn model(shape, seed, p, smoothing, rows);
  const std::vector<float> x = test::random_floats(rng, std::size_t(rows) * shape.inputs(), -1.f, 1.f);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, rows, shape.classes);

  // Nonzero biases (they start at zero), so that a bias applied to the wrong channel or unit shows.
  std::uniform_real_distribution<float> bias(-0.2f, 0.2f);
  for (int l = 0; l < CnnShape::kLayers; ++l)
    for (std::size_t i = 0; i < shape.bias_size(l); ++i) model.buffers().params[shape.bias_offset(l) + i] = bias(rng);

  EvalTotals totals;
  model.compute_gradients(x.data(), labels.data(), rows, step, &totals);
  std::vector<double> params(model.buffers().params.begin(), model.buffers().params.end());
  Branches branches;
  const double loss = reference_loss(shape, params, x, labels, rows, seed, p, smoothing, step, branches);
  branches.replay();
  // Float forward against double forward: float rounding of sums of up to ~10² terms.
  EXPECT_NEAR(totals.loss_sum / rows, loss, 1e-5 * std::max(1.0, loss));
  std::size_t dropped = 0;
  for (std::size_t i = 0; i < std::size_t(rows) * shape.hidden; ++i)
    dropped += !dropout_keep(seed, step, CnnShape::kDropoutLayer, i, dropout_threshold(p));
  ::testing::Test::RecordProperty("dense1_dropped", std::to_string(dropped));

  // Central differences of the frozen-branch loss in double: with h = 1e-5 the truncation error
  // (h²/6 times a third derivative of the softmax, O(1)) is ~1e-11 and the rounding (1e-16/h) ~1e-11,
  // both far below the float error of the analytic gradient.
  // Tolerance: |analytic - numeric| ≤ 1e-3·|numeric| + 1e-5·G, G the largest |numeric| of the same
  // tensor. The analytic gradient is a float computation: each entry is within a few float ulps of
  // the sum of the absolute values of its terms, itself at most ~10²·G here; a wrong index, mask or
  // layout changes entries by O(G).
  const double h = 1e-5;
  double worst = 0;  // the largest error as a fraction of its tolerance
  for (int l = 0; l < CnnShape::kLayers; ++l) {
    for (int part = 0; part < 2; ++part) {
      const std::size_t begin = part == 0 ? shape.weight_offset(l) : shape.bias_offset(l);
      const std::size_t end = part == 0 ? shape.bias_offset(l) : shape.bias_offset(l) + shape.bias_size(l);
      const std::size_t stride = l == 2 && part == 0 ? dense1_stride : 1;
      std::vector<std::size_t> checked;
      std::vector<double> numeric;
      for (std::size_t i = begin; i < end; i += stride) {
        const double saved = params[i];
        params[i] = saved + h;
        const double up = reference_loss(shape, params, x, labels, rows, seed, p, smoothing, step, branches);
        branches.replay();
        params[i] = saved - h;
        const double down = reference_loss(shape, params, x, labels, rows, seed, p, smoothing, step, branches);
        branches.replay();
        params[i] = saved;
        checked.push_back(i);
        numeric.push_back((up - down) / (2 * h));
      }
      double scale = 0;
      for (double g : numeric) scale = std::max(scale, std::fabs(g));
      const std::string tensor = std::string(kLayerNames[l]) + (part == 0 ? " weights" : " biases");
      EXPECT_GT(scale, 0.0) << tensor << ": no gradient reaches the tensor";
      int bad = 0;
      for (std::size_t k = 0; k < checked.size(); ++k) {
        const double analytic = model.buffers().grads[checked[k]];
        const double tolerance = 1e-3 * std::fabs(numeric[k]) + 1e-5 * scale;
        worst = std::max(worst, std::fabs(analytic - numeric[k]) / tolerance);
        if (!(std::fabs(analytic - numeric[k]) <= tolerance) && ++bad <= 5)
          ADD_FAILURE() << tensor << " parameter " << checked[k] - begin << ": analytic " << analytic
                        << ", numeric " << numeric[k] << " (tensor scale " << scale << ")";
      }
      EXPECT_EQ(bad, 0) << tensor << ": " << bad << " of " << checked.size() << " outside the tolerance";
    }
  }
  ::testing::Test::RecordProperty("worst_error_over_tolerance", std::to_string(worst));
}

// Sizes: 16 hidden units × 3 images, each unit passed by dropout (1/2) and ReLU (~1/2), leave all
// 48 dead with probability (3/4)^48 ≈ 1e-6; with 8 units and 2 images it was 1%, and then no
// gradient reaches anything but dense2's bias.
TEST(TwinCnn, GradientMatchesFiniteDifferences) {
  check_gradient(small_shape(), 3, 1);  // every parameter
}

TEST(TwinCnn, GradientMatchesFiniteDifferencesAt28x28) {
  CnnShape shape;  // the issue's geometry, narrow: 2 and 3 channels, 16 hidden units
  shape.channels = {2, 3};
  shape.hidden = 16;
  check_gradient(shape, 3, 7);  // every 7th of dense1's 2352 weights, all other parameters
}

// ---------------------------------------------------------------------------------------------
// Training and evaluation on the CPU.

TEST(TwinCnn, AdamStepsLowerTheLossOfAFixedBatch) {
  std::mt19937_64 rng(test::fresh_seed());
  CnnShape shape;
  shape.height = shape.width = 12;
  shape.channels = {4, 8};
  shape.hidden = 32;
  const int rows = 16;
  CpuCnn model(shape, rng(), 0.f, 0.f, rows);
  const std::vector<float> x = test::random_floats(rng, std::size_t(rows) * shape.inputs(), 0.f, 1.f);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, rows);
  AdamConfig adam;
  adam.lr = 1e-2f;
  double first = 0, last = 0;
  for (int step = 1; step <= 30; ++step) {
    EvalTotals totals;
    model.compute_gradients(x.data(), labels.data(), rows, step, &totals);
    adam_update(adam, model.buffers(), step);
    (step == 1 ? first : last) = totals.loss_sum / rows;
  }
  // 16 random labels are memorised within 30 steps at lr 1e-2.
  EXPECT_LT(last, 0.5 * first) << "30 Adam steps on one batch should at least halve its loss";
}

TEST(TwinCnn, EvaluationIsTheTrainingForwardPassWithoutDropout) {
  std::mt19937_64 rng(test::fresh_seed());
  const CnnShape shape = small_shape();
  const int rows = 6;
  const std::uint64_t seed = rng();
  const std::vector<float> x = test::random_floats(rng, std::size_t(rows) * shape.inputs(), 0.f, 1.f);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, rows);

  CpuCnn plain(shape, seed, 0.f, 0.1f, rows);     // no dropout
  CpuCnn dropout(shape, seed, 0.5f, 0.1f, rows);  // same weights
  EvalTotals trained, evaluated, evaluated_dropout;
  plain.compute_gradients(x.data(), labels.data(), rows, 5, &trained);
  const std::vector<float> logits(plain.logits(), plain.logits() + rows * shape.classes);
  std::vector<std::int32_t> predictions(rows, -1);
  plain.evaluate_batch(x.data(), labels.data(), rows, &evaluated, predictions.data());
  dropout.evaluate_batch(x.data(), labels.data(), rows, &evaluated_dropout);
  EXPECT_EQ(std::vector<float>(plain.logits(), plain.logits() + rows * shape.classes), logits);
  EXPECT_EQ(std::vector<float>(dropout.logits(), dropout.logits() + rows * shape.classes), logits);
  EXPECT_EQ(evaluated.loss_sum, trained.loss_sum);
  EXPECT_EQ(evaluated_dropout.loss_sum, trained.loss_sum);
  EXPECT_EQ(evaluated.correct, trained.correct);
  EXPECT_EQ(evaluated.count, static_cast<unsigned long long>(rows));
  for (int r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * shape.classes;
    EXPECT_EQ(predictions[r], std::max_element(row, row + shape.classes) - row);
  }
  // Training with dropout does change the logits.
  dropout.compute_gradients(x.data(), labels.data(), rows, 5, nullptr);
  EXPECT_NE(std::vector<float>(dropout.logits(), dropout.logits() + rows * shape.classes), logits);
}

// ---------------------------------------------------------------------------------------------
// GPU against CPU.

// Values of `got` farther from `want` than rel·max|want| over the same tensor (the weights or
// the biases of one layer: the floor is the tensor's largest magnitude). NaN or inf counts as an
// outlier at infinite distance.
struct Disagreement {
  std::size_t outliers = 0;
  double worst_abs = 0;     // max |got - want|
  double worst_scaled = 0;  // max |got - want| / max|want| of the tensor
  std::string where;        // the tensor of worst_scaled
};
Disagreement compare_tensors(const CnnShape& shape, const std::vector<float>& got, const std::vector<float>& want,
                             double rel) {
  Disagreement d;
  if (got.size() != want.size() || got.size() != shape.param_count()) {
    d.outliers = std::numeric_limits<std::size_t>::max();
    d.worst_abs = d.worst_scaled = std::numeric_limits<double>::infinity();
    return d;
  }
  const auto tensor = [&](std::size_t begin, std::size_t end, const std::string& name) {
    double scale = 0;
    for (std::size_t i = begin; i < end; ++i) scale = std::max(scale, double(std::fabs(want[i])));
    for (std::size_t i = begin; i < end; ++i) {
      const double diff = std::isfinite(got[i]) ? std::fabs(double(got[i]) - want[i])
                                                : std::numeric_limits<double>::infinity();
      d.worst_abs = std::max(d.worst_abs, diff);
      const double scaled = scale > 0 ? diff / scale : (diff > 0 ? HUGE_VAL : 0.0);
      if (scaled > d.worst_scaled) {
        d.worst_scaled = scaled;
        d.where = name;
      }
      if (!(diff <= rel * scale)) ++d.outliers;
    }
  };
  for (int l = 0; l < CnnShape::kLayers; ++l) {
    tensor(shape.weight_offset(l), shape.bias_offset(l), std::string(kLayerNames[l]) + " weights");
    tensor(shape.bias_offset(l), shape.bias_offset(l) + shape.bias_size(l), std::string(kLayerNames[l]) + " biases");
  }
  return d;
}

// A batch as the gather kernel makes it: pixels k/255.
std::vector<float> pixel_batch(std::mt19937_64& rng, int rows, const CnnShape& shape) {
  std::uniform_int_distribution<int> pixel(0, 255);
  std::vector<float> x(std::size_t(rows) * shape.inputs());
  for (float& v : x) v = static_cast<float>(pixel(rng)) / 255.f;
  return x;
}

EvalTotals download_totals(const DeviceBuffer<EvalTotals>& totals) { return totals.download().at(0); }

// Entries that are zero in one of `a`, `b` and not in the other.
std::size_t zero_pattern_differences(const float* a, const float* b, std::size_t n) {
  std::size_t differences = 0;
  for (std::size_t i = 0; i < n; ++i) differences += (a[i] == 0.f) != (b[i] == 0.f);
  return differences;
}

// One training step (gradients, then Adam at step 1) on the GPU and the CPU from the same seed,
// batch and dropout mask. Returns false, after checking only the forward pass, when the two
// devices routed the gradient differently; true after checking everything.
//
// ReLU and max-pooling make discrete decisions: a conv output within rounding of 0, or two window
// elements within rounding of each other, can go one way on the GPU and the other on the CPU.
// Both answers are right (the loss is continuous there), but the gradient then reaches another
// pixel, which moves a whole filter's gradient by one term: ~1e-3 of the tensor's scale, far
// outside 1e-4. Simulated on the CPU (this network at batch 64, the im2col model against the same
// model on twin::conv2d's direct loops), 8 of 120 steps had such a split decision. The decisions
// are visible as the zeros of the backward deltas (conv_delta, hidden_delta), so a step whose
// zeros differ is not compared further and the caller draws another batch.
bool one_step_agrees(const CnnShape& shape, int rows, int max_train_batch, std::mt19937_64& rng) {
  const std::uint64_t seed = rng();
  const float dropout = 0.5f, smoothing = 0.1f;
  const std::vector<float> x = pixel_batch(rng, rows, shape);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, rows);
  AdamConfig adam;  // lr 1e-3

  CpuCnn cpu(shape, seed, dropout, smoothing, rows);
  EvalTotals cpu_totals;
  cpu.compute_gradients(x.data(), labels.data(), rows, 1, &cpu_totals);
  const std::vector<float> cpu_logits(cpu.logits(), cpu.logits() + std::size_t(rows) * shape.classes);
  adam_update(adam, cpu.buffers(), 1);

  Stream stream;
  GpuCnn gpu(shape, seed, dropout, smoothing, rows, max_train_batch, stream.get());
  ::testing::Test::RecordProperty("conv_plans", gpu.describe(rows));
  SCOPED_TRACE("cuDNN's algorithms: " + gpu.describe(rows));  // in every failure message
  EXPECT_TRUE(gpu.download_params() == he_uniform_init(shape, seed)) << "the same He-uniform draw, uploaded as it is";
  const DeviceBuffer<float> d_x(x);
  const DeviceBuffer<std::uint8_t> d_labels(labels);
  DeviceBuffer<EvalTotals> d_totals(1);
  d_totals.fill_bytes(0);
  gpu.compute_gradients(d_x.data(), d_labels.data(), rows, d_totals.data());
  const std::vector<float> gpu_logits = gpu.download_logits(rows);
  const std::vector<float> gpu_grads = gpu.download_grads();
  adam_update(adam, gpu.buffers(), gpu.step(), gpu.stream());
  EXPECT_EQ(gpu.download_step(), 1);

  // The forward pass is continuous in the decisions: always compared. Loss and metrics as in
  // test_gpu_trainer.cu; logits within 1e-4 of the largest magnitude of their row (fp32 sums in
  // other orders, ~1e-6 apart in practice; a wrong weight, mask or layout moves them by O(1)).
  test::expect_totals_close(download_totals(d_totals), cpu_totals);
  for (int r = 0; r < rows; ++r) {
    const float* want = cpu_logits.data() + std::size_t(r) * shape.classes;
    double scale = 0;
    for (int c = 0; c < shape.classes; ++c) scale = std::max(scale, double(std::fabs(want[c])));
    EXPECT_LE(test::max_rel_error(gpu_logits.data() + std::size_t(r) * shape.classes, want, shape.classes, scale),
              1e-4)
        << "logits of row " << r;
  }

  std::size_t split = 0;
  for (int l = 0; l < 2; ++l)
    split += zero_pattern_differences(gpu.download_conv_delta(l, rows).data(), cpu.conv_delta(l),
                                      shape.conv(l, rows).y_size());
  split += zero_pattern_differences(gpu.download_hidden_delta(rows).data(), cpu.hidden_delta(),
                                    std::size_t(rows) * shape.hidden);
  if (split > 0) {
    ::testing::Test::RecordProperty("split_decisions", std::to_string(split));
    return false;
  }

  // Gradients: within 1e-4 of the largest magnitude of their tensor (the weights or the biases of
  // one layer), the same sums in other orders (cuDNN and cuBLAS against OpenBLAS image by image).
  const Disagreement grads = compare_tensors(shape, gpu_grads, cpu.buffers().grads, 1e-4);
  EXPECT_EQ(grads.outliers, 0u) << "gradients outside 1e-4 of their tensor's scale; worst " << grads.worst_scaled
                                << " in " << grads.where;
  ::testing::Test::RecordProperty("grad_worst_scaled", std::to_string(grads.worst_scaled));

  // Adam on the device: the CPU formula applied to the device's own gradients (test_adam.cu's
  // tolerances: 1e-6 relative, θ with an absolute floor of 1e-2).
  std::vector<float> want_params = he_uniform_init(shape, seed);
  std::vector<float> want_m(want_params.size(), 0.f), want_v(want_params.size(), 0.f);
  twin::adam_step(want_params.data(), gpu_grads.data(), want_m.data(), want_v.data(), want_params.size(), adam, 1);
  const std::vector<float> gpu_params = gpu.download_params();
  const std::vector<float> gpu_m = gpu.download_adam_m(), gpu_v = gpu.download_adam_v();
  EXPECT_LE(test::max_rel_error(gpu_params, want_params, 1e-2), 1e-6);
  EXPECT_LE(test::max_rel_error(gpu_m, want_m, 1e-30), 1e-6);
  EXPECT_LE(test::max_rel_error(gpu_v, want_v, 1e-30), 1e-6);

  // Against the CPU's step: m = 0.1·g and v = 0.001·g², within the gradients' 1e-4.
  const Disagreement m = compare_tensors(shape, gpu_m, cpu.buffers().adam_m, 1e-4);
  const Disagreement v = compare_tensors(shape, gpu_v, cpu.buffers().adam_v, 1e-4);
  EXPECT_EQ(m.outliers, 0u) << "worst " << m.worst_scaled << " in " << m.where;
  EXPECT_EQ(v.outliers, 0u) << "worst " << v.worst_scaled << " in " << v.where;
  // The parameters: the first Adam step moves θ by lr·u(g), u(g) = g/(|g| + ε) (m̂ = g, v̂ = g²),
  // ≈ lr·sign(g), so where a gradient is within a few of its rounding errors of zero the devices'
  // steps differ by a visible fraction of lr (2·lr at opposite signs): Adam amplifies rounding
  // (test_gpu_trainer.cu). In the simulation above, steps routed alike had 5 to 254 of the
  // 3,274,634 parameters outside 1e-4 of their tensor's scale, by up to 0.52·lr. So each parameter
  // may differ by 1e-4 of its tensor's scale plus the part of the step that the two gradients
  // explain, lr·|u(g_gpu) - u(g_cpu)|; in the simulation nothing was left over (40 steps), while a
  // wrong step count, moment or formula leaves ~lr on most parameters.
  std::size_t outliers = 0;
  double worst_abs = 0;
  for (int l = 0; l < CnnShape::kLayers; ++l)
    for (int part = 0; part < 2; ++part) {
      const std::size_t begin = part == 0 ? shape.weight_offset(l) : shape.bias_offset(l);
      const std::size_t end = part == 0 ? shape.bias_offset(l) : shape.bias_offset(l) + shape.bias_size(l);
      double scale = 0;
      for (std::size_t i = begin; i < end; ++i) scale = std::max(scale, double(std::fabs(cpu.buffers().params[i])));
      for (std::size_t i = begin; i < end; ++i) {
        const auto u = [&](double g) { return g / (std::fabs(g) + adam.eps); };
        const double explained = adam.lr * std::fabs(u(gpu_grads[i]) - u(cpu.buffers().grads[i]));
        const double diff = std::fabs(double(gpu_params[i]) - cpu.buffers().params[i]);
        worst_abs = std::max(worst_abs, diff);
        if (!(diff <= 1e-4 * scale + 1.01 * explained)) ++outliers;
      }
    }
  EXPECT_EQ(outliers, 0u) << "parameters that differ by more than the gradients explain";
  EXPECT_LE(worst_abs, 2.0 * adam.lr * (1 + 1e-3));
  return true;
}

// Up to kAttempts batches, until one is routed alike on both devices (see one_step_agrees). At the
// simulated 8 in 120 the odds of 6 split batches in a row are ~1e-7 (~7e-5 if the devices split
// three times as often); a bug that splits decisions systematically (a wrong ReLU, pooling or
// mask) fails every attempt.
void compare_one_step(const CnnShape& shape, int rows, int max_train_batch) {
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kAttempts = 6;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    if (one_step_agrees(shape, rows, max_train_batch, rng)) {
      ::testing::Test::RecordProperty("attempts", std::to_string(attempt));
      return;
    }
  }
  ADD_FAILURE() << "the GPU and the CPU routed the gradient differently (a ReLU or max-pool decision) in all "
                << kAttempts << " batches";
}

TEST(GpuCnn, OneTrainingStepMatchesTheCpu) {
  MNIST_REQUIRE_GPU();
  compare_one_step(CnnShape{}, 64, 64);
}

TEST(GpuCnn, OneTrainingStepMatchesTheCpuOnAPartialBatchAndOddShape) {
  MNIST_REQUIRE_GPU();
  compare_one_step(CnnShape{}, 37, 64);    // plans built on first use for 37 rows
  compare_one_step(small_shape(), 5, 8);  // 10×12 → 5×6 → 2×3
}

TEST(GpuCnn, EvaluationMatchesTheCpu) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const CnnShape shape;
  const std::uint64_t seed = rng();
  const int train_rows = 32, eval_rows = 300;
  CpuCnn cpu(shape, seed, 0.5f, 0.f, eval_rows);
  AdamConfig adam;
  for (int step = 1; step <= 2; ++step) {  // parameters away from the initialisation
    const std::vector<float> x = pixel_batch(rng, train_rows, shape);
    const std::vector<std::uint8_t> labels = test::random_labels(rng, train_rows);
    cpu.compute_gradients(x.data(), labels.data(), train_rows, step, nullptr);
    adam_update(adam, cpu.buffers(), step);
  }
  Stream stream;
  GpuCnn gpu(shape, seed + 1, 0.5f, 0.f, eval_rows, train_rows, stream.get());  // another init, overwritten
  gpu.upload_state(cpu.buffers().params, cpu.buffers().adam_m, cpu.buffers().adam_v, 2);
  EXPECT_TRUE(gpu.download_params() == cpu.buffers().params);
  EXPECT_EQ(gpu.download_step(), 2);

  const std::vector<float> x = pixel_batch(rng, eval_rows, shape);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, eval_rows);
  EvalTotals cpu_totals;
  std::vector<std::int32_t> cpu_predictions(eval_rows, -1);
  cpu.evaluate_batch(x.data(), labels.data(), eval_rows, &cpu_totals, cpu_predictions.data());
  const std::vector<float> cpu_logits(cpu.logits(), cpu.logits() + std::size_t(eval_rows) * shape.classes);

  const DeviceBuffer<float> d_x(x);
  const DeviceBuffer<std::uint8_t> d_labels(labels);
  DeviceBuffer<EvalTotals> d_totals(1);
  d_totals.fill_bytes(0);
  DeviceBuffer<std::int32_t> d_predictions(eval_rows);
  gpu.evaluate_batch(d_x.data(), d_labels.data(), eval_rows, d_totals.data(), d_predictions.data());
  const std::vector<float> gpu_logits = gpu.download_logits(eval_rows);
  test::expect_totals_close(download_totals(d_totals), cpu_totals);
  test::expect_predictions_close(d_predictions.download(), cpu_predictions);
  double worst = 0;
  for (int r = 0; r < eval_rows; ++r) {
    const float* want = cpu_logits.data() + std::size_t(r) * shape.classes;
    double scale = 0;
    for (int c = 0; c < shape.classes; ++c) scale = std::max(scale, double(std::fabs(want[c])));
    worst = std::max(worst, test::max_rel_error(gpu_logits.data() + std::size_t(r) * shape.classes, want,
                                                shape.classes, scale));
  }
  EXPECT_LE(worst, 1e-4) << "logits, relative to the largest of their row";
  ::testing::Test::RecordProperty("logits_worst_scaled", std::to_string(worst));
  // The 300-image plans only evaluate: cuDNN was asked for no backward algorithm there.
  EXPECT_NE(gpu.describe(eval_rows).find("forward-only"), std::string::npos) << gpu.describe(eval_rows);
  EXPECT_EQ(gpu.describe(train_rows).find("forward-only"), std::string::npos) << gpu.describe(train_rows);
}

TEST(GpuCnn, RunsAreBitIdenticalForTheSameSeed) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const CnnShape shape;
  const std::uint64_t seed = rng();
  const int rows = 48;
  std::vector<std::vector<float>> xs;
  std::vector<std::vector<std::uint8_t>> ys;
  for (int s = 0; s < 3; ++s) {
    xs.push_back(pixel_batch(rng, rows, shape));
    ys.push_back(test::random_labels(rng, rows));
  }
  xs.back().resize(std::size_t(rows - 11) * shape.inputs());  // the last batch is partial
  ys.back().resize(std::size_t(rows - 11));

  struct Run {
    std::vector<float> params, m, v, logits;
    EvalTotals totals;
  };
  const auto run = [&](std::uint64_t s) {
    Stream stream;
    GpuCnn gpu(shape, s, 0.5f, 0.1f, rows, rows, stream.get());
    DeviceBuffer<EvalTotals> totals(1);
    totals.fill_bytes(0);
    AdamConfig adam;
    for (std::size_t b = 0; b < xs.size(); ++b) {
      const DeviceBuffer<float> x(xs[b]);
      const DeviceBuffer<std::uint8_t> y(ys[b]);
      gpu.compute_gradients(x.data(), y.data(), static_cast<int>(ys[b].size()), totals.data());
      adam_update(adam, gpu.buffers(), gpu.step(), gpu.stream());
      stream.synchronize();  // before x and y are freed
    }
    EXPECT_EQ(gpu.download_step(), 3);
    const DeviceBuffer<float> x(xs[0]);
    const DeviceBuffer<std::uint8_t> y(ys[0]);
    gpu.evaluate_batch(x.data(), y.data(), rows, totals.data());
    return Run{gpu.download_params(), gpu.download_adam_m(), gpu.download_adam_v(), gpu.download_logits(rows),
               download_totals(totals)};
  };
  const Run first = run(seed), again = run(seed);
  EXPECT_TRUE(again.params == first.params) << "parameters differ";
  EXPECT_TRUE(again.m == first.m) << "Adam first moments differ";
  EXPECT_TRUE(again.v == first.v) << "Adam second moments differ";
  EXPECT_TRUE(again.logits == first.logits) << "evaluation logits differ";
  EXPECT_EQ(again.totals.loss_sum, first.totals.loss_sum);
  EXPECT_EQ(again.totals.correct, first.totals.correct);
  const Run other = run(seed + 1);  // another initialisation and other masks
  EXPECT_FALSE(other.params == first.params);
}

}  // namespace
}  // namespace mnist
