// Augmented batch gather (kernels/augment.{cu,cpp}):
//   x[i, (u, v)] = bilinear(image / 255, c + R(-θ)·((u, v) - c - t) / s + α·G_σ∗n(u, v))
// The twin is checked against the formula computed independently in double (1e-5: float
// coordinates), the identity and whole-pixel shifts exactly; the kernel against the twin within
// 1e-5 absolute (pixels are in [0, 1]; the GPU may contract a·b + c into one rounding).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/augment.h"
#include "mnist/ops/gather.h"
#include "test_util.h"

namespace mnist {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kTolerance = 1e-5;

std::vector<std::uint8_t> random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::uniform_int_distribution<int> dist(0, 255);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(dist(rng));
  return out;
}

std::vector<std::int32_t> random_indices(std::mt19937_64& rng, int images, int count) {
  std::uniform_int_distribution<std::int32_t> dist(0, images - 1);
  std::vector<std::int32_t> out(count);
  for (auto& i : out) i = dist(rng);
  return out;
}

// The largest |got - want|; a NaN counts as infinitely wrong.
double worst_error(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double error = std::fabs(double(got[i]) - want[i]);
    worst = std::isnan(error) ? INFINITY : std::max(worst, error);
  }
  return worst;
}

float uniform(std::mt19937_64& rng, float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); }

// The options' ranges, drawn at random; elastic or not.
AugmentParams random_params(std::mt19937_64& rng, bool elastic) {
  return make_augment_params(rng(), uniform(rng, 0.f, 4.f), uniform(rng, 0.f, 30.f), uniform(rng, 0.f, 0.3f),
                             elastic, uniform(rng, 0.f, 40.f), uniform(rng, 0.5f, 8.f));
}

// The formula, written out again in double: the source point of output pixel (u, v) and a plain
// bilinear read of it, zero outside.
double expected_pixel(const std::vector<std::uint8_t>& image, double dx, double dy, double angle, double scale, int u,
                      int v, double ex, double ey) {
  const double c = 13.5, px = u - c - dx, py = v - c - dy;
  const double sx = c + (std::cos(angle) * px + std::sin(angle) * py) / scale + ex;
  const double sy = c + (std::cos(angle) * py - std::sin(angle) * px) / scale + ey;
  const auto at = [&](double x, double y) {
    return x < 0 || x > 27 || y < 0 || y > 27 ? 0.0 : image[std::size_t(y) * 28 + std::size_t(x)] / 255.0;
  };
  const double x0 = std::floor(sx), y0 = std::floor(sy), fx = sx - x0, fy = sy - y0;
  return (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) + fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
}

// ---- CPU twin -------------------------------------------------------------------------------

// No shift, rotation, scale or displacement: the plain gather's batch, bit for bit.
TEST(TwinAugment, IdentityGivesThePlainGatherExactly) {
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kImages = 50, kCount = 37;
  const std::vector<std::uint8_t> images = random_bytes(rng, kImages * kPixels);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, kImages);
  const std::vector<std::int32_t> indices = random_indices(rng, kImages, kCount);
  std::vector<float> want(kCount * kPixels);
  std::vector<std::uint8_t> want_y(kCount);
  twin::gather_batch(images.data(), labels.data(), indices.data(), kCount, kPixels, want.data(), want_y.data());
  for (const bool elastic : {false, true}) {
    const AugmentParams identity = make_augment_params(rng(), 0.f, 0.f, 0.f, elastic, 0.f, 4.f);
    std::vector<float> x = test::nan_filled(kCount * kPixels);
    std::vector<std::uint8_t> y(kCount, 0xFF);
    std::int64_t step = 41;
    twin::gather_augmented_batch(images.data(), labels.data(), indices.data(), kCount, identity, x.data(), y.data(),
                                &step);
    EXPECT_EQ(step, 42);
    EXPECT_EQ(y, want_y);
    EXPECT_EQ(0, std::memcmp(x.data(), want.data(), x.size() * sizeof(float))) << "elastic " << elastic;
  }
}

// A shift by whole pixels moves every pixel exactly: out(u, v) = in(u - dx, v - dy), 0 where that
// falls outside.
TEST(TwinAugment, WholePixelShiftMovesPixelsExactly) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<std::uint8_t> image = random_bytes(rng, kPixels);
  std::uniform_int_distribution<int> shift(-6, 6);
  for (int trial = 0; trial < 20; ++trial) {
    const int dx = shift(rng), dy = shift(rng);
    std::vector<float> out = test::nan_filled(kPixels);
    twin::warp_image(image.data(), make_warp(float(dx), float(dy), 0.f, 1.f), nullptr, nullptr, out.data());
    for (int v = 0; v < 28; ++v)
      for (int u = 0; u < 28; ++u) {
        const int su = u - dx, sv = v - dy;
        const float want = su < 0 || su > 27 || sv < 0 || sv > 27 ? 0.f : image[sv * 28 + su] / 255.0f;
        ASSERT_EQ(out[v * 28 + u], want) << "shift (" << dx << ", " << dy << ") at (" << u << ", " << v << ")";
      }
  }
}

// A half turn about the centre mirrors both axes (within the rounding of sin(π) in float).
TEST(TwinAugment, HalfTurnMirrorsTheImage) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<std::uint8_t> image = random_bytes(rng, kPixels);
  std::vector<float> out = test::nan_filled(kPixels);
  twin::warp_image(image.data(), make_warp(0.f, 0.f, float(kPi), 1.f), nullptr, nullptr, out.data());
  for (int k = 0; k < kPixels; ++k) ASSERT_NEAR(out[k], image[kPixels - 1 - k] / 255.0, kTolerance) << "pixel " << k;
}

// Random warps and displacement planes against the formula in double.
TEST(TwinAugment, WarpMatchesTheFormula) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int trial = 0; trial < 50; ++trial) {
    const std::vector<std::uint8_t> image = random_bytes(rng, kPixels);
    const float dx = uniform(rng, -5, 5), dy = uniform(rng, -5, 5), angle = uniform(rng, -3.1f, 3.1f),
                scale = uniform(rng, 0.5f, 1.5f);
    const bool displaced = trial % 2 == 1;
    const std::vector<float> ex = test::random_floats(rng, kPixels, -3, 3), ey = test::random_floats(rng, kPixels, -3, 3);
    std::vector<float> out = test::nan_filled(kPixels);
    const ImageWarp warp = make_warp(dx, dy, angle, scale);
    twin::warp_image(image.data(), warp, displaced ? ex.data() : nullptr, displaced ? ey.data() : nullptr, out.data());
    for (int k = 0; k < kPixels; ++k) {
      const double want = expected_pixel(image, dx, dy, angle, scale, k % 28, k / 28, displaced ? ex[k] : 0.0,
                                         displaced ? ey[k] : 0.0);
      ASSERT_NEAR(out[k], want, kTolerance) << "trial " << trial << " pixel " << k;
    }
  }
}

// The per-image draws fill their ranges and stay inside them.
TEST(TwinAugment, DrawsStayInTheirRanges) {
  std::mt19937_64 rng(test::fresh_seed());
  const AugmentParams p = make_augment_params(rng(), 2.5f, 15.f, 0.2f, false, 0.f, 4.f);
  double max_dx = 0, max_angle = 0, min_scale = 2, max_scale = 0;
  const std::uint64_t step = rng() >> 20;
  for (std::uint64_t row = 0; row < 2000; ++row) {
    const ImageWarp w = draw_warp(p, step, row);
    const double angle = std::atan2(w.sin_a, w.cos_a), scale = 1.0 / w.inv_scale;
    ASSERT_LE(std::fabs(w.dx), 2.5);
    ASSERT_LE(std::fabs(w.dy), 2.5);
    ASSERT_LE(std::fabs(angle), 15 * kPi / 180 + 1e-6);
    ASSERT_GE(scale, 0.8 - 1e-6);
    ASSERT_LE(scale, 1.2 + 1e-6);
    max_dx = std::max(max_dx, double(std::fabs(w.dx)));
    max_angle = std::max(max_angle, std::fabs(angle));
    min_scale = std::min(min_scale, scale);
    max_scale = std::max(max_scale, scale);
  }
  EXPECT_GT(max_dx, 2.4);  // 2000 uniform draws all below 96% of the bound: p = 0.96^4000
  EXPECT_GT(max_angle, 0.96 * 15 * kPi / 180);
  EXPECT_LT(min_scale, 0.81);
  EXPECT_GT(max_scale, 1.19);
}

// The same (seed, step) gives the same images; another step or seed other images.
TEST(TwinAugment, SameSeedAndStepGiveTheSameImages) {
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kImages = 20, kCount = 16;
  const std::vector<std::uint8_t> images = random_bytes(rng, kImages * kPixels);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, kImages);
  const std::vector<std::int32_t> indices = random_indices(rng, kImages, kCount);
  const AugmentParams p = random_params(rng, true);
  const auto run = [&](const AugmentParams& params, std::int64_t step) {
    std::vector<float> x(kCount * kPixels);
    std::vector<std::uint8_t> y(kCount);
    twin::gather_augmented_batch(images.data(), labels.data(), indices.data(), kCount, params, x.data(), y.data(), &step);
    return x;
  };
  const std::int64_t step = std::int64_t(rng() >> 20);
  EXPECT_EQ(run(p, step), run(p, step));
  EXPECT_NE(run(p, step), run(p, step + 1));
  AugmentParams other = p;
  other.seed ^= 1;
  EXPECT_NE(run(p, step), run(other, step));
}

// The displacement is smoothed noise scaled by α: away from the border its standard deviation is
// α·(1/√3)·Σ_t w_t² (uniform noise on [-1, 1) has variance 1/3; the 2-D Gaussian is separable),
// and neighbouring pixels move together.
TEST(TwinAugment, ElasticDisplacementHasTheScaleOfItsSmoothedNoise) {
  std::mt19937_64 rng(test::fresh_seed());
  const float alpha = uniform(rng, 10.f, 40.f), sigma = uniform(rng, 2.f, 5.f);
  const AugmentParams p = make_augment_params(rng(), 0.f, 0.f, 0.f, true, alpha, sigma);
  double sum_w2 = 0;
  for (int t = -p.radius; t <= p.radius; ++t) sum_w2 += double(p.weights[std::abs(t)]) * p.weights[std::abs(t)];
  const double want = alpha * sum_w2 / std::sqrt(3.0);
  double squares = 0, neighbour_products = 0;
  long n = 0;
  std::vector<float> d(2 * kPixels);
  for (std::uint64_t row = 0; row < 400; ++row) {
    twin::elastic_displacement(p, 7, row, d.data());
    for (int plane = 0; plane < 2; ++plane) {
      const int k = plane * kPixels + 14 * 28 + 14;  // the centre: 14 px from every border
      squares += double(d[k]) * d[k];
      neighbour_products += double(d[k]) * d[k + 1];
      ++n;
    }
  }
  const double got = std::sqrt(squares / n);
  EXPECT_NEAR(got, want, 0.15 * want) << "alpha " << alpha << " sigma " << sigma;
  EXPECT_GT(neighbour_products / squares, 0.8);  // smooth: a pixel's neighbour moves almost alike
}

// The twin's vectorized smoothing is the kernel's blur_at, tap for tap: the same bits.
TEST(TwinAugment, DisplacementIsTheKernelsBlurBitForBit) {
  std::mt19937_64 rng(test::fresh_seed());
  for (const float sigma : {0.5f, uniform(rng, 1.f, 6.f), 10.f}) {
    const AugmentParams p = make_augment_params(rng(), 0.f, 0.f, 0.f, true, uniform(rng, 1.f, 50.f), sigma);
    const std::uint64_t step = rng() >> 16, row = rng() % 1000;
    float noise[2 * kPixels], rows[2 * kPixels], want[2 * kPixels];
    for (int b = 0; b < kElasticNoiseBlocks; ++b) elastic_noise_block(p, step, row, b, noise);
    for (int k = 0; k < 2 * kPixels; ++k) rows[k] = blur_at(p, noise + (k / kPixels) * kPixels, k % kPixels, false);
    for (int k = 0; k < 2 * kPixels; ++k)
      want[k] = p.alpha * blur_at(p, rows + (k / kPixels) * kPixels, k % kPixels, true);
    std::vector<float> got = test::nan_filled(2 * kPixels);
    twin::elastic_displacement(p, step, row, got.data());
    EXPECT_EQ(0, std::memcmp(got.data(), want, sizeof want)) << "sigma " << sigma;
  }
}

// ---- GPU against the CPU twin ------------------------------------------------------------------

struct Case {
  int images, count;
  bool elastic;
};
const Case kCases[] = {{10, 1, false}, {10, 7, true},     {200, 128, false}, {200, 129, true},
                       {300, 300, true}, {5000, 1500, false}, {2000, 1100, true}};

TEST(GpuAugment, MatchesTheTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  DeviceBuffer<gpu::AugmentScratch> scratch(1);
  scratch.fill_bytes(0);
  for (const Case& c : kCases) {
    if (test::too_large_for_tsan(std::size_t(c.count) * kPixels * 16)) continue;
    const std::string what = std::to_string(c.count) + " images" + (c.elastic ? ", elastic" : "");
    const std::vector<std::uint8_t> images = random_bytes(rng, std::size_t(c.images) * kPixels);
    const std::vector<std::uint8_t> labels = test::random_labels(rng, c.images);
    const std::vector<std::int32_t> indices = random_indices(rng, c.images, c.count);
    const AugmentParams p = random_params(rng, c.elastic);
    const std::int64_t start = std::int64_t(rng() >> 24);
    std::vector<float> want(std::size_t(c.count) * kPixels);
    std::vector<std::uint8_t> want_y(c.count);
    std::int64_t host_step = start;
    twin::gather_augmented_batch(images.data(), labels.data(), indices.data(), c.count, p, want.data(), want_y.data(),
                                &host_step);
    DeviceBuffer<std::uint8_t> d_images(images), d_labels(labels), d_y(c.count);
    DeviceBuffer<std::int32_t> d_indices(indices);
    DeviceBuffer<float> d_x(std::size_t(c.count) * kPixels);
    DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{start});
    d_x.fill_bytes(0xFF);
    d_y.fill_bytes(0xFF);
    gpu::gather_augmented_batch(d_images.data(), d_labels.data(), d_indices.data(), c.count, p, d_x.data(), d_y.data(),
                                d_step.data(), scratch.data(), nullptr);
    MNIST_CHECK(cudaDeviceSynchronize());
    EXPECT_LE(worst_error(d_x.download(), want), kTolerance) << what;
    EXPECT_EQ(d_y.download(), want_y) << what;
    EXPECT_EQ(d_step.download().at(0), host_step) << what;
    EXPECT_EQ(scratch.download().at(0).blocks_done, 0u) << what << ": the ticket is reset for the next launch";
  }
}

// The step advances once per launch, whatever the grid (one block, many, no rows at all), and at
// every replay of a captured graph, whose later replays draw other images.
TEST(GpuAugment, AdvancesTheStepOncePerLaunchAndReplay) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kImages = 40;
  const std::vector<std::uint8_t> images = random_bytes(rng, kImages * kPixels);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, kImages);
  const AugmentParams p = random_params(rng, true);
  const std::int64_t start = std::int64_t(rng() >> 24);
  DeviceBuffer<std::uint8_t> d_images(images), d_labels(labels), d_y(kImages);
  DeviceBuffer<std::int32_t> d_indices(random_indices(rng, kImages, kImages));
  DeviceBuffer<float> d_x(std::size_t(kImages) * kPixels);
  DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{start});
  DeviceBuffer<gpu::AugmentScratch> scratch(1);
  scratch.fill_bytes(0);
  const Stream stream;
  const auto launch = [&](int count) {
    gpu::gather_augmented_batch(d_images.data(), d_labels.data(), d_indices.data(), count, p, d_x.data(), d_y.data(),
                                d_step.data(), scratch.data(), stream.get());
  };
  for (const int count : {1, kImages, 0}) launch(count);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  MNIST_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  launch(kImages);
  MNIST_CHECK(cudaStreamEndCapture(stream.get(), &graph));
  MNIST_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  std::vector<std::vector<float>> replays;
  for (int replay = 0; replay < 3; ++replay) {
    MNIST_CHECK(cudaGraphLaunch(exec, stream.get()));
    stream.synchronize();
    replays.push_back(d_x.download());
  }
  MNIST_CHECK(cudaGraphExecDestroy(exec));
  MNIST_CHECK(cudaGraphDestroy(graph));
  EXPECT_EQ(d_step.download().at(0), start + 6);
  EXPECT_NE(replays[0], replays[1]);
  EXPECT_NE(replays[1], replays[2]);
  // The last replay drew what the twin draws at that step.
  std::vector<float> want(std::size_t(kImages) * kPixels);
  std::vector<std::uint8_t> want_y(kImages);
  std::int64_t host_step = start + 5;
  const std::vector<std::int32_t> indices = d_indices.download();
  twin::gather_augmented_batch(images.data(), labels.data(), indices.data(), kImages, p, want.data(), want_y.data(),
                              &host_step);
  EXPECT_LE(worst_error(replays[2], want), kTolerance);
}

}  // namespace
}  // namespace mnist
