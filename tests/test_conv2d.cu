// 2-D convolution, stride 1, zero padding (kernels/conv2d.{cu,cpp}).
//
// The CPU twin is checked with math: hand-computed outputs, finite differences of the scalar
// loss L = sum(y · g) (double) for the three gradients, and the adjoint identities
// <conv(x, w), g> = <x, backward_data(g, w)> = <w, backward_filter(x, g)>.
//
// Tolerances of the twin. Every twin output is a double sum of exact products rounded once to
// float, so it is within 2u·|exact| of the exact value (u = 2^-24; the extra u absorbs the double
// summation error, below n·2^-53 relative for n ≤ 10^5 terms). Hence:
//  * a central difference of L, which is affine in every single input, is exact up to the
//    rounding of the y's: |fd - dL| ≤ 2u·(sum|y+||g| + sum|y-||g|) / (d+ + d-), with d± the
//    perturbations actually applied; the twin's gradient adds 2u·|grad|.
//  * each side of an adjoint identity is within 2u·sum|out||in| of its exact value.
// Both bounds are rigorous, so the checks never flake, and sharp: a wrong index changes a
// gradient by O(1), the bounds are ~1e-5 of it.
//
// GPU against the twin: |gpu - ref| ≤ 1e-5 · S per output, where S is the sum of the absolute
// values of the output's terms (S = conv(|x|, |w|) + |b| for y, backward_data(|g|, |w|) for dx,
// backward_filter(|x|, |g|) for dw, backward_bias(|g|) for db: the twin run on absolute values).
// Why 1e-5: the rigorous bound for a float sum of n products in any order or blocking
// (implicit GEMM, direct) is γ_n·S, γ_n = n·u/(1 - n·u) (Higham §3.1): 4.8e-5 at n = 800
// (32·5·5 terms, y of the second layer) and 1.5e-3 at n = 25088 (128·14·14 terms, dw), reached
// only if every rounding error had the same sign. With random-sign inputs the errors cancel: a
// plain sequential fp32 FMA sum (the least favourable order) of dw for 128×32×14×14 -> 64, k5,
// measured on the CPU, stays within 2.7e-7·S, and blocked sums do better. Winograd and FFT
// algorithms (not plain sums of products) err more through their transforms, which is what the
// margin is for. The twin itself is within 2u·S. So 1e-5 (~170 u) should not flake, while a
// missing or doubled term moves an output by |term|, on average S/n: 4e-5·S even at n = 25088,
// above the tolerance, so indexing errors are caught. The chosen algorithms are recorded as test
// properties (gpu::Conv2d::describe()).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/ops/conv2d.h"
#include "test_util.h"

#if defined(MNIST_GPU_EMULATOR)
#include "emu_inject.h"
#endif

namespace mnist {
namespace {

const double kU = std::ldexp(1.0, -24);  // unit roundoff of float

std::string describe(const Conv2dShape& s) {
  return std::to_string(s.batch) + "x" + std::to_string(s.in_channels) + "x" + std::to_string(s.height) + "x" +
         std::to_string(s.width) + " -> " + std::to_string(s.out_channels) + " k" + std::to_string(s.kernel) +
         " pad" + std::to_string(s.pad);
}

Conv2dShape make_shape(int batch, int in_channels, int height, int width, int out_channels, int kernel, int pad) {
  Conv2dShape s;
  s.batch = batch;
  s.in_channels = in_channels;
  s.height = height;
  s.width = width;
  s.out_channels = out_channels;
  s.kernel = kernel;
  s.pad = pad;
  return s;
}

std::vector<float> forward(const std::vector<float>& x, const std::vector<float>& w, const float* b,
                           const Conv2dShape& s) {
  std::vector<float> y = test::nan_filled(s.y_size());
  twin::conv2d_forward(x.data(), w.data(), b, y.data(), s);
  return y;
}
std::vector<float> backward_data(const std::vector<float>& dy, const std::vector<float>& w, const Conv2dShape& s) {
  std::vector<float> dx = test::nan_filled(s.x_size());
  twin::conv2d_backward_data(dy.data(), w.data(), dx.data(), s);
  return dx;
}
std::vector<float> backward_filter(const std::vector<float>& x, const std::vector<float>& dy, const Conv2dShape& s) {
  std::vector<float> dw = test::nan_filled(s.w_size());
  twin::conv2d_backward_filter(x.data(), dy.data(), dw.data(), s);
  return dw;
}
std::vector<float> backward_bias(const std::vector<float>& dy, const Conv2dShape& s) {
  std::vector<float> db = test::nan_filled(static_cast<std::size_t>(s.out_channels));
  twin::conv2d_backward_bias(dy.data(), db.data(), s);
  return db;
}

std::vector<float> absolute(std::vector<float> v) {
  for (auto& e : v) e = std::fabs(e);
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}
double abs_dot(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += std::fabs(static_cast<double>(a[i]) * b[i]);
  return sum;
}

// ---- CPU twin: hand-computed ------------------------------------------------------------

// x = 1..9 on a 3×3 image, pad 1, a kernel that is not symmetric (1 top-left, 2 bottom-right):
// cross-correlation reads y[i,j] = x[i-1,j-1] + 2·x[i+1,j+1] + b. A true convolution (flipped
// kernel) would give y[1,1] = 2·1 + 9 = 11, not 19.
TEST(RefConv2d, HandComputedCrossCorrelation) {
  const Conv2dShape s = make_shape(1, 1, 3, 3, 1, 3, 1);
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<float> w = {1, 0, 0, 0, 0, 0, 0, 0, 2};
  const float b = 0.5f;
  EXPECT_EQ(forward(x, w, &b, s), (std::vector<float>{10.5f, 12.5f, 0.5f, 16.5f, 19.5f, 2.5f, 0.5f, 4.5f, 5.5f}));
  EXPECT_EQ(forward(x, w, nullptr, s), (std::vector<float>{10, 12, 0, 16, 19, 2, 0, 4, 5}));

  // dy = 1 everywhere. dx[p,q] = w[0,0]·[dy at (p+1, q+1) exists] + w[2,2]·[dy at (p-1, q-1) exists].
  const std::vector<float> ones(9, 1.f);
  EXPECT_EQ(backward_data(ones, w, s), (std::vector<float>{1, 1, 0, 1, 3, 2, 0, 2, 2}));
  // dw[u,v] = sum of x over the rows {0,1}, {0,1,2}, {1,2} (u = 0, 1, 2) and likewise the columns.
  EXPECT_EQ(backward_filter(x, ones, s), (std::vector<float>{12, 21, 16, 27, 45, 33, 24, 39, 28}));
  EXPECT_EQ(backward_bias(ones, s), (std::vector<float>{9}));
}

// No padding, a 2×2 kernel of ones on a 3×4 image: each output is the sum of a 2×2 block; the
// output is 2×3 (H + 2·pad - k + 1 = 2, W ... = 3).
TEST(RefConv2d, HandComputedValidPaddingEvenKernel) {
  const Conv2dShape s = make_shape(1, 1, 3, 4, 1, 2, 0);
  ASSERT_EQ(s.out_height(), 2);
  ASSERT_EQ(s.out_width(), 3);
  std::vector<float> x(12);
  for (int i = 0; i < 12; ++i) x[i] = static_cast<float>(i);
  EXPECT_EQ(forward(x, std::vector<float>(4, 1.f), nullptr, s), (std::vector<float>{10, 14, 18, 26, 30, 34}));
}

// A 1×1 kernel mixes channels: y[n,o] = sum_c w[o,c]·x[n,c] + b[o]. Pins the layouts
// x[n,c,h,w], w[o,c,u,v], y[n,o,h,w] (2 images, 2 input channels, 3 output channels, 1×2 image).
TEST(RefConv2d, HandComputedChannelMixing) {
  const Conv2dShape s = make_shape(2, 2, 1, 2, 3, 1, 0);
  const std::vector<float> x = {1, 2, 3, 4,     // image 0: channel 0 = (1, 2), channel 1 = (3, 4)
                                -1, 0, 0.5, 2};  // image 1: channel 0 = (-1, 0), channel 1 = (0.5, 2)
  const std::vector<float> w = {1, 0,            // o = 0 copies channel 0
                                0, 1,            // o = 1 copies channel 1
                                2, -1};          // o = 2: 2·c0 - c1
  const std::vector<float> b = {0, 10, 100};
  EXPECT_EQ(forward(x, w, b.data(), s), (std::vector<float>{1, 2, 13, 14, 99, 100,         // image 0
                                                            -1, 0, 10.5f, 12, 97.5f, 98}));  // image 1
  // backward with dy = y's layout of ones on image 0, zeros on image 1
  const std::vector<float> dy = {1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
  // dx[0,c] = sum_o w[o,c] = (3, 0); image 1 gets nothing
  EXPECT_EQ(backward_data(dy, w, s), (std::vector<float>{3, 3, 0, 0, 0, 0, 0, 0}));
  // dw[o,c] = sum over image 0's pixels of x[0,c] = (3, 7) for every o
  EXPECT_EQ(backward_filter(x, dy, s), (std::vector<float>{3, 7, 3, 7, 3, 7}));
  EXPECT_EQ(backward_bias(dy, s), (std::vector<float>{2, 2, 2}));
}

TEST(RefConv2d, RejectsBadShapes) {
  std::vector<float> buf(4096);
  const Conv2dShape bad[] = {make_shape(0, 1, 4, 4, 1, 3, 1),   // no batch
                             make_shape(1, 1, 4, 4, 1, 3, 3),   // pad >= kernel
                             make_shape(1, 1, 4, 4, 1, 3, -1),  // negative pad
                             make_shape(1, 1, 2, 2, 1, 5, 1),   // kernel larger than padded image
                             make_shape(1, 0, 4, 4, 1, 3, 1)};
  for (const Conv2dShape& s : bad) {
    EXPECT_THROW(twin::conv2d_forward(buf.data(), buf.data(), nullptr, buf.data(), s), std::invalid_argument)
        << describe(s);
    EXPECT_THROW(twin::conv2d_backward_filter(buf.data(), buf.data(), buf.data(), s), std::invalid_argument)
        << describe(s);
  }
}

// ---- CPU twin: finite differences and adjoints ----------------------------------------------

struct Loss {
  double value;    // sum y·g
  double abs_sum;  // sum |y|·|g|: scales the rounding of y
};
Loss loss(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
          const std::vector<float>& g, const Conv2dShape& s) {
  const std::vector<float> y = forward(x, w, b.data(), s);
  return {dot(y, g), abs_dot(y, g)};
}

// dL/dv[k] by a central difference over every element of v (x, w or b), checked against grad.
// L is affine in v[k], so any step works; 0.5 is exact to apply to values in [-1, 1] up to the
// rounding of v ± 0.5, which is why the applied steps are measured.
void check_gradient(const char* name, std::vector<float>& v, const std::vector<float>& grad,
                    const std::function<Loss()>& evaluate, const Conv2dShape& s) {
  ASSERT_EQ(v.size(), grad.size());
  for (std::size_t k = 0; k < v.size(); ++k) {
    const float saved = v[k];
    v[k] = saved + 0.5f;
    const double up = static_cast<double>(v[k]) - saved;
    const Loss plus = evaluate();
    v[k] = saved - 0.5f;
    const double down = static_cast<double>(saved) - v[k];
    const Loss minus = evaluate();
    v[k] = saved;
    const double fd = (plus.value - minus.value) / (up + down);
    const double bound = 2 * kU * (plus.abs_sum + minus.abs_sum) / (up + down) + 2 * kU * std::fabs(grad[k]) + 1e-12;
    ASSERT_NEAR(grad[k], fd, bound) << name << "[" << k << "] of " << describe(s);
  }
}

const Conv2dShape kSmallShapes[] = {
    make_shape(2, 3, 5, 6, 4, 3, 1),  // 'same', k3
    make_shape(1, 2, 4, 4, 3, 5, 2),  // 'same', k5 larger than half the image
    make_shape(2, 1, 6, 5, 2, 3, 0),  // 'valid'
    make_shape(1, 2, 5, 5, 2, 2, 1),  // even kernel: output 6×6
    make_shape(3, 2, 3, 7, 2, 1, 0),  // 1×1
};

TEST(RefConv2d, GradientsMatchFiniteDifferences) {
  std::mt19937_64 rng(test::fresh_seed());
  for (const Conv2dShape& s : kSmallShapes) {
    std::vector<float> x = test::random_floats(rng, s.x_size());
    std::vector<float> w = test::random_floats(rng, s.w_size());
    std::vector<float> b = test::random_floats(rng, static_cast<std::size_t>(s.out_channels));
    const std::vector<float> g = test::random_floats(rng, s.y_size());
    const std::vector<float> dx = backward_data(g, w, s);
    const std::vector<float> dw = backward_filter(x, g, s);
    const std::vector<float> db = backward_bias(g, s);
    const auto evaluate = [&] { return loss(x, w, b, g, s); };
    check_gradient("dx", x, dx, evaluate, s);
    check_gradient("dw", w, dw, evaluate, s);
    check_gradient("db", b, db, evaluate, s);
  }
}

TEST(RefConv2d, BackwardPassesAreAdjointsOfForward) {
  std::mt19937_64 rng(test::fresh_seed());
  const Conv2dShape shapes[] = {make_shape(3, 4, 9, 8, 5, 5, 2), make_shape(2, 3, 7, 7, 6, 3, 0),
                                make_shape(1, 2, 6, 6, 3, 4, 1), make_shape(4, 1, 28, 28, 8, 5, 2),
                                make_shape(2, 8, 14, 14, 4, 5, 2)};
  for (const Conv2dShape& s : shapes) {
    const std::vector<float> x = test::random_floats(rng, s.x_size());
    const std::vector<float> w = test::random_floats(rng, s.w_size());
    const std::vector<float> g = test::random_floats(rng, s.y_size());
    const std::vector<float> y = forward(x, w, nullptr, s);
    const std::vector<float> dx = backward_data(g, w, s);
    const std::vector<float> dw = backward_filter(x, g, s);
    const double lhs = dot(y, g);
    EXPECT_NEAR(lhs, dot(x, dx), 2 * kU * (abs_dot(y, g) + abs_dot(x, dx)) + 1e-12) << describe(s);
    EXPECT_NEAR(lhs, dot(w, dw), 2 * kU * (abs_dot(y, g) + abs_dot(w, dw)) + 1e-12) << describe(s);
  }
}

// ---- GPU against the CPU twin -------------------------------------------------------------------

// The CNN's training batch, where cuDNN picks its algorithms for the real run; 8 on the emulator,
// whose stand-in runs the same loops at any batch (128 took a minute a test there).
constexpr int kCnnBatch = test::kEmulator ? 8 : 128;

const Conv2dShape kGpuShapes[] = {
    make_shape(1, 1, 28, 28, 32, 5, 2),          make_shape(7, 1, 28, 28, 32, 5, 2),
    make_shape(kCnnBatch, 1, 28, 28, 32, 5, 2),  // the CNN's first layer
    make_shape(1, 32, 14, 14, 64, 5, 2),         make_shape(7, 32, 14, 14, 64, 5, 2),
    make_shape(kCnnBatch, 32, 14, 14, 64, 5, 2),  // the CNN's second layer
    make_shape(3, 3, 9, 7, 5, 3, 1),       make_shape(2, 2, 6, 5, 3, 3, 0),
    make_shape(5, 3, 7, 7, 4, 2, 1),       make_shape(2, 4, 8, 8, 6, 1, 0),
    make_shape(1, 64, 7, 7, 10, 7, 3),
};

struct Outputs {
  std::vector<float> y, dx, dw, db;
};

// All four passes on one plan, every output NaN-poisoned first (a value not written stays NaN).
Outputs run_gpu(gpu::Conv2d& plan, const std::vector<float>& x, const std::vector<float>& w,
                const std::vector<float>* b, const std::vector<float>& g) {
  const Conv2dShape& s = plan.shape();
  DeviceBuffer<float> d_x(x), d_w(w), d_g(g), d_b(b ? *b : std::vector<float>{});
  DeviceBuffer<float> d_y(s.y_size()), d_dx(s.x_size()), d_dw(s.w_size()), d_db(s.out_channels);
  d_y.fill_bytes(0xFF);
  d_dx.fill_bytes(0xFF);
  d_dw.fill_bytes(0xFF);
  d_db.fill_bytes(0xFF);
  plan.forward(d_x.data(), d_w.data(), b ? d_b.data() : nullptr, d_y.data());
  plan.backward_data(d_g.data(), d_w.data(), d_dx.data());
  plan.backward_filter(d_x.data(), d_g.data(), d_dw.data());
  plan.backward_bias(d_g.data(), d_db.data());
  return {d_y.download(), d_dx.download(), d_dw.download(), d_db.download()};
}

// |got - want| ≤ tol·scale element by element; a NaN or inf in got fails.
void expect_within(const char* name, const std::vector<float>& got, const std::vector<float>& want,
                   const std::vector<float>& scale, double tol, const Conv2dShape& s) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    ASSERT_TRUE(std::isfinite(got[k])) << name << "[" << k << "] of " << describe(s) << " not written";
    ASSERT_LE(std::fabs(static_cast<double>(got[k]) - want[k]), tol * scale[k])
        << name << "[" << k << "] of " << describe(s) << ": gpu " << got[k] << ", cpu " << want[k]
        << ", sum of |terms| " << scale[k];
  }
}

// x and g are drawn in [-scale, scale): a small scale puts them where activations and
// gradients of a trained network often are.
void compare_with_twin(GemmMath math, double tol, const Conv2dShape* shapes, std::size_t count, float scale = 1) {
  std::mt19937_64 rng(test::fresh_seed());
  Stream stream;
  CudnnHandle handle(stream.get());
  const auto scaled = [scale](std::vector<float> v) {
    for (float& e : v) e *= scale;
    return v;
  };
  for (std::size_t i = 0; i < count; ++i) {
    const Conv2dShape& s = shapes[i];
    const std::vector<float> x = scaled(test::random_floats(rng, s.x_size()));
    const std::vector<float> w = test::random_floats(rng, s.w_size());
    const std::vector<float> b = test::random_floats(rng, static_cast<std::size_t>(s.out_channels));
    const std::vector<float> g = scaled(test::random_floats(rng, s.y_size()));
    gpu::Conv2d plan(handle.get(), s, math);
    ::testing::Test::RecordProperty("algorithms_" + std::to_string(i), describe(s) + ": " + plan.describe());
    SCOPED_TRACE("cuDNN's algorithms for " + describe(s) + ": " + plan.describe());  // in every failure message
    const Outputs got = run_gpu(plan, x, w, &b, g);

    expect_within("y", got.y, forward(x, w, b.data(), s), forward(absolute(x), absolute(w), absolute(b).data(), s),
                  tol, s);
    expect_within("dx", got.dx, backward_data(g, w, s), backward_data(absolute(g), absolute(w), s), tol, s);
    expect_within("dw", got.dw, backward_filter(x, g, s), backward_filter(absolute(x), absolute(g), s), tol, s);
    expect_within("db", got.db, backward_bias(g, s), backward_bias(absolute(g), s), tol, s);
  }
}

TEST(GpuConv2d, Fp32MatchesTwin) {
  MNIST_REQUIRE_GPU();
  compare_with_twin(GemmMath::kFp32, 1e-5, kGpuShapes, std::size(kGpuShapes));
}

// TF32 keeps 10 explicit mantissa bits: rounding x and w errs by at most 2^-11 relative each
// (2^-10 if the hardware truncates), so a product by at most ~2·2^-10 ≈ 2e-3, and
// |err| ≤ 2e-3·S plus the fp32 accumulation error (below 1e-5·S, as above); 4e-3 leaves room.
// This guards the TF32 path (it runs, writes everything, is close); indexing is the fp32 test's job.
TEST(GpuConv2d, Tf32WithinTf32Bound) {
  MNIST_REQUIRE_GPU();
  const Conv2dShape shapes[] = {make_shape(kCnnBatch, 1, 28, 28, 32, 5, 2),
                                make_shape(kCnnBatch, 32, 14, 14, 64, 5, 2)};
  compare_with_twin(GemmMath::kTf32, 4e-3, shapes, std::size(shapes));
}

// TF32 keeps fp32's 8 exponent bits, so the bound holds just as well for inputs near 2^-20.
// An algorithm that converts fp32 to fp16 (cuDNN's TENSOR_OP_MATH_ALLOW_CONVERSION) would not:
// fp16's smallest normal is 2^-14, and below it values keep fewer bits (2^-20 keeps 4).
TEST(GpuConv2d, Tf32KeepsTheRangeOfSmallValues) {
  MNIST_REQUIRE_GPU();
  const Conv2dShape shapes[] = {make_shape(7, 1, 28, 28, 32, 5, 2), make_shape(7, 32, 14, 14, 64, 5, 2)};
  compare_with_twin(GemmMath::kTf32, 4e-3, shapes, std::size(shapes), 0x1p-20f);
}

TEST(GpuConv2d, ForwardWithoutBias) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const Conv2dShape s = make_shape(7, 3, 9, 7, 5, 3, 1);
  const std::vector<float> x = test::random_floats(rng, s.x_size());
  const std::vector<float> w = test::random_floats(rng, s.w_size());
  const std::vector<float> g = test::random_floats(rng, s.y_size());
  CudnnHandle handle;
  gpu::Conv2d plan(handle.get(), s);
  const Outputs got = run_gpu(plan, x, w, nullptr, g);
  expect_within("y", got.y, forward(x, w, nullptr, s), forward(absolute(x), absolute(w), nullptr, s), 1e-5, s);
}

// Deterministic algorithms only: the same inputs give the same bits on every call, and on a
// fresh plan of the same shape (what a second training run builds).
TEST(GpuConv2d, DeterministicAcrossCallsAndPlans) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  CudnnHandle handle;
  for (const Conv2dShape& s :
       {make_shape(kCnnBatch, 1, 28, 28, 32, 5, 2), make_shape(kCnnBatch, 32, 14, 14, 64, 5, 2)}) {
    const std::vector<float> x = test::random_floats(rng, s.x_size());
    const std::vector<float> w = test::random_floats(rng, s.w_size());
    const std::vector<float> b = test::random_floats(rng, static_cast<std::size_t>(s.out_channels));
    const std::vector<float> g = test::random_floats(rng, s.y_size());
    gpu::Conv2d plan(handle.get(), s);
    const Outputs first = run_gpu(plan, x, w, &b, g);
    const Outputs again = run_gpu(plan, x, w, &b, g);
    gpu::Conv2d fresh(handle.get(), s);
    EXPECT_EQ(fresh.describe(), plan.describe()) << describe(s);
    const Outputs other = run_gpu(fresh, x, w, &b, g);
    for (const Outputs* run : {&again, &other}) {
      const auto same = [](const std::vector<float>& a, const std::vector<float>& c) {
        return a.size() == c.size() && std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) == 0;
      };
      EXPECT_TRUE(same(first.y, run->y)) << "y of " << describe(s);
      EXPECT_TRUE(same(first.dx, run->dx)) << "dx of " << describe(s);
      EXPECT_TRUE(same(first.dw, run->dw)) << "dw of " << describe(s);
      EXPECT_TRUE(same(first.db, run->db)) << "db of " << describe(s);
    }
  }
}

// An evaluation plan: the same forward pass, bit for bit, as a training plan of the shape (the
// same heuristics choose its algorithm), and backward calls refused before anything is written.
TEST(GpuConv2d, ForwardOnlyPlanRunsTheSameForwardAndRefusesBackward) {
  MNIST_REQUIRE_GPU();
  std::mt19937_64 rng(test::fresh_seed());
  const Conv2dShape s = make_shape(9, 3, 11, 8, 6, 5, 2);
  const std::vector<float> x = test::random_floats(rng, s.x_size());
  const std::vector<float> w = test::random_floats(rng, s.w_size());
  const std::vector<float> b = test::random_floats(rng, static_cast<std::size_t>(s.out_channels));
  const std::vector<float> g = test::random_floats(rng, s.y_size());
  CudnnHandle handle;
  gpu::Conv2d training(handle.get(), s);
  gpu::Conv2d evaluation(handle.get(), s, GemmMath::kFp32, gpu::Conv2d::Passes::kForwardOnly);
  EXPECT_TRUE(training.has_backward());
  EXPECT_FALSE(evaluation.has_backward());
  EXPECT_NE(evaluation.describe().find("forward-only"), std::string::npos) << evaluation.describe();

  const DeviceBuffer<float> d_x(x), d_w(w), d_b(b), d_g(g);
  DeviceBuffer<float> d_y(s.y_size()), d_dx(s.x_size()), d_dw(s.w_size()), d_db(s.out_channels);
  for (DeviceBuffer<float>* out : {&d_y, &d_dx, &d_dw, &d_db}) out->fill_bytes(0xFF);
  evaluation.forward(d_x.data(), d_w.data(), d_b.data(), d_y.data());
  const std::vector<float> y = d_y.download();
  expect_within("y", y, forward(x, w, b.data(), s), forward(absolute(x), absolute(w), absolute(b).data(), s), 1e-5,
                s);
  EXPECT_TRUE(y == run_gpu(training, x, w, &b, g).y) << "forward-only and training plans differ";

  EXPECT_THROW(evaluation.backward_data(d_g.data(), d_w.data(), d_dx.data()), std::logic_error);
  EXPECT_THROW(evaluation.backward_filter(d_x.data(), d_g.data(), d_dw.data()), std::logic_error);
  EXPECT_THROW(evaluation.backward_bias(d_g.data(), d_db.data()), std::logic_error);
  for (const DeviceBuffer<float>* out : {&d_dx, &d_dw, &d_db})
    for (float v : out->download()) ASSERT_TRUE(std::isnan(v)) << "a refused backward call wrote its output";
}

// cuDNN may rank first an algorithm and math type that it then refuses to run. The plan's trial
// calls find that out at set-up and take the next candidate of the heuristics, so the first
// forward pass does not fail. On the emulator, with TENSOR_OP_MATH refused (emu_inject.h), a TF32
// plan falls back to the FMA candidate of each direction, and its results, plain fp32 now, meet
// the fp32 bound against the CPU twin.
TEST(GpuConv2d, ARefusedMathModeFallsBackToTheNextCandidate) {
#if defined(MNIST_GPU_EMULATOR)
  MNIST_REQUIRE_GPU();
  struct Refusal {  // the fault holds for the test's life, however it ends
    Refusal() { emu::inject(emu::Fault::kTensorOpMathRefused); }
    ~Refusal() { emu::inject(emu::Fault::kNone); }
  } refusal;
  const Conv2dShape shapes[] = {make_shape(7, 1, 28, 28, 32, 5, 2), make_shape(7, 32, 14, 14, 64, 5, 2)};
  CudnnHandle handle;
  for (const Conv2dShape& s : shapes) {
    const gpu::Conv2d plan(handle.get(), s, GemmMath::kTf32);
    const std::string chosen = plan.describe();
    for (const char* expected :
         {"forward IMPLICIT_PRECOMP_GEMM (FMA_MATH; refused before it: IMPLICIT_PRECOMP_GEMM (TENSOR_OP_MATH) trial "
          "call CUDNN_STATUS_NOT_SUPPORTED)",
          "backward data ALGO_1 (FMA_MATH; refused before it: ALGO_1 (TENSOR_OP_MATH) trial call "
          "CUDNN_STATUS_NOT_SUPPORTED)",
          "backward filter ALGO_1 (FMA_MATH; refused before it: ALGO_1 (TENSOR_OP_MATH) trial call "
          "CUDNN_STATUS_NOT_SUPPORTED)"})
      EXPECT_NE(chosen.find(expected), std::string::npos) << describe(s) << ": " << chosen;
  }
  compare_with_twin(GemmMath::kTf32, 1e-5, shapes, std::size(shapes));
#else
  GTEST_SKIP() << "needs the emulator's injected faults (tests/emu/emu_inject.h)";
#endif
}

TEST(GpuConv2d, RejectsBadShape) {
  MNIST_REQUIRE_GPU();
  CudnnHandle handle;
  EXPECT_THROW(gpu::Conv2d(handle.get(), make_shape(1, 1, 4, 4, 1, 3, 3)), std::invalid_argument);
}

}  // namespace
}  // namespace mnist
