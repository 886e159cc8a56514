// The convolution layer on the GPU (formulas and the API choice in include/mnist/ops/conv2d.h):
// cuDNN's legacy convolution calls, no custom kernel. A plan (gpu::Conv2d) builds the
// descriptors, picks one deterministic algorithm per direction with cuDNN's heuristics and
// allocates one workspace, all at set-up; each call afterwards is a single cuDNN call (two for
// the forward pass with a bias) on the handle's stream. The pick is the first candidate, in the
// heuristics' order, whose workspace query and one trial call on scratch operands succeed: cuDNN
// may rank an algorithm and math type first that it then refuses to run (a math mode the device
// or the build does not support), and the plan falls back then rather than the first forward
// pass failing.
#include <cudnn.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mnist/core/check.h"
#include "mnist/core/device.h"
#include "mnist/ops/conv2d.h"

namespace mnist::gpu {

// Ranked under FMA_MATH, fp32 sees only CUDA-core algorithms; under DEFAULT_MATH, TF32 sees
// tensor-core ones too.
cudnnMathType_t conv_ranking_math(GemmMath math) {
  return math == GemmMath::kFp32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
}

// It ran the heuristics successfully, is deterministic, fits the workspace limit and, for fp32,
// does not use tensor cores (a TF32 result would miss the fp32 accuracy the tests hold it to).
// Neither math takes TENSOR_OP_MATH_ALLOW_CONVERSION: it lets cuDNN convert the fp32 data to
// fp16, whose 5 exponent bits lose small gradients that TF32's 8 keep.
bool conv_candidate_usable(cudnnStatus_t status, cudnnDeterminism_t determinism, std::size_t workspace_bytes,
                           cudnnMathType_t reported, GemmMath math, std::size_t workspace_limit) {
  if (status != CUDNN_STATUS_SUCCESS || determinism != CUDNN_DETERMINISTIC || workspace_bytes > workspace_limit)
    return false;
  if (reported == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
  return !(math == GemmMath::kFp32 && reported == CUDNN_TENSOR_OP_MATH);
}

// fp32 keeps FMA_MATH on the descriptor whatever the candidate reported (cuDNN then runs only
// FMA kernels); TF32 takes the candidate's own type, as cuDNN asks (the algorithm and the math
// type together select the kernels).
cudnnMathType_t conv_run_math(GemmMath math, cudnnMathType_t reported) {
  return math == GemmMath::kFp32 ? CUDNN_FMA_MATH : reported;
}

namespace {

// ---- RAII owners of the cuDNN descriptors ------------------------------------------------------

class TensorDesc {
 public:
  TensorDesc(int n, int c, int h, int w) {
    MNIST_CHECK(cudnnCreateTensorDescriptor(&desc_));
    try {
      MNIST_CHECK(cudnnSetTensor4dDescriptor(desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w));
    } catch (...) {
      cudnnDestroyTensorDescriptor(desc_);
      throw;
    }
  }
  ~TensorDesc() {
    if (desc_) cudnnDestroyTensorDescriptor(desc_);
  }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

class FilterDesc {
 public:
  FilterDesc(int out_channels, int in_channels, int kernel) {
    MNIST_CHECK(cudnnCreateFilterDescriptor(&desc_));
    try {
      MNIST_CHECK(cudnnSetFilter4dDescriptor(desc_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, out_channels, in_channels,
                                             kernel, kernel));
    } catch (...) {
      cudnnDestroyFilterDescriptor(desc_);
      throw;
    }
  }
  ~FilterDesc() {
    if (desc_) cudnnDestroyFilterDescriptor(desc_);
  }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
  cudnnFilterDescriptor_t get() const { return desc_; }

 private:
  cudnnFilterDescriptor_t desc_ = nullptr;
};

// Stride 1, no dilation, cross-correlation, fp32 accumulation; the math type decides whether
// tensor cores (TF32) may be used.
class ConvDesc {
 public:
  ConvDesc(int pad, cudnnMathType_t math) {
    MNIST_CHECK(cudnnCreateConvolutionDescriptor(&desc_));
    try {
      MNIST_CHECK(cudnnSetConvolution2dDescriptor(desc_, pad, pad, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                                  CUDNN_DATA_FLOAT));
      set_math(math);
    } catch (...) {
      cudnnDestroyConvolutionDescriptor(desc_);
      throw;
    }
  }
  ~ConvDesc() {
    if (desc_) cudnnDestroyConvolutionDescriptor(desc_);
  }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
  cudnnConvolutionDescriptor_t get() const { return desc_; }
  void set_math(cudnnMathType_t math) { MNIST_CHECK(cudnnSetConvolutionMathType(desc_, math)); }

 private:
  cudnnConvolutionDescriptor_t desc_ = nullptr;
};

// ---- algorithm choice ------------------------------------------------------------------------------

const char* math_name(cudnnMathType_t math) {
  switch (math) {
    case CUDNN_DEFAULT_MATH: return "DEFAULT_MATH";
    case CUDNN_TENSOR_OP_MATH: return "TENSOR_OP_MATH";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "TENSOR_OP_MATH_ALLOW_CONVERSION";
    case CUDNN_FMA_MATH: return "FMA_MATH";
  }
  return "unknown math";
}

std::string algo_name(cudnnConvolutionFwdAlgo_t algo) {
  static const char* const names[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM",     "DIRECT",
                                      "FFT",           "FFT_TILING",            "WINOGRAD", "WINOGRAD_NONFUSED"};
  const int i = static_cast<int>(algo);
  return i >= 0 && i < 8 ? names[i] : "fwd algo " + std::to_string(i);
}
std::string algo_name(cudnnConvolutionBwdDataAlgo_t algo) {
  static const char* const names[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  const int i = static_cast<int>(algo);
  return i >= 0 && i < 6 ? names[i] : "bwd data algo " + std::to_string(i);
}
std::string algo_name(cudnnConvolutionBwdFilterAlgo_t algo) {
  static const char* const names[] = {"ALGO_0",   "ALGO_1",           "FFT",       "ALGO_3",
                                      "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  const int i = static_cast<int>(algo);
  return i >= 0 && i < 7 ? names[i] : "bwd filter algo " + std::to_string(i);
}

// One candidate, for the error message when none is chosen.
template <class Perf>
std::string candidate_text(const Perf& p) {
  return algo_name(p.algo) + "(" + (p.status == CUDNN_STATUS_SUCCESS ? "" : "failed, ") +
         (p.determinism == CUDNN_DETERMINISTIC ? "deterministic" : "non-deterministic") + ", " +
         std::to_string(p.memory) + " bytes, " + math_name(p.mathType) + ")";
}

// What one direction's choice ended with.
template <class Algo>
struct Choice {
  Algo algo{};
  cudnnMathType_t math{};      // the math the descriptor now holds, the one the calls run with
  std::size_t workspace = 0;   // what the workspace query answered for algo under math
  std::string refused;         // the usable candidates before it that cuDNN refused, and why
};

// The first usable entry of cuDNN's ranked list (best expected speed first) that cuDNN also
// runs: with conv set to the math the candidate would run with, query(algo, &bytes) must succeed
// within workspace_limit and trial(algo, workspace, bytes) must return CUDNN_STATUS_SUCCESS.
// The descriptor is left with the chosen candidate's math. Throws std::runtime_error, listing
// every candidate and why it was not taken, when none qualifies.
template <class Perf, class Query, class Trial>
Choice<decltype(Perf{}.algo)> choose(const char* direction, const std::vector<Perf>& ranked, GemmMath math,
                                     std::size_t workspace_limit, const Conv2dShape& s, ConvDesc& conv,
                                     Query query, Trial trial) {
  std::string seen;
  Choice<decltype(Perf{}.algo)> choice;
  for (const Perf& p : ranked) {
    seen += " " + candidate_text(p);
    if (!conv_candidate_usable(p.status, p.determinism, p.memory, p.mathType, math, workspace_limit)) continue;
    const cudnnMathType_t run = conv_run_math(math, p.mathType);
    conv.set_math(run);
    std::size_t bytes = 0;
    cudnnStatus_t status = query(p.algo, &bytes);
    std::string why;
    if (status != CUDNN_STATUS_SUCCESS) {
      why = std::string("workspace query ") + cudnnGetErrorString(status);
    } else if (bytes > workspace_limit) {
      why = "workspace query asks " + std::to_string(bytes) + " bytes";
    } else {
      DeviceBuffer<unsigned char> workspace(bytes);
      status = trial(p.algo, workspace.data(), bytes);
      if (status == CUDNN_STATUS_SUCCESS) {
        choice.algo = p.algo;
        choice.math = run;
        choice.workspace = bytes;
        return choice;
      }
      why = std::string("trial call ") + cudnnGetErrorString(status);
    }
    seen += " [" + why + "]";
    choice.refused += (choice.refused.empty() ? "" : ", ") + algo_name(p.algo) + " (" + math_name(run) + ") " + why;
  }
  throw std::runtime_error(std::string("conv2d: cuDNN offers no deterministic ") + direction +
                           " algorithm within " + std::to_string(workspace_limit) +
                           " bytes of workspace that it also runs, for " + std::to_string(s.batch) + "x" +
                           std::to_string(s.in_channels) + "x" + std::to_string(s.height) + "x" +
                           std::to_string(s.width) + ", " + std::to_string(s.out_channels) + " filters " +
                           std::to_string(s.kernel) + "x" + std::to_string(s.kernel) + " pad " +
                           std::to_string(s.pad) + "; candidates:" + seen);
}

// The trial calls' operands: scratch buffers of the plan's tensor sizes, zeroed (a trial reads
// only initialised memory) and freed once the plan is built. Each direction reads two of them
// and overwrites the third; the values do not matter, only whether cuDNN runs the call.
struct TrialOperands {
  explicit TrialOperands(const Conv2dShape& s) : x(s.x_size()), w(s.w_size()), y(s.y_size()) {
    x.fill_bytes(0);
    w.fill_bytes(0);
    y.fill_bytes(0);
  }
  DeviceBuffer<float> x, w, y;
};

}  // namespace

struct Conv2d::Plan {
  Plan(cudnnHandle_t cudnn, const Conv2dShape& s, GemmMath m)
      : handle(cudnn),
        shape(s),
        math(m),
        x(s.batch, s.in_channels, s.height, s.width),
        y(s.batch, s.out_channels, s.out_height(), s.out_width()),
        bias(1, s.out_channels, 1, 1),
        w(s.out_channels, s.in_channels, s.kernel),
        fwd_conv(s.pad, requested_math()),
        bwd_data_conv(s.pad, requested_math()),
        bwd_filter_conv(s.pad, requested_math()) {}

  cudnnMathType_t requested_math() const { return conv_ranking_math(math); }

  // The math the chosen algorithm runs with. Each direction has its own descriptor, so the three
  // choices do not overwrite one another.
  cudnnMathType_t run_math(cudnnMathType_t reported) const { return conv_run_math(math, reported); }

  cudnnHandle_t handle;
  Conv2dShape shape;
  GemmMath math;
  bool backward = true;  // false: a forward-only plan, no backward algorithms chosen
  TensorDesc x, y, bias;
  FilterDesc w;
  ConvDesc fwd_conv, bwd_data_conv, bwd_filter_conv;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo{};
  cudnnMathType_t fwd_math{}, bwd_data_math{}, bwd_filter_math{};
  std::string fwd_refused, bwd_data_refused, bwd_filter_refused;  // what the choice passed over
  DeviceBuffer<unsigned char> workspace;
};

Conv2d::Conv2d(cudnnHandle_t handle, const Conv2dShape& shape, GemmMath math, Passes passes,
               std::size_t workspace_limit) {
  validate(shape);
  if (handle == nullptr) throw std::invalid_argument("gpu::Conv2d: null cuDNN handle");
  auto plan = std::make_unique<Plan>(handle, shape, math);
  plan->backward = passes == Passes::kForwardAndBackward;
  Plan& p = *plan;

  // cuDNN's own output size must be ours (stride 1: H + 2·pad - k + 1).
  int n = 0, c = 0, h = 0, w = 0;
  MNIST_CHECK(cudnnGetConvolution2dForwardOutputDim(p.fwd_conv.get(), p.x.get(), p.w.get(), &n, &c, &h, &w));
  if (n != shape.batch || c != shape.out_channels || h != shape.out_height() || w != shape.out_width())
    throw std::logic_error("gpu::Conv2d: cuDNN's output size differs from Conv2dShape's");

  TrialOperands trial(shape);
  const float one = 1.f, zero = 0.f;
  std::size_t ws_fwd = 0, ws_data = 0, ws_filter = 0;
  {
    int max_count = 0, returned = 0;
    MNIST_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &max_count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> ranked(static_cast<std::size_t>(std::max(max_count, 1)));
    MNIST_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, p.x.get(), p.w.get(), p.fwd_conv.get(), p.y.get(),
                                                       static_cast<int>(ranked.size()), &returned, ranked.data()));
    ranked.resize(static_cast<std::size_t>(std::max(returned, 0)));
    const auto chosen = choose(
        "forward", ranked, math, workspace_limit, shape, p.fwd_conv,
        [&](cudnnConvolutionFwdAlgo_t algo, std::size_t* bytes) {
          return cudnnGetConvolutionForwardWorkspaceSize(handle, p.x.get(), p.w.get(), p.fwd_conv.get(), p.y.get(),
                                                         algo, bytes);
        },
        [&](cudnnConvolutionFwdAlgo_t algo, void* workspace, std::size_t bytes) {
          return cudnnConvolutionForward(handle, &one, p.x.get(), trial.x.data(), p.w.get(), trial.w.data(),
                                         p.fwd_conv.get(), algo, workspace, bytes, &zero, p.y.get(),
                                         trial.y.data());
        });
    p.fwd_algo = chosen.algo;
    p.fwd_math = chosen.math;
    p.fwd_refused = chosen.refused;
    ws_fwd = chosen.workspace;
  }
  if (p.backward) {
    int max_count = 0, returned = 0;
    MNIST_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &max_count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> ranked(static_cast<std::size_t>(std::max(max_count, 1)));
    MNIST_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, p.w.get(), p.y.get(), p.bwd_data_conv.get(),
                                                            p.x.get(), static_cast<int>(ranked.size()), &returned,
                                                            ranked.data()));
    ranked.resize(static_cast<std::size_t>(std::max(returned, 0)));
    const auto chosen = choose(
        "backward-data", ranked, math, workspace_limit, shape, p.bwd_data_conv,
        [&](cudnnConvolutionBwdDataAlgo_t algo, std::size_t* bytes) {
          return cudnnGetConvolutionBackwardDataWorkspaceSize(handle, p.w.get(), p.y.get(), p.bwd_data_conv.get(),
                                                              p.x.get(), algo, bytes);
        },
        [&](cudnnConvolutionBwdDataAlgo_t algo, void* workspace, std::size_t bytes) {
          return cudnnConvolutionBackwardData(handle, &one, p.w.get(), trial.w.data(), p.y.get(), trial.y.data(),
                                              p.bwd_data_conv.get(), algo, workspace, bytes, &zero, p.x.get(),
                                              trial.x.data());
        });
    p.bwd_data_algo = chosen.algo;
    p.bwd_data_math = chosen.math;
    p.bwd_data_refused = chosen.refused;
    ws_data = chosen.workspace;
  }
  if (p.backward) {
    int max_count = 0, returned = 0;
    MNIST_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &max_count));
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> ranked(static_cast<std::size_t>(std::max(max_count, 1)));
    MNIST_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, p.x.get(), p.y.get(), p.bwd_filter_conv.get(),
                                                              p.w.get(), static_cast<int>(ranked.size()), &returned,
                                                              ranked.data()));
    ranked.resize(static_cast<std::size_t>(std::max(returned, 0)));
    const auto chosen = choose(
        "backward-filter", ranked, math, workspace_limit, shape, p.bwd_filter_conv,
        [&](cudnnConvolutionBwdFilterAlgo_t algo, std::size_t* bytes) {
          return cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, p.x.get(), p.y.get(),
                                                                p.bwd_filter_conv.get(), p.w.get(), algo, bytes);
        },
        [&](cudnnConvolutionBwdFilterAlgo_t algo, void* workspace, std::size_t bytes) {
          return cudnnConvolutionBackwardFilter(handle, &one, p.x.get(), trial.x.data(), p.y.get(), trial.y.data(),
                                                p.bwd_filter_conv.get(), algo, workspace, bytes, &zero, p.w.get(),
                                                trial.w.data());
        });
    p.bwd_filter_algo = chosen.algo;
    p.bwd_filter_math = chosen.math;
    p.bwd_filter_refused = chosen.refused;
    ws_filter = chosen.workspace;
  }
  // The trials ran on the handle's stream: they finish before their scratch buffers are freed,
  // and a trial that faulted while running fails the plan here rather than a later call.
  cudaStream_t stream = nullptr;
  MNIST_CHECK(cudnnGetStream(handle, &stream));
  MNIST_CHECK(cudaStreamSynchronize(stream));
  // One workspace for all three: the calls of one plan run in stream order.
  p.workspace = DeviceBuffer<unsigned char>(std::max({ws_fwd, ws_data, ws_filter}));
  plan_ = std::move(plan);
}

Conv2d::~Conv2d() = default;
Conv2d::Conv2d(Conv2d&&) noexcept = default;
Conv2d& Conv2d::operator=(Conv2d&&) noexcept = default;

const Conv2dShape& Conv2d::shape() const { return plan_->shape; }
bool Conv2d::has_backward() const { return plan_->backward; }

std::string Conv2d::describe() const {
  const Plan& p = *plan_;
  // A direction's algorithm and math, and the candidates cuDNN refused before it, if any.
  const auto entry = [](const std::string& algo, cudnnMathType_t math, const std::string& refused) {
    return algo + " (" + math_name(math) + (refused.empty() ? "" : "; refused before it: " + refused) + ")";
  };
  const std::string backward =
      !p.backward ? ", no backward (forward-only plan)"
                  : ", backward data " + entry(algo_name(p.bwd_data_algo), p.bwd_data_math, p.bwd_data_refused) +
                        ", backward filter " +
                        entry(algo_name(p.bwd_filter_algo), p.bwd_filter_math, p.bwd_filter_refused);
  return "forward " + entry(algo_name(p.fwd_algo), p.fwd_math, p.fwd_refused) + backward + ", workspace " +
         std::to_string(p.workspace.bytes()) + " bytes";
}

namespace {
void require_backward(const Conv2d& plan, const char* call) {
  if (!plan.has_backward())
    throw std::logic_error(std::string("gpu::Conv2d::") + call + " on a forward-only plan");
}
}  // namespace

// alpha = 1, beta = 0: the output is overwritten and never read (it may hold NaN).
void Conv2d::forward(const float* x, const float* w, const float* b, float* y) {
  Plan& p = *plan_;
  const float one = 1.f, zero = 0.f;
  MNIST_CHECK(cudnnConvolutionForward(p.handle, &one, p.x.get(), x, p.w.get(), w, p.fwd_conv.get(), p.fwd_algo,
                                      p.workspace.data(), p.workspace.bytes(), &zero, p.y.get(), y));
  // y += b broadcast over n, h, w (beta = 1 reads the convolution just written).
  if (b) MNIST_CHECK(cudnnAddTensor(p.handle, &one, p.bias.get(), b, &one, p.y.get(), y));
}

void Conv2d::backward_data(const float* dy, const float* w, float* dx) {
  require_backward(*this, "backward_data");
  Plan& p = *plan_;
  const float one = 1.f, zero = 0.f;
  MNIST_CHECK(cudnnConvolutionBackwardData(p.handle, &one, p.w.get(), w, p.y.get(), dy, p.bwd_data_conv.get(),
                                           p.bwd_data_algo, p.workspace.data(), p.workspace.bytes(), &zero,
                                           p.x.get(), dx));
}

void Conv2d::backward_filter(const float* x, const float* dy, float* dw) {
  require_backward(*this, "backward_filter");
  Plan& p = *plan_;
  const float one = 1.f, zero = 0.f;
  MNIST_CHECK(cudnnConvolutionBackwardFilter(p.handle, &one, p.x.get(), x, p.y.get(), dy, p.bwd_filter_conv.get(),
                                             p.bwd_filter_algo, p.workspace.data(), p.workspace.bytes(), &zero,
                                             p.w.get(), dw));
}

// cuDNN's reduction over n, h, w. Deterministic as far as cuDNN documents it: its
// reproducibility notes name the routines that use atomics (backward filter ALGO_0/3, backward
// data ALGO_0, max-pooling backward, ...) and this is not among them. The GPU tests check it
// bit for bit.
void Conv2d::backward_bias(const float* dy, float* db) {
  require_backward(*this, "backward_bias");
  Plan& p = *plan_;
  const float one = 1.f, zero = 0.f;
  MNIST_CHECK(cudnnConvolutionBackwardBias(p.handle, &one, p.y.get(), dy, &zero, p.bias.get(), db));
}

}  // namespace mnist::gpu
