// Batch gather (kernels/gather.{cu,cpp}): x[i, k] = images[indices[i], k] / 255, y[i] = labels[indices[i]].
// Both sides convert a byte with one IEEE division by 255, so the GPU batch must equal the CPU
// batch bit for bit (that is stricter than the 1e-6 relative check the other ops use).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/gather.h"
#include "test_util.h"

namespace mnist {
namespace {

struct Batch {
  std::vector<float> x;
  std::vector<std::uint8_t> y;
};

Batch gather(const std::vector<std::uint8_t>& images, const std::vector<std::uint8_t>& labels,
             const std::vector<std::int32_t>& indices, int pixels) {
  const int count = static_cast<int>(indices.size());
  Batch out{test::nan_filled(static_cast<std::size_t>(count) * pixels), std::vector<std::uint8_t>(count, 0xFF)};
  twin::gather_batch(images.data(), labels.data(), indices.data(), count, pixels, out.x.data(), out.y.data());
  return out;
}

std::vector<std::uint8_t> random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::uniform_int_distribution<int> dist(0, 255);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(dist(rng));
  return out;
}

// count indices into [0, images): a shuffled prefix of a permutation, or draws with repeats.
std::vector<std::int32_t> random_indices(std::mt19937_64& rng, int images, int count, bool repeats) {
  std::vector<std::int32_t> out(count);
  if (repeats) {
    std::uniform_int_distribution<std::int32_t> dist(0, images - 1);
    for (auto& i : out) i = dist(rng);
  } else {
    std::vector<std::int32_t> perm(images);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::copy(perm.begin(), perm.begin() + count, out.begin());
  }
  return out;
}

// ---- CPU twin -------------------------------------------------------------------------

TEST(TwinGather, HandComputed) {
  const std::vector<std::uint8_t> images = {0, 51, 102, 255,    // image 0 (4 pixels)
                                            1, 2, 3, 4,         // image 1
                                            255, 254, 128, 0};  // image 2
  const std::vector<std::uint8_t> labels = {7, 3, 9};
  const Batch b = gather(images, labels, {2, 0, 2, 1}, 4);
  EXPECT_EQ(b.y, (std::vector<std::uint8_t>{9, 7, 9, 3}));
  const std::vector<float> want = {1.f,        254.f / 255, 128.f / 255, 0.f,  //
                                   0.f,        0.2f,        0.4f,        1.f,  // 51/255 = 0.2 rounds to 0.2f
                                   1.f,        254.f / 255, 128.f / 255, 0.f,  //
                                   1.f / 255, 2.f / 255,   3.f / 255,   4.f / 255};
  EXPECT_EQ(b.x, want);
}

// Every byte maps into [0, 1], 0 → 0 and 255 → 1 exactly, monotonically, and ·255 rounds back.
TEST(TwinGather, ByteScalingIsExactAndMonotone) {
  std::vector<std::uint8_t> images(256);
  std::iota(images.begin(), images.end(), 0);
  const Batch b = gather(images, {5}, {0}, 256);
  EXPECT_EQ(b.x[0], 0.f);
  EXPECT_EQ(b.x[255], 1.f);
  for (int v = 0; v < 256; ++v) {
    EXPECT_EQ(std::lround(b.x[v] * 255.0), v);
    if (v > 0) EXPECT_LT(b.x[v - 1], b.x[v]);
  }
}

// Rows are whole images in index order, repeats allowed: row i equals image indices[i].
TEST(TwinGather, RowsFollowIndices) {
  constexpr int kImages = 100, kPixels = 784, kCount = 300;
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<std::uint8_t> images = random_bytes(rng, kImages * kPixels);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, kImages);
  const std::vector<std::int32_t> indices = random_indices(rng, kImages, kCount, true);
  const Batch b = gather(images, labels, indices, kPixels);
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(b.y[i], labels[indices[i]]);
    for (int k = 0; k < kPixels; ++k)
      ASSERT_EQ(b.x[i * kPixels + k], images[indices[i] * kPixels + k] / 255.0f) << "row " << i << " pixel " << k;
  }
}

// ---- GPU against the CPU twin ------------------------------------------------------------------

struct Case {
  int images, count, pixels;
  bool repeats;
};
// count 1, 7, 127, 128, 129, 1000 and a whole epoch; 784 pixels (uchar4/float4 path) and odd widths.
const Case kCases[] = {{10, 1, 784, false},     {10, 7, 784, true},      {200, 127, 784, false},
                       {200, 128, 784, true},   {200, 129, 784, false},  {5000, 1000, 784, false},
                       {60000, 60000, 784, false}, {300, 129, 1, true},  {300, 128, 7, true},
                       {300, 1000, 10, true},   {300, 127, 129, false},  {1000, 1000, 12, false}};

std::string describe(const Case& c) {
  return std::to_string(c.count) + " of " + std::to_string(c.images) + " images × " + std::to_string(c.pixels) +
         (c.repeats ? " (repeats)" : "");
}

// x bit-identical (NaN fails), y identical.
void expect_same_batch(const std::vector<float>& x, const std::vector<std::uint8_t>& y, const Batch& want,
                       const std::string& what) {
  ASSERT_EQ(x.size(), want.x.size()) << what;
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < x.size(); ++i) mismatches += std::memcmp(&x[i], &want.x[i], sizeof(float)) != 0;
  EXPECT_EQ(mismatches, 0u) << what;
  EXPECT_EQ(y, want.y) << what;
}

TEST(GpuGather, MatchesTwinBitExact) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  for (const Case& c : kCases) {
    if (test::too_large_for_tsan(static_cast<std::size_t>(c.count) * c.pixels)) continue;
    const std::vector<std::uint8_t> images = random_bytes(rng, static_cast<std::size_t>(c.images) * c.pixels);
    const std::vector<std::uint8_t> labels = test::random_labels(rng, c.images);
    const std::vector<std::int32_t> indices = random_indices(rng, c.images, c.count, c.repeats);
    DeviceBuffer<std::uint8_t> d_images(images), d_labels(labels), d_y(c.count);
    DeviceBuffer<std::int32_t> d_indices(indices);
    DeviceBuffer<float> d_x(static_cast<std::size_t>(c.count) * c.pixels);
    d_x.fill_bytes(0xFF);
    d_y.fill_bytes(0xFF);
    gpu::gather_batch(d_images.data(), d_labels.data(), d_indices.data(), c.count, c.pixels, d_x.data(), d_y.data(),
                      nullptr);
    MNIST_CHECK(cudaDeviceSynchronize());
    expect_same_batch(d_x.download(), d_y.download(), gather(images, labels, indices, c.pixels), describe(c));
  }
}

// An output one float off 16-byte alignment takes the scalar path even with 784 pixels.
TEST(GpuGather, UnalignedOutputMatchesTwin) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  constexpr int kImages = 500, kCount = 129, kPixels = 784;
  const std::vector<std::uint8_t> images = random_bytes(rng, kImages * kPixels);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, kImages);
  const std::vector<std::int32_t> indices = random_indices(rng, kImages, kCount, false);
  DeviceBuffer<std::uint8_t> d_images(images), d_labels(labels), d_y(kCount);
  DeviceBuffer<std::int32_t> d_indices(indices);
  DeviceBuffer<float> d_x(kCount * kPixels + 1);
  d_x.fill_bytes(0xFF);
  d_y.fill_bytes(0xFF);
  gpu::gather_batch(d_images.data(), d_labels.data(), d_indices.data(), kCount, kPixels, d_x.data() + 1, d_y.data(),
                    nullptr);
  MNIST_CHECK(cudaDeviceSynchronize());
  const std::vector<float> x = d_x.download();
  expect_same_batch(std::vector<float>(x.begin() + 1, x.end()), d_y.download(),
                    gather(images, labels, indices, kPixels), "unaligned x");
}

// A training gather advances the step counter once per launch, whatever the grid's size, and
// a graph that captured it advances it at every replay; an evaluation gather (no counter) and
// the CPU twin's count agree.
TEST(GpuGather, AdvancesTheStepCounterOncePerLaunch) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const std::int64_t start = std::uniform_int_distribution<std::int64_t>(0, 1 << 30)(rng);
  constexpr int kImages = 300, kPixels = 784;
  const std::vector<std::uint8_t> images = random_bytes(rng, kImages * kPixels);
  const std::vector<std::uint8_t> labels = test::random_labels(rng, kImages);
  DeviceBuffer<std::uint8_t> d_images(images), d_labels(labels), d_y(kImages);
  DeviceBuffer<std::int32_t> d_indices(random_indices(rng, kImages, kImages, true));
  DeviceBuffer<float> d_x(std::size_t(kImages) * kPixels);
  DeviceBuffer<std::int64_t> d_step(std::vector<std::int64_t>{start});
  std::int64_t host_step = start;
  std::vector<float> x(std::size_t(kImages) * kPixels);
  std::vector<std::uint8_t> y(kImages);
  const std::vector<std::int32_t> indices = d_indices.download();
  const Stream stream;
  // 1 row (one block), 300 rows of 784 pixels (many blocks), 0 rows (the counter alone).
  for (const int count : {1, kImages, 0}) {
    gpu::gather_batch(d_images.data(), d_labels.data(), d_indices.data(), count, kPixels, d_x.data(), d_y.data(),
                      stream.get(), d_step.data());
    twin::gather_batch(images.data(), labels.data(), indices.data(), count, kPixels, x.data(), y.data(), &host_step);
  }
  gpu::gather_batch(d_images.data(), d_labels.data(), d_indices.data(), kImages, kPixels, d_x.data(), d_y.data(),
                    stream.get());
  twin::gather_batch(images.data(), labels.data(), indices.data(), kImages, kPixels, x.data(), y.data());
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  MNIST_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  gpu::gather_batch(d_images.data(), d_labels.data(), d_indices.data(), kImages, kPixels, d_x.data(), d_y.data(),
                    stream.get(), d_step.data());
  MNIST_CHECK(cudaStreamEndCapture(stream.get(), &graph));
  MNIST_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 4; ++replay) MNIST_CHECK(cudaGraphLaunch(exec, stream.get()));
  stream.synchronize();
  MNIST_CHECK(cudaGraphExecDestroy(exec));
  MNIST_CHECK(cudaGraphDestroy(graph));
  EXPECT_EQ(host_step, start + 3);
  EXPECT_EQ(d_step.download().at(0), start + 3 + 4);
}

}  // namespace
}  // namespace mnist
