// Tests of the dense-layer GEMMs (include/mnist/ops/gemm.h), row-major:
//   forward y[B,out] = x[B,in]·W[in,out];  dW[in,out] = xᵀ·dy;  dx[B,in] = dy·Wᵀ.
//
// TwinGemm (CPU, runs in CI): a hand-worked example pins the convention; the CBLAS twin is
// checked against triple loops carried in double (twin::dense_forward_naive for the forward
// GEMM, loops written here for the two backward GEMMs), and against the adjoint identity
//   <dy, x·W> = <xᵀ·dy, W> = <dy·Wᵀ, x>   (= Σ_{b,i,o} dy[b,o]·x[b,i]·W[i,o]),
// evaluated in double, which ties the three GEMMs to each other without any loop.
// GpuGemm (label gpu, skips without a device): cuBLAS, fp32 and TF32, against the CPU twin on
// fresh random inputs, outputs NaN-poisoned before the launch.
//
// Tolerances. A single output element is a dot product c = Σ_k a_k·b_k. Its relative error
// |Δc|/|c| is unbounded: with random signs some c lie arbitrarily close to 0 while the
// rounding error does not shrink with them. What floating-point analysis does bound is the
// error relative to the sum of the magnitudes of the terms,
//   |Δc| ≤ γ_K · S,   S = Σ_k |a_k|·|b_k|,   γ_K = K·u/(1 - K·u),  u = 2^-24 (fp32),
// so every comparison here is scaled per element by S (computed as |A|·|B|, which is at least
// |c| and, for these inputs, of the order of max|c|·√K). Limits used:
//   fp32 (CPU twin vs loops, GPU vs CPU twin):  |Δ| ≤ 1e-5 · S.  For K ≤ 129 this is above the
//     worst-case γ_K (7.7e-6); for larger K the worst case assumes every rounding error has
//     the same sign, whereas blocked/FMA summation gives errors of order √K·u ≈ 1e-6 · S.
//   TF32 (GPU):  |Δ| ≤ 2e-3 · S.  TF32 keeps 10 mantissa bits: each input is rounded with
//     relative error ≤ 2^-11 (round-to-nearest), each product with ≤ 2·2^-11 ≈ 1e-3, and
//     fp32 accumulation adds the fp32 term above; 2e-3 leaves room for truncating hardware.
// A NaN or inf in a result always fails (its error is +inf).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/gemm.h"
#include "test_util.h"

namespace {

using mnist::GemmMath;
using mnist::test::fresh_seed;
using mnist::test::random_floats;

struct Shape {
  int batch, in, out;
};

std::string describe(const Shape& s) {
  return "batch " + std::to_string(s.batch) + ", in " + std::to_string(s.in) + ", out " + std::to_string(s.out);
}

std::size_t count(int rows, int cols) { return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols); }

std::vector<float> abs_of(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = std::fabs(v[i]);
  return out;
}

// max_i |got_i - want_i| / scale_i (scale_i = Σ|a||b| of that element, see the top).
// A NaN or inf in `got` gives +inf; where scale_i is 0 every term is 0 and so must be got_i.
double max_scaled_error(const std::vector<float>& got, const std::vector<float>& want,
                        const std::vector<float>& scale) {
  if (got.size() != want.size() || got.size() != scale.size()) return std::numeric_limits<double>::infinity();
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (scale[i] == 0.f) {
      if (diff != 0.0) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::fmax(worst, diff / scale[i]);
  }
  return worst;
}

// --- the test's own references: triple loops in double, rounded once -------------------------

std::vector<float> naive_forward(const std::vector<float>& x, const std::vector<float>& w, const Shape& s) {
  std::vector<float> y(count(s.batch, s.out));
  mnist::twin::dense_forward_naive(x.data(), w.data(), y.data(), s.batch, s.in, s.out);
  return y;
}

// dW[i,o] = Σ_b x[b,i]·dy[b,o]
std::vector<float> naive_backward_weights(const std::vector<float>& x, const std::vector<float>& dy, const Shape& s) {
  std::vector<float> dw(count(s.in, s.out));
  for (int i = 0; i < s.in; ++i)
    for (int o = 0; o < s.out; ++o) {
      double sum = 0.0;
      for (int b = 0; b < s.batch; ++b)
        sum += static_cast<double>(x[count(b, s.in) + i]) * dy[count(b, s.out) + o];
      dw[count(i, s.out) + o] = static_cast<float>(sum);
    }
  return dw;
}

// dx[b,i] = Σ_o dy[b,o]·W[i,o]
std::vector<float> naive_backward_input(const std::vector<float>& dy, const std::vector<float>& w, const Shape& s) {
  std::vector<float> dx(count(s.batch, s.in));
  for (int b = 0; b < s.batch; ++b)
    for (int i = 0; i < s.in; ++i) {
      double sum = 0.0;
      for (int o = 0; o < s.out; ++o) sum += static_cast<double>(dy[count(b, s.out) + o]) * w[count(i, s.out) + o];
      dx[count(b, s.in) + i] = static_cast<float>(sum);
    }
  return dx;
}

// --- the CPU twin, wrapped to return vectors --------------------------------------------------

std::vector<float> cpu_forward(const std::vector<float>& x, const std::vector<float>& w, const Shape& s) {
  std::vector<float> y = mnist::test::nan_filled(count(s.batch, s.out));
  mnist::twin::dense_forward(x.data(), w.data(), y.data(), s.batch, s.in, s.out);
  return y;
}
std::vector<float> cpu_backward_weights(const std::vector<float>& x, const std::vector<float>& dy, const Shape& s) {
  std::vector<float> dw = mnist::test::nan_filled(count(s.in, s.out));
  mnist::twin::dense_backward_weights(x.data(), dy.data(), dw.data(), s.batch, s.in, s.out);
  return dw;
}
std::vector<float> cpu_backward_input(const std::vector<float>& dy, const std::vector<float>& w, const Shape& s) {
  std::vector<float> dx = mnist::test::nan_filled(count(s.batch, s.in));
  mnist::twin::dense_backward_input(dy.data(), w.data(), dx.data(), s.batch, s.in, s.out);
  return dx;
}

// Small shapes for the CPU suite: 1, 7 and 129 (one past a power of two) in every position,
// plus the input layer's 784. Inner dimensions are ≤ 129 except where 784 appears.
const std::vector<Shape> kCpuShapes = {
    {1, 1, 1},   {1, 7, 129}, {7, 129, 1}, {129, 1, 7},  {7, 7, 7},    {129, 129, 129},
    {3, 784, 10}, {64, 784, 7}, {129, 10, 784}, {2, 5, 3}, {1, 129, 7}, {7, 1, 1},
};

constexpr double kFp32Tolerance = 1e-5;
constexpr double kTf32Tolerance = 2e-3;

// ================================= TwinGemm (CPU) =============================================

// x = [[1,2,3],[4,5,6]], W = [[1,2],[3,4],[5,6]], dy = [[1,2],[3,4]], worked by hand. Small
// integers: every path must be exact.
TEST(TwinGemm, HandWorkedExamplePinsRowMajor) {
  const Shape s{2, 3, 2};
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};
  const std::vector<float> dy = {1, 2, 3, 4};
  const std::vector<float> y_want = {22, 28, 49, 64};
  const std::vector<float> dw_want = {13, 18, 17, 24, 21, 30};
  const std::vector<float> dx_want = {5, 11, 17, 11, 25, 39};

  EXPECT_EQ(naive_forward(x, w, s), y_want);
  EXPECT_EQ(cpu_forward(x, w, s), y_want);
  EXPECT_EQ(naive_backward_weights(x, dy, s), dw_want);
  EXPECT_EQ(cpu_backward_weights(x, dy, s), dw_want);
  EXPECT_EQ(naive_backward_input(dy, w, s), dx_want);
  EXPECT_EQ(cpu_backward_input(dy, w, s), dx_want);
}

TEST(TwinGemm, ForwardMatchesNaiveLoop) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const Shape& s : kCpuShapes) {
    SCOPED_TRACE(describe(s) + ", seed " + std::to_string(seed));
    const auto x = random_floats(rng, count(s.batch, s.in));
    const auto w = random_floats(rng, count(s.in, s.out));
    const auto scale = naive_forward(abs_of(x), abs_of(w), s);
    EXPECT_LE(max_scaled_error(cpu_forward(x, w, s), naive_forward(x, w, s), scale), kFp32Tolerance);
  }
}

TEST(TwinGemm, BackwardWeightsMatchesNaiveLoop) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const Shape& s : kCpuShapes) {
    SCOPED_TRACE(describe(s) + ", seed " + std::to_string(seed));
    const auto x = random_floats(rng, count(s.batch, s.in));
    const auto dy = random_floats(rng, count(s.batch, s.out));
    const auto scale = naive_backward_weights(abs_of(x), abs_of(dy), s);
    EXPECT_LE(max_scaled_error(cpu_backward_weights(x, dy, s), naive_backward_weights(x, dy, s), scale),
              kFp32Tolerance);
  }
}

TEST(TwinGemm, BackwardInputMatchesNaiveLoop) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const Shape& s : kCpuShapes) {
    SCOPED_TRACE(describe(s) + ", seed " + std::to_string(seed));
    const auto dy = random_floats(rng, count(s.batch, s.out));
    const auto w = random_floats(rng, count(s.in, s.out));
    const auto scale = naive_backward_input(abs_of(dy), abs_of(w), s);
    EXPECT_LE(max_scaled_error(cpu_backward_input(dy, w, s), naive_backward_input(dy, w, s), scale), kFp32Tolerance);
  }
}

// <dy, x·W> = <xᵀ·dy, W> = <dy·Wᵀ, x> = Σ_{b,i,o} dy[b,o]·x[b,i]·W[i,o] =: E.
// The inner products and E are summed in double; the GEMM outputs carry fp32 errors of at
// most 1e-5·S each (see the top), so each inner product is within 1e-5·T of E, where
// T = Σ_{b,i,o} |dy[b,o]|·|x[b,i]|·|W[i,o]|.
TEST(TwinGemm, AdjointIdentityTiesTheThreeGemms) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const Shape& s : kCpuShapes) {
    SCOPED_TRACE(describe(s) + ", seed " + std::to_string(seed));
    const auto x = random_floats(rng, count(s.batch, s.in));
    const auto w = random_floats(rng, count(s.in, s.out));
    const auto dy = random_floats(rng, count(s.batch, s.out));
    const auto y = cpu_forward(x, w, s);
    const auto dw = cpu_backward_weights(x, dy, s);
    const auto dx = cpu_backward_input(dy, w, s);

    auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
      double sum = 0.0;
      for (std::size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
      return sum;
    };
    double exact = 0.0, magnitude = 0.0;
    for (int b = 0; b < s.batch; ++b)
      for (int i = 0; i < s.in; ++i)
        for (int o = 0; o < s.out; ++o) {
          const double term = static_cast<double>(dy[count(b, s.out) + o]) * x[count(b, s.in) + i] *
                              w[count(i, s.out) + o];
          exact += term;
          magnitude += std::fabs(term);
        }
    const double bound = kFp32Tolerance * magnitude;
    EXPECT_NEAR(dot(dy, y), exact, bound) << "<dy, x·W>";
    EXPECT_NEAR(dot(dw, w), exact, bound) << "<xᵀ·dy, W>";
    EXPECT_NEAR(dot(dx, x), exact, bound) << "<dy·Wᵀ, x>";
  }
}

// An empty inner dimension is a sum of no terms: the output is zero (not left as it was).
TEST(TwinGemm, EmptyInnerDimensionGivesZeros) {
  const Shape empty_batch{0, 5, 3};
  const std::vector<float> none;
  EXPECT_EQ(cpu_backward_weights(none, none, empty_batch), std::vector<float>(15, 0.f));

  const Shape no_inputs{4, 0, 3};
  EXPECT_EQ(cpu_forward(none, none, no_inputs), std::vector<float>(12, 0.f));
  const Shape no_outputs{4, 3, 0};
  EXPECT_EQ(cpu_backward_input(none, none, no_outputs), std::vector<float>(12, 0.f));
}

TEST(TwinGemm, RejectsNegativeDimensions) {
  float dummy = 0.f;
  EXPECT_THROW(mnist::twin::dense_forward(&dummy, &dummy, &dummy, -1, 1, 1), std::invalid_argument);
  EXPECT_THROW(mnist::twin::dense_backward_weights(&dummy, &dummy, &dummy, 1, -1, 1), std::invalid_argument);
  EXPECT_THROW(mnist::twin::dense_backward_input(&dummy, &dummy, &dummy, 1, 1, -1), std::invalid_argument);
}

// ================================= GpuGemm (device) ==========================================

// The three GEMMs of one shape on the device, on a non-blocking stream carried by the handle.
struct GpuResults {
  std::vector<float> y, dw, dx;
};

GpuResults run_on_gpu(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& dy,
                      const Shape& s, GemmMath math) {
  mnist::Stream stream;
  mnist::CublasHandle handle(stream.get());
  mnist::DeviceBuffer<float> d_x(x), d_w(w), d_dy(dy);
  mnist::DeviceBuffer<float> d_y(count(s.batch, s.out)), d_dw(count(s.in, s.out)), d_dx(count(s.batch, s.in));
  d_y.fill_bytes(0xFF);  // NaN: an element the GEMM does not write fails the comparison
  d_dw.fill_bytes(0xFF);
  d_dx.fill_bytes(0xFF);
  // Uploads and memsets ran on the legacy default stream, which a non-blocking stream does
  // not wait for: finish them before launching.
  MNIST_CHECK(cudaDeviceSynchronize());

  mnist::gpu::dense_forward(handle.get(), d_x.data(), d_w.data(), d_y.data(), s.batch, s.in, s.out, math);
  mnist::gpu::dense_backward_weights(handle.get(), d_x.data(), d_dy.data(), d_dw.data(), s.batch, s.in, s.out, math);
  mnist::gpu::dense_backward_input(handle.get(), d_dy.data(), d_w.data(), d_dx.data(), s.batch, s.in, s.out, math);
  stream.synchronize();
  return {d_y.download(), d_dw.download(), d_dx.download()};
}

// Batches 1, 7, 127, 128, 129, 1000 and the whole training set (not on the emulator, whose
// stand-in is one OpenBLAS call at any batch); the MLP's layer widths.
std::vector<Shape> gpu_shapes() {
  const int batches[] = {1, 7, 127, 128, 129, 1000, 60000};
  const int layers[][2] = {{784, 512}, {512, 512}, {512, 10}, {7, 7}};
  std::vector<Shape> shapes;
  for (int b : batches) {
    if (mnist::test::kEmulator && b > 1000) continue;
    for (const auto& l : layers) shapes.push_back({b, l[0], l[1]});
  }
  return shapes;
}

void expect_matches_cpu_twin(GemmMath math, double tolerance) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const Shape& s : gpu_shapes()) {
    SCOPED_TRACE(describe(s) + ", seed " + std::to_string(seed));
    const auto x = random_floats(rng, count(s.batch, s.in));
    const auto w = random_floats(rng, count(s.in, s.out));
    const auto dy = random_floats(rng, count(s.batch, s.out));
    const GpuResults got = run_on_gpu(x, w, dy, s, math);

    const auto abs_x = abs_of(x), abs_w = abs_of(w), abs_dy = abs_of(dy);
    EXPECT_LE(max_scaled_error(got.y, cpu_forward(x, w, s), cpu_forward(abs_x, abs_w, s)), tolerance) << "forward";
    EXPECT_LE(max_scaled_error(got.dw, cpu_backward_weights(x, dy, s), cpu_backward_weights(abs_x, abs_dy, s)),
              tolerance)
        << "weight gradient";
    EXPECT_LE(max_scaled_error(got.dx, cpu_backward_input(dy, w, s), cpu_backward_input(abs_dy, abs_w, s)),
              tolerance)
        << "input gradient";
  }
}

TEST(GpuGemm, Fp32MatchesCpuTwin) {
  MNIST_REQUIRE_GPU();
  expect_matches_cpu_twin(GemmMath::kFp32, kFp32Tolerance);
}

TEST(GpuGemm, Tf32MatchesCpuTwin) {
  MNIST_REQUIRE_GPU();
  expect_matches_cpu_twin(GemmMath::kTf32, kTf32Tolerance);
}

// Same inputs, same handle setup: bit-identical outputs (training runs must be repeatable).
TEST(GpuGemm, RepeatIsBitIdentical) {
  MNIST_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  const Shape s{1000, 784, 512};
  const auto x = random_floats(rng, count(s.batch, s.in));
  const auto w = random_floats(rng, count(s.in, s.out));
  const auto dy = random_floats(rng, count(s.batch, s.out));
  for (GemmMath math : {GemmMath::kFp32, GemmMath::kTf32}) {
    SCOPED_TRACE(std::string(math == GemmMath::kFp32 ? "fp32" : "tf32") + ", seed " + std::to_string(seed));
    const GpuResults a = run_on_gpu(x, w, dy, s, math);
    const GpuResults b = run_on_gpu(x, w, dy, s, math);
    EXPECT_EQ(std::memcmp(a.y.data(), b.y.data(), a.y.size() * sizeof(float)), 0) << "forward";
    EXPECT_EQ(std::memcmp(a.dw.data(), b.dw.data(), a.dw.size() * sizeof(float)), 0) << "weight gradient";
    EXPECT_EQ(std::memcmp(a.dx.data(), b.dx.data(), a.dx.size() * sizeof(float)), 0) << "input gradient";
  }
}

// The weight gradient of an empty batch is zero, written on the handle's stream over the
// NaN poison.
TEST(GpuGemm, EmptyBatchWeightGradientIsZero) {
  MNIST_REQUIRE_GPU();
  const Shape s{0, 5, 3};
  const std::vector<float> w(count(s.in, s.out), 1.f);
  const GpuResults got = run_on_gpu({}, w, {}, s, GemmMath::kFp32);
  EXPECT_EQ(got.dw, std::vector<float>(15, 0.f));
  EXPECT_TRUE(got.y.empty());
  EXPECT_TRUE(got.dx.empty());
}

}  // namespace
