// Micro-benchmark of the memory-bound kernels in include/mnist/ops and of the cuBLAS GEMMs
// at the MLP's shapes. Measuring only: the correctness checks live in tests/.
//
//   cmake --build build --target bench_kernels && ./build/profiling/bench_kernels [repeats]
//
// Method. Each kernel is launched a few times to warm up, then timed `repeats` times with CUDA
// events on one stream; a sample is a run of back-to-back launches (enough to last ~0.5 ms,
// at least one) divided by their number, so small kernels are timed at their throughput and
// not at the host's launch latency. The table reports the median sample.
//
// Bandwidth. For each kernel the code counts the bytes it must move at the least: every input
// read once, every output written once (a kernel that rereads moves more and shows it as a
// lower rate). The reference is a device-to-device cudaMemcpy of a large buffer in the same
// run, counted as read + write; "of copy" is the kernel's rate over that one. Sizes fill the
// GPU (65536 x 512 elementwise, 64M Adam parameters) beside the training shapes (batch 128),
// which are launch-bound and show what a step costs.
//
// Classifier head. The fused output layer + softmax-CE (kernels/classifier_head.cu), forward and
// backward, beside the sequence of separate ops it replaces (cuBLAS GEMMs, bias, softmax-CE,
// bias gradients, ReLU-dropout backward) at the default MLP's 512 -> 10, batch 128 and 1024:
// whether the hand-written kernel pays for itself at the step's shapes.
//
// Convolutions. The CNN's two layers at batch 128 through cuDNN's legacy API, in NCHW (what
// gpu::Conv2d uses) and NHWC, in fp32 (FMA math) and TF32 (default math: tensor cores allowed,
// no conversion to fp16): each direction takes the first deterministic algorithm of cuDNN's
// heuristic ranking that fits 256 MiB of workspace, by gpu::Conv2d's own rules
// (conv_candidate_usable in include/mnist/ops/conv2d.h). The rows say
// whether NCHW, the layout kernels/conv2d.cu was written for, costs anything.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "mnist/core/check.h"
#include "mnist/core/device.h"
#include "mnist/ops/adam.h"
#include "mnist/ops/bias_grad.h"
#include "mnist/ops/classifier_head.h"
#include "mnist/ops/bias_relu_dropout.h"
#include "mnist/ops/conv2d.h"
#include "mnist/ops/eval_metrics.h"
#include "mnist/ops/augment.h"
#include "mnist/ops/gather.h"
#include "mnist/ops/gemm.h"
#include "mnist/ops/softmax_ce.h"

namespace {

using mnist::DeviceBuffer;

// --- inputs: filled on the device from a hash of the index (values only need to be sane) ----

__device__ std::uint32_t hash32(std::uint64_t i, std::uint32_t seed) {
  std::uint32_t h = static_cast<std::uint32_t>(i) ^ static_cast<std::uint32_t>(i >> 32) * 0x9E3779B9u ^ seed;
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

__global__ void fill_uniform_kernel(float* p, std::size_t n, float lo, float hi, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    p[i] = lo + (hi - lo) * (hash32(i, seed) >> 8) * (1.0f / 16777216.0f);
}

template <class T>
__global__ void fill_below_kernel(T* p, std::size_t n, std::uint32_t bound, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<T>(hash32(i, seed) % bound);
}

constexpr int kFillBlocks = 1024, kFillThreads = 256;

void fill_uniform(DeviceBuffer<float>& buffer, float lo, float hi, std::uint32_t seed, cudaStream_t stream) {
  fill_uniform_kernel<<<kFillBlocks, kFillThreads, 0, stream>>>(buffer.data(), buffer.size(), lo, hi, seed);
  MNIST_CHECK_LAUNCH();
}

template <class T>
void fill_below(DeviceBuffer<T>& buffer, std::uint32_t bound, std::uint32_t seed, cudaStream_t stream) {
  fill_below_kernel<T><<<kFillBlocks, kFillThreads, 0, stream>>>(buffer.data(), buffer.size(), bound, seed);
  MNIST_CHECK_LAUNCH();
}

// --- timing ---------------------------------------------------------------------------------

struct Timing {
  int warmup = 3;
  int repeats = 20;
};

// Median milliseconds of one launch of `launch` on `stream` (see the top for the method).
float median_ms(cudaStream_t stream, const Timing& timing, const std::function<void()>& launch) {
  mnist::Event start, stop;
  for (int i = 0; i < timing.warmup; ++i) launch();
  start.record(stream);
  launch();
  stop.record(stream);
  const float once = stop.elapsed_ms_since(start);
  const int batch = std::clamp(static_cast<int>(0.5f / std::max(once, 1e-4f)), 1, 1000);

  std::vector<float> samples;
  for (int r = 0; r < timing.repeats; ++r) {
    start.record(stream);
    for (int i = 0; i < batch; ++i) launch();
    stop.record(stream);
    samples.push_back(stop.elapsed_ms_since(start) / batch);
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

struct Row {
  std::string kernel, size;
  float ms;
  double bytes;
};

double gigabytes_per_s(double bytes, float ms) { return bytes / (ms * 1e-3) / 1e9; }

std::string dims(long long a, long long b) { return std::to_string(a) + " x " + std::to_string(b); }

// --- the kernels ------------------------------------------------------------------------------

constexpr std::int64_t kFirstStep = 1;
constexpr int kClassCount = mnist::kClasses;
constexpr int kPixels = 784;
constexpr int kTrainImages = 60000;
constexpr std::size_t kMlpParams = 669706;  // 784·512+512 + 512·512+512 + 512·10+10

void bench_bias_relu_dropout(int rows, int cols, const Timing& timing, cudaStream_t stream,
                             const std::int64_t* step, std::vector<Row>& table) {
  const std::size_t n = static_cast<std::size_t>(rows) * cols;
  DeviceBuffer<float> z(n), bias(cols), y(n), dy(n), dz(n);
  fill_uniform(z, -1.f, 1.f, 1, stream);
  fill_uniform(bias, -0.1f, 0.1f, 2, stream);
  fill_uniform(dy, -1.f, 1.f, 3, stream);
  const mnist::DropoutKey key{1234, 0, 0.1f};
  const float forward = median_ms(stream, timing, [&] {
    mnist::gpu::bias_relu_dropout_forward(z.data(), bias.data(), y.data(), rows, cols, true, key, step, stream);
  });
  // read z, bias; write y (the mask is recomputed, never stored)
  table.push_back({"bias_relu_dropout fwd (p=0.1)", dims(rows, cols), forward, 4.0 * (2.0 * n + cols)});
  const float backward = median_ms(stream, timing, [&] {
    mnist::gpu::bias_relu_dropout_backward(dy.data(), z.data(), bias.data(), dz.data(), rows, cols, true, key, step,
                                           stream);
  });
  // read dy, z, bias; write dz
  table.push_back({"bias_relu_dropout bwd (p=0.1)", dims(rows, cols), backward, 4.0 * (3.0 * n + cols)});
}

void bench_bias_grad(int rows, int cols, const Timing& timing, cudaStream_t stream, std::vector<Row>& table) {
  const std::size_t n = static_cast<std::size_t>(rows) * cols;
  DeviceBuffer<float> dz(n), db(cols);
  fill_uniform(dz, -1.f, 1.f, 4, stream);
  const float ms =
      median_ms(stream, timing, [&] { mnist::gpu::bias_grad(dz.data(), db.data(), rows, cols, stream); });
  table.push_back({"bias_grad", dims(rows, cols), ms, 4.0 * (n + cols)});  // read dz; write db
}

void bench_gather(int count, const DeviceBuffer<std::uint8_t>& images, const DeviceBuffer<std::uint8_t>& labels,
                  const Timing& timing, cudaStream_t stream, std::vector<Row>& table) {
  DeviceBuffer<std::int32_t> indices(count);
  DeviceBuffer<float> x(static_cast<std::size_t>(count) * kPixels);
  DeviceBuffer<std::uint8_t> y(count);
  fill_below(indices, kTrainImages, 5, stream);
  const float ms = median_ms(stream, timing, [&] {
    mnist::gpu::gather_batch(images.data(), labels.data(), indices.data(), count, kPixels, x.data(), y.data(),
                             stream);
  });
  // read indices, one uint8 image row and label per sample; write float x and uint8 y
  const double bytes = 4.0 * count + 1.0 * count * kPixels + count + 4.0 * count * kPixels + count;
  table.push_back({"gather (uint8 -> float)", dims(count, kPixels), ms, bytes});
}

// The training batch gather with --augment affine or elastic (the defaults): one block an image,
// bilinear reads, and for elastic the smoothing of two noise planes. Counted as the plain
// gather's traffic (the four taps of a read mostly hit the cache).
void bench_gather_augmented(int count, bool elastic, const DeviceBuffer<std::uint8_t>& images,
                            const DeviceBuffer<std::uint8_t>& labels, const Timing& timing, cudaStream_t stream,
                            std::vector<Row>& table) {
  DeviceBuffer<std::int32_t> indices(count);
  DeviceBuffer<float> x(static_cast<std::size_t>(count) * kPixels);
  DeviceBuffer<std::uint8_t> y(count);
  DeviceBuffer<std::int64_t> step(std::vector<std::int64_t>{kFirstStep});
  DeviceBuffer<mnist::gpu::AugmentScratch> scratch(1);
  scratch.fill_bytes(0);
  fill_below(indices, kTrainImages, 6, stream);
  const mnist::AugmentParams params = mnist::make_augment_params(1, 2.f, 10.f, 0.1f, elastic, 34.f, 4.f);
  const float ms = median_ms(stream, timing, [&] {
    mnist::gpu::gather_augmented_batch(images.data(), labels.data(), indices.data(), count, params, x.data(),
                                       y.data(), step.data(), scratch.data(), stream);
  });
  const double bytes = 4.0 * count + 1.0 * count * kPixels + count + 4.0 * count * kPixels + count;
  table.push_back({elastic ? "gather + augment elastic" : "gather + augment affine", dims(count, kPixels), ms, bytes});
}

void bench_softmax_ce(int rows, const Timing& timing, cudaStream_t stream, std::vector<Row>& table) {
  const std::size_t n = static_cast<std::size_t>(rows) * kClassCount;
  DeviceBuffer<float> logits(n), loss(rows), dlogits(n);
  DeviceBuffer<std::uint8_t> labels(rows);
  fill_uniform(logits, -5.f, 5.f, 6, stream);
  fill_below(labels, kClassCount, 7, stream);
  const float ms = median_ms(stream, timing, [&] {
    mnist::gpu::softmax_cross_entropy(logits.data(), labels.data(), loss.data(), dlogits.data(), rows, kClassCount,
                                      0.1f, stream);
  });
  // read logits, labels; write loss, dlogits
  const double bytes = 4.0 * n + rows + 4.0 * rows + 4.0 * n;
  table.push_back({"softmax_ce (+grad, smoothing 0.1)", dims(rows, kClassCount), ms, bytes});
}

void bench_adam(std::size_t n, const Timing& timing, cudaStream_t stream, const std::int64_t* step,
                std::vector<Row>& table) {
  DeviceBuffer<float> params(n), grads(n), m(n), v(n);
  fill_uniform(params, -0.05f, 0.05f, 8, stream);
  fill_uniform(grads, -1e-2f, 1e-2f, 9, stream);
  m.fill_bytes(0);
  v.fill_bytes(0);
  MNIST_CHECK(cudaDeviceSynchronize());  // the memsets ran on the legacy stream
  mnist::AdamConfig config;
  config.weight_decay = 1e-4f;
  config.decoupled = true;
  const float ms = median_ms(stream, timing, [&] {
    mnist::gpu::adam_step(params.data(), grads.data(), m.data(), v.data(), n, config, step, stream);
  });
  // read params, grads, m, v; write params, m, v
  table.push_back({"adamw", std::to_string(n) + " params", ms, 4.0 * 7.0 * static_cast<double>(n)});
}

void bench_eval_metrics(int rows, const Timing& timing, cudaStream_t stream, std::vector<Row>& table) {
  const std::size_t n = static_cast<std::size_t>(rows) * kClassCount;
  DeviceBuffer<float> logits(n), loss(rows);
  DeviceBuffer<std::uint8_t> labels(rows);
  DeviceBuffer<std::int32_t> predictions(rows);
  DeviceBuffer<mnist::EvalTotals> totals(1);
  fill_uniform(logits, -5.f, 5.f, 10, stream);
  fill_uniform(loss, 0.f, 3.f, 11, stream);
  fill_below(labels, kClassCount, 12, stream);
  totals.fill_bytes(0);
  MNIST_CHECK(cudaDeviceSynchronize());
  const float ms = median_ms(stream, timing, [&] {
    mnist::gpu::accumulate_metrics(logits.data(), labels.data(), loss.data(), rows, totals.data(),
                                   predictions.data(), stream);
  });
  // read logits, labels, loss; write predictions (the totals are a few hundred bytes)
  const double bytes = 4.0 * n + rows + 4.0 * rows + 4.0 * rows;
  table.push_back({"eval_metrics (+predictions)", dims(rows, kClassCount), ms, bytes});
}

// Device-to-device copy of a large buffer: the bandwidth the kernels are measured against.
Row bench_copy(std::size_t bytes, const Timing& timing, cudaStream_t stream) {
  DeviceBuffer<std::uint8_t> src(bytes), dst(bytes);
  src.fill_bytes(1);
  MNIST_CHECK(cudaDeviceSynchronize());
  const float ms = median_ms(stream, timing, [&] {
    MNIST_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream));
  });
  return {"cudaMemcpy D2D (reference)", std::to_string(bytes >> 20) + " MiB", ms, 2.0 * bytes};  // read + write
}

// --- GEMMs ------------------------------------------------------------------------------------

struct GemmRow {
  std::string op, shape;
  float ms_fp32, ms_tf32;
  double flops;
};

void bench_gemms(int batch, const Timing& timing, cudaStream_t stream, std::vector<GemmRow>& table) {
  mnist::CublasHandle handle(stream);
  const int layers[][2] = {{784, 512}, {512, 512}, {512, 10}};
  for (const auto& layer : layers) {
    const int in = layer[0], out = layer[1];
    DeviceBuffer<float> x(static_cast<std::size_t>(batch) * in), w(static_cast<std::size_t>(in) * out),
        y(static_cast<std::size_t>(batch) * out), dy(static_cast<std::size_t>(batch) * out),
        dw(static_cast<std::size_t>(in) * out), dx(static_cast<std::size_t>(batch) * in);
    fill_uniform(x, 0.f, 1.f, 13, stream);
    fill_uniform(w, -0.05f, 0.05f, 14, stream);
    fill_uniform(dy, -1e-3f, 1e-3f, 15, stream);
    const double flops = 2.0 * batch * in * out;  // each GEMM of the layer: B·in·out multiply-adds
    const std::string layer_name = std::to_string(in) + "->" + std::to_string(out);

    auto time_both = [&](const std::function<void(mnist::GemmMath)>& gemm) {
      const float fp32 = median_ms(stream, timing, [&] { gemm(mnist::GemmMath::kFp32); });
      const float tf32 = median_ms(stream, timing, [&] { gemm(mnist::GemmMath::kTf32); });
      return std::pair<float, float>(fp32, tf32);
    };
    auto [fwd32, fwd_tf] = time_both([&](mnist::GemmMath math) {
      mnist::gpu::dense_forward(handle.get(), x.data(), w.data(), y.data(), batch, in, out, math);
    });
    table.push_back({"forward " + layer_name, dims(batch, in) + " . " + dims(in, out), fwd32, fwd_tf, flops});
    auto [dw32, dw_tf] = time_both([&](mnist::GemmMath math) {
      mnist::gpu::dense_backward_weights(handle.get(), x.data(), dy.data(), dw.data(), batch, in, out, math);
    });
    table.push_back({"dW " + layer_name, dims(in, batch) + " . " + dims(batch, out), dw32, dw_tf, flops});
    auto [dx32, dx_tf] = time_both([&](mnist::GemmMath math) {
      mnist::gpu::dense_backward_input(handle.get(), dy.data(), w.data(), dx.data(), batch, in, out, math);
    });
    table.push_back({"dX " + layer_name, dims(batch, out) + " . " + dims(out, in), dx32, dx_tf, flops});
  }
}

// --- the classifier head: fused against the separate ops it replaces ----------------------------

struct HeadRow {
  std::string pass;
  int batch;
  float fused_ms, separate_ms;
  int separate_launches;
};

// The default MLP's output layer (512 -> 10, dropout 0.2 below) at `batch`: the fused forward
// (logits, softmax-CE with the batch's totals) against cuBLAS GEMM + bias + softmax-CE, and the
// fused backward against the five launches it replaces (dW and dX GEMMs, two bias gradients, the
// ReLU-dropout backward). Each side is one median of `timing` launches of its whole sequence.
void bench_classifier_head(int batch, const Timing& timing, cudaStream_t stream, const std::int64_t* step,
                           std::vector<HeadRow>& table) {
  constexpr int kIn = 512;
  mnist::CublasHandle handle(stream);
  const std::size_t n_x = static_cast<std::size_t>(batch) * kIn, n_l = static_cast<std::size_t>(batch) * kClassCount;
  DeviceBuffer<float> x(n_x), w(static_cast<std::size_t>(kIn) * kClassCount), b(kClassCount), logits(n_l), loss(batch),
      dl(n_l), dw(static_cast<std::size_t>(kIn) * kClassCount), db(kClassCount), z(n_x), bz(kIn), dz(n_x), dbz(kIn);
  DeviceBuffer<std::uint8_t> labels(batch);
  DeviceBuffer<mnist::EvalTotals> totals(1);
  DeviceBuffer<mnist::SoftmaxCeScratch> scratch(1);
  scratch.fill_bytes(0);
  totals.fill_bytes(0);
  fill_uniform(x, 0.f, 1.f, 18, stream);
  fill_uniform(w, -0.1f, 0.1f, 19, stream);
  fill_uniform(b, -0.1f, 0.1f, 20, stream);
  fill_uniform(z, -1.f, 1.f, 21, stream);
  fill_uniform(bz, -0.1f, 0.1f, 22, stream);
  fill_below(labels, kClassCount, 23, stream);
  const mnist::SoftmaxCeTraining training{totals.data(), scratch.data(), nullptr, nullptr};
  const float fused_forward = median_ms(stream, timing, [&] {
    mnist::gpu::classifier_head_forward(x.data(), w.data(), b.data(), logits.data(), labels.data(), loss.data(),
                                        dl.data(), batch, kIn, kClassCount, 0.f, stream, training);
  });
  const float separate_forward = median_ms(stream, timing, [&] {
    mnist::gpu::dense_forward(handle.get(), x.data(), w.data(), logits.data(), batch, kIn, kClassCount);
    mnist::gpu::bias_relu_dropout_forward(logits.data(), b.data(), logits.data(), batch, kClassCount, false,
                                          mnist::DropoutKey{}, step, stream);
    mnist::gpu::softmax_cross_entropy(logits.data(), labels.data(), loss.data(), dl.data(), batch, kClassCount, 0.f,
                                      stream, training);
  });
  table.push_back({"forward", batch, fused_forward, separate_forward, 3});

  const mnist::DropoutKey key{1234, 1, 0.2f};
  const mnist::HiddenBelow below{z.data(), bz.data(), key, dz.data(), dbz.data()};
  const float fused_backward = median_ms(stream, timing, [&] {
    mnist::gpu::classifier_head_backward(x.data(), dl.data(), w.data(), dw.data(), db.data(), batch, kIn, kClassCount,
                                         stream, &below, step);
  });
  const float separate_backward = median_ms(stream, timing, [&] {
    mnist::gpu::dense_backward_weights(handle.get(), x.data(), dl.data(), dw.data(), batch, kIn, kClassCount);
    mnist::gpu::bias_grad(dl.data(), db.data(), batch, kClassCount, stream);
    mnist::gpu::dense_backward_input(handle.get(), dl.data(), w.data(), dz.data(), batch, kIn, kClassCount);
    mnist::gpu::bias_relu_dropout_backward(dz.data(), z.data(), bz.data(), dz.data(), batch, kIn, true, key, step,
                                           stream);
    mnist::gpu::bias_grad(dz.data(), dbz.data(), batch, kIn, stream);
  });
  table.push_back({"backward (dropout 0.2 below)", batch, fused_backward, separate_backward, 5});
}

// --- cuDNN convolutions: NCHW against NHWC ----------------------------------------------------

struct ConvRow {
  std::string layer, direction, layout, math, algo;
  float ms;
  double flops;
};

// Owners for the descriptors the layout rows need (kernels/conv2d.cu keeps its own, NCHW only).
template <class Desc, cudnnStatus_t (*Destroy)(Desc)>
class CudnnDesc {
 public:
  explicit CudnnDesc(cudnnStatus_t (*create)(Desc*)) { MNIST_CHECK(create(&desc_)); }
  ~CudnnDesc() { Destroy(desc_); }
  CudnnDesc(const CudnnDesc&) = delete;
  CudnnDesc& operator=(const CudnnDesc&) = delete;
  Desc get() const { return desc_; }

 private:
  Desc desc_{};
};
using TensorDesc = CudnnDesc<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor>;
using FilterDesc = CudnnDesc<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor>;
using ConvDesc = CudnnDesc<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor>;

constexpr std::size_t kConvWorkspaceLimit = std::size_t(256) << 20;

// The candidate gpu::Conv2d would take (its rules: mnist::gpu::conv_candidate_usable). Null
// when none qualifies.
template <class Perf>
const Perf* first_usable(const std::vector<Perf>& ranked, mnist::GemmMath math) {
  for (const Perf& p : ranked)
    if (mnist::gpu::conv_candidate_usable(p.status, p.determinism, p.memory, p.mathType, math, kConvWorkspaceLimit))
      return &p;
  return nullptr;
}

void bench_conv_layer(const char* layer, int batch, int in_c, int hw, int out_c, int k, const Timing& timing,
                      cudaStream_t stream, std::vector<ConvRow>& table) {
  mnist::CudnnHandle handle(stream);
  const std::size_t x_size = std::size_t(batch) * in_c * hw * hw, y_size = std::size_t(batch) * out_c * hw * hw,
                    w_size = std::size_t(out_c) * in_c * k * k;
  DeviceBuffer<float> x(x_size), y(y_size), dy(y_size), dx(x_size), w(w_size), dw(w_size);
  fill_uniform(x, 0.f, 1.f, 21, stream);
  fill_uniform(w, -0.05f, 0.05f, 22, stream);
  fill_uniform(dy, -1e-3f, 1e-3f, 23, stream);
  const double flops = 2.0 * batch * out_c * hw * hw * in_c * k * k;  // per direction, 'same' padding
  const float one = 1.f, zero = 0.f;

  for (const cudnnTensorFormat_t format : {CUDNN_TENSOR_NCHW, CUDNN_TENSOR_NHWC}) {
    for (const bool fp32 : {true, false}) {
      TensorDesc x_desc(cudnnCreateTensorDescriptor), y_desc(cudnnCreateTensorDescriptor);
      FilterDesc w_desc(cudnnCreateFilterDescriptor);
      ConvDesc conv(cudnnCreateConvolutionDescriptor);
      MNIST_CHECK(cudnnSetTensor4dDescriptor(x_desc.get(), format, CUDNN_DATA_FLOAT, batch, in_c, hw, hw));
      MNIST_CHECK(cudnnSetTensor4dDescriptor(y_desc.get(), format, CUDNN_DATA_FLOAT, batch, out_c, hw, hw));
      MNIST_CHECK(cudnnSetFilter4dDescriptor(w_desc.get(), CUDNN_DATA_FLOAT, format, out_c, in_c, k, k));
      MNIST_CHECK(cudnnSetConvolution2dDescriptor(conv.get(), k / 2, k / 2, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                                  CUDNN_DATA_FLOAT));
      const mnist::GemmMath math_kind = fp32 ? mnist::GemmMath::kFp32 : mnist::GemmMath::kTf32;
      const cudnnMathType_t ranking_math = mnist::gpu::conv_ranking_math(math_kind);
      MNIST_CHECK(cudnnSetConvolutionMathType(conv.get(), ranking_math));
      const std::string layout = format == CUDNN_TENSOR_NCHW ? "NCHW" : "NHWC", math = fp32 ? "fp32" : "tf32";
      // One direction: rank, pick, size the workspace, time; a row says when nothing qualified.
      auto time_direction = [&](const char* direction, auto ranked, auto workspace_size, auto call) {
        const auto* chosen = first_usable(ranked, math_kind);
        if (chosen == nullptr) {
          table.push_back({layer, direction, layout, math, "none usable", -1.f, flops});
          return;
        }
        MNIST_CHECK(cudnnSetConvolutionMathType(conv.get(), mnist::gpu::conv_run_math(math_kind, chosen->mathType)));
        std::size_t bytes = 0;
        MNIST_CHECK(workspace_size(chosen->algo, &bytes));
        DeviceBuffer<unsigned char> workspace(std::max<std::size_t>(bytes, 1));
        const float ms = median_ms(stream, timing, [&] { MNIST_CHECK(call(chosen->algo, workspace, bytes)); });
        // The next direction is ranked under the math this row asks for, not the one just chosen.
        MNIST_CHECK(cudnnSetConvolutionMathType(conv.get(), ranking_math));
        table.push_back({layer, direction, layout, math, std::to_string(static_cast<int>(chosen->algo)), ms, flops});
      };
      int count = 0;
      {
        std::vector<cudnnConvolutionFwdAlgoPerf_t> ranked(CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
        MNIST_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle.get(), x_desc.get(), w_desc.get(), conv.get(),
                                                           y_desc.get(), int(ranked.size()), &count, ranked.data()));
        ranked.resize(std::size_t(std::max(count, 0)));
        time_direction(
            "forward", ranked,
            [&](cudnnConvolutionFwdAlgo_t algo, std::size_t* bytes) {
              return cudnnGetConvolutionForwardWorkspaceSize(handle.get(), x_desc.get(), w_desc.get(), conv.get(),
                                                             y_desc.get(), algo, bytes);
            },
            [&](cudnnConvolutionFwdAlgo_t algo, DeviceBuffer<unsigned char>& ws, std::size_t bytes) {
              return cudnnConvolutionForward(handle.get(), &one, x_desc.get(), x.data(), w_desc.get(), w.data(),
                                             conv.get(), algo, ws.data(), bytes, &zero, y_desc.get(), y.data());
            });
      }
      {
        std::vector<cudnnConvolutionBwdDataAlgoPerf_t> ranked(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
        MNIST_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle.get(), w_desc.get(), y_desc.get(), conv.get(),
                                                                x_desc.get(), int(ranked.size()), &count,
                                                                ranked.data()));
        ranked.resize(std::size_t(std::max(count, 0)));
        time_direction(
            "backward data", ranked,
            [&](cudnnConvolutionBwdDataAlgo_t algo, std::size_t* bytes) {
              return cudnnGetConvolutionBackwardDataWorkspaceSize(handle.get(), w_desc.get(), y_desc.get(),
                                                                  conv.get(), x_desc.get(), algo, bytes);
            },
            [&](cudnnConvolutionBwdDataAlgo_t algo, DeviceBuffer<unsigned char>& ws, std::size_t bytes) {
              return cudnnConvolutionBackwardData(handle.get(), &one, w_desc.get(), w.data(), y_desc.get(),
                                                  dy.data(), conv.get(), algo, ws.data(), bytes, &zero,
                                                  x_desc.get(), dx.data());
            });
      }
      {
        std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> ranked(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
        MNIST_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle.get(), x_desc.get(), y_desc.get(),
                                                                  conv.get(), w_desc.get(), int(ranked.size()),
                                                                  &count, ranked.data()));
        ranked.resize(std::size_t(std::max(count, 0)));
        time_direction(
            "backward filter", ranked,
            [&](cudnnConvolutionBwdFilterAlgo_t algo, std::size_t* bytes) {
              return cudnnGetConvolutionBackwardFilterWorkspaceSize(handle.get(), x_desc.get(), y_desc.get(),
                                                                    conv.get(), w_desc.get(), algo, bytes);
            },
            [&](cudnnConvolutionBwdFilterAlgo_t algo, DeviceBuffer<unsigned char>& ws, std::size_t bytes) {
              return cudnnConvolutionBackwardFilter(handle.get(), &one, x_desc.get(), x.data(), y_desc.get(),
                                                    dy.data(), conv.get(), algo, ws.data(), bytes, &zero,
                                                    w_desc.get(), dw.data());
            });
      }
    }
  }
}

int run(const Timing& timing) {
  int device = 0;
  MNIST_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  MNIST_CHECK(cudaGetDeviceProperties(&prop, device));
  std::printf("# bench_kernels on %s (sm_%d%d), median of %d samples after %d warm-up launches\n\n", prop.name,
              prop.major, prop.minor, timing.repeats, timing.warmup);

  mnist::Stream stream;
  DeviceBuffer<std::int64_t> step(std::vector<std::int64_t>{kFirstStep});
  // A resident training set for the gather: 60000 uint8 images and labels.
  DeviceBuffer<std::uint8_t> images(static_cast<std::size_t>(kTrainImages) * kPixels), labels(kTrainImages);
  fill_below(images, 256, 16, stream.get());
  fill_below(labels, kClassCount, 17, stream.get());
  stream.synchronize();

  const Row copy = bench_copy(std::size_t{1} << 30, timing, stream.get());
  std::vector<Row> table;
  const int big_rows = 65536, hidden = 512, train_batch = 128;
  const int big_logit_rows = 1 << 21;
  bench_bias_relu_dropout(big_rows, hidden, timing, stream.get(), step.data(), table);
  bench_bias_relu_dropout(train_batch, hidden, timing, stream.get(), step.data(), table);
  bench_bias_grad(big_rows, hidden, timing, stream.get(), table);
  bench_bias_grad(train_batch, hidden, timing, stream.get(), table);
  bench_gather(big_rows, images, labels, timing, stream.get(), table);
  bench_gather(train_batch, images, labels, timing, stream.get(), table);
  for (const bool elastic : {false, true}) {
    bench_gather_augmented(big_rows, elastic, images, labels, timing, stream.get(), table);
    bench_gather_augmented(train_batch, elastic, images, labels, timing, stream.get(), table);
  }
  bench_softmax_ce(big_logit_rows, timing, stream.get(), table);
  bench_softmax_ce(train_batch, timing, stream.get(), table);
  bench_adam(std::size_t{1} << 26, timing, stream.get(), step.data(), table);
  bench_adam(kMlpParams, timing, stream.get(), step.data(), table);
  bench_eval_metrics(big_logit_rows, timing, stream.get(), table);
  bench_eval_metrics(10000, timing, stream.get(), table);

  const double copy_rate = gigabytes_per_s(copy.bytes, copy.ms);
  std::printf("| kernel | size | median ms | GB/s | of copy |\n|---|---|---:|---:|---:|\n");
  std::printf("| %s | %s | %.4f | %.0f | 1.00 |\n", copy.kernel.c_str(), copy.size.c_str(), copy.ms, copy_rate);
  for (const Row& row : table) {
    const double rate = gigabytes_per_s(row.bytes, row.ms);
    std::printf("| %s | %s | %.4f | %.0f | %.2f |\n", row.kernel.c_str(), row.size.c_str(), row.ms, rate,
                rate / copy_rate);
  }

  std::vector<GemmRow> gemms;
  bench_gemms(train_batch, timing, stream.get(), gemms);
  std::printf("\n| cuBLAS GEMM (batch %d) | shape | fp32 ms | fp32 TFLOP/s | tf32 ms | tf32 TFLOP/s |\n"
              "|---|---|---:|---:|---:|---:|\n",
              train_batch);
  for (const GemmRow& g : gemms)
    std::printf("| %s | %s | %.4f | %.2f | %.4f | %.2f |\n", g.op.c_str(), g.shape.c_str(), g.ms_fp32,
                g.flops / (g.ms_fp32 * 1e-3) / 1e12, g.ms_tf32, g.flops / (g.ms_tf32 * 1e-3) / 1e12);

  std::vector<HeadRow> heads;
  bench_classifier_head(train_batch, timing, stream.get(), step.data(), heads);
  bench_classifier_head(1024, timing, stream.get(), step.data(), heads);
  std::printf("\n| classifier head (512 -> 10) | batch | fused ms (1 launch) | separate ops ms | separate launches |\n"
              "|---|---:|---:|---:|---:|\n");
  for (const HeadRow& h : heads)
    std::printf("| %s | %d | %.4f | %.4f | %d |\n", h.pass.c_str(), h.batch, h.fused_ms, h.separate_ms,
                h.separate_launches);

  // The default CNN's convolutions: 5x5, 'same' padding, 28x28 then 14x14 (after the pool).
  std::vector<ConvRow> convs;
  bench_conv_layer("conv1 1->32 28x28", train_batch, 1, 28, 32, 5, timing, stream.get(), convs);
  bench_conv_layer("conv2 32->64 14x14", train_batch, 32, 14, 64, 5, timing, stream.get(), convs);
  std::printf("\n| cuDNN conv (batch %d, 5x5) | direction | layout | math | algo | ms | TFLOP/s |\n"
              "|---|---|---|---|---:|---:|---:|\n",
              train_batch);
  for (const ConvRow& c : convs) {
    if (c.ms < 0) {
      std::printf("| %s | %s | %s | %s | %s | - | - |\n", c.layer.c_str(), c.direction.c_str(), c.layout.c_str(),
                  c.math.c_str(), c.algo.c_str());
      continue;
    }
    std::printf("| %s | %s | %s | %s | %s | %.4f | %.2f |\n", c.layer.c_str(), c.direction.c_str(),
                c.layout.c_str(), c.math.c_str(), c.algo.c_str(), c.ms, c.flops / (c.ms * 1e-3) / 1e12);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Timing timing;
  if (argc > 1) {
    timing.repeats = std::atoi(argv[1]);
    if (timing.repeats < 1) {
      std::fprintf(stderr, "usage: %s [repeats >= 1]\n", argv[0]);
      return 2;
    }
  }
  if (mnist::cuda_device_count() == 0) {
    std::printf("bench_kernels: no CUDA device or driver on this machine (%s); nothing to measure\n",
                mnist::cuda_device_absence().c_str());
    return 1;
  }
  try {
    return run(timing);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_kernels: %s\n", error.what());
    return 1;
  }
}
