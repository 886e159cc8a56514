// The GPU emulator's cuDNN (tests/emu/README.md): the legacy convolution API as
// kernels/conv2d.cu calls it (NCHW fp32, 2-D, stride 1, no dilation, cross-correlation), with
// direct loops written apart from the CPU twin's im2col (built with -O2 and without
// sanitizers even in the asan preset: they are test infrastructure, and their operands are
// checked against the device allocations before they run). The heuristics offer candidates the way
// cuDNN's do, best first: a tensor-core one unless the descriptor asks for FMA math, a
// non-deterministic one for the filter gradient and one that failed, each with a workspace, so
// the caller's choice and its workspace are exercised. Calls check shapes, the workspace and
// that every pointer lies inside device memory. Tensor-core math rounds the inputs to TF32;
// TENSOR_OP_MATH_ALLOW_CONVERSION, which lets cuDNN convert fp32 data to fp16, rounds them to
// fp16 (offered first, so that a caller that takes it shows in its accuracy).
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <cudnn.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "emu_internal.h"

struct cudnnContext {
  cudaStream_t stream = nullptr;
};
struct cudnnTensorStruct {
  bool set = false;
  int n = 0, c = 0, h = 0, w = 0;
};
struct cudnnFilterStruct {
  bool set = false;
  int k = 0, c = 0, h = 0, w = 0;
};
struct cudnnConvolutionStruct {
  bool set = false;
  int pad_h = 0, pad_w = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

namespace {

constexpr std::size_t kPrecompWorkspace = 4096;  // what the emulated "fast" algorithms ask for

bool tensor_core_math(const cudnnConvolutionStruct* conv) { return conv->math != CUDNN_FMA_MATH; }

// What the inputs of a convolution are rounded to before the fp32 loops.
enum class Precision { kFp32, kTf32, kFp16 };
Precision precision(const cudnnConvolutionStruct* conv) {
  if (!tensor_core_math(conv)) return Precision::kFp32;
  return conv->math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ? Precision::kFp16 : Precision::kTf32;
}

std::size_t elements(const cudnnTensorStruct* t) { return std::size_t(t->n) * t->c * t->h * t->w; }
std::size_t elements(const cudnnFilterStruct* f) { return std::size_t(f->k) * f->c * f->h * f->w; }

// The geometry of one convolution call, checked against the descriptors.
struct Geometry {
  int n, c, h, w, k, r, s, oh, ow, pad_h, pad_w;
  Precision precision;
};

bool geometry(const cudnnTensorStruct* x, const cudnnFilterStruct* f, const cudnnConvolutionStruct* conv,
              const cudnnTensorStruct* y, Geometry* g) {
  if (!x || !f || !conv || !y || !x->set || !f->set || !conv->set || !y->set) return false;
  const int oh = x->h + 2 * conv->pad_h - f->h + 1, ow = x->w + 2 * conv->pad_w - f->w + 1;
  if (x->c != f->c || y->n != x->n || y->c != f->k || y->h != oh || y->w != ow || oh <= 0 || ow <= 0) return false;
  *g = Geometry{x->n, x->c, x->h, x->w, f->k, f->h, f->w, oh, ow, conv->pad_h, conv->pad_w, precision(conv)};
  return true;
}

bool device(const void* p, std::size_t count) { return emu::is_device_range(p, count * sizeof(float)); }

// The workspace each emulated algorithm asks for: what the *WorkspaceSize calls report and
// what the convolution calls then require.
std::size_t workspace_for(cudnnConvolutionFwdAlgo_t algo) {
  return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ? kPrecompWorkspace : 0;
}
std::size_t workspace_for(cudnnConvolutionBwdDataAlgo_t algo) {
  return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 ? kPrecompWorkspace : 0;
}
std::size_t workspace_for(cudnnConvolutionBwdFilterAlgo_t algo) {
  return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ? kPrecompWorkspace : 0;
}

// A convolution call's workspace is large enough and in device memory, and so are its three
// operands of `count` floats each; else the call is reported and refused.
struct Operand {
  const void* data;
  std::size_t count;
};
bool operands_ok(const char* call, const void* workspace, std::size_t bytes, std::size_t needed,
                 std::initializer_list<Operand> operands) {
  bool ok = bytes >= needed && (bytes == 0 || emu::is_device_range(workspace, bytes));
  for (const Operand& o : operands) ok = ok && device(o.data, o.count);
  if (!ok) emu::report(std::string(call) + ": workspace too small or an operand outside device memory");
  return ok;
}

std::vector<float> rounded(const float* data, std::size_t count, Precision precision) {
  std::vector<float> out(data, data + count);
  if (precision == Precision::kTf32)
    for (float& v : out) v = emu::to_tf32(v);
  if (precision == Precision::kFp16)  // 5 exponent bits: small values go subnormal or to zero
    for (float& v : out) v = static_cast<float>(static_cast<_Float16>(v));
  return out;
}

// out = alpha·value + beta·out, where beta 0 never reads out (it may hold NaN).
inline void blend(float& out, float value, float alpha, float beta) {
  out = beta == 0.f ? alpha * value : alpha * value + beta * out;
}

// emu::Fault::kTensorOpMathRefused: a convolution call under TENSOR_OP_MATH is refused.
bool refused(const char* call, const cudnnConvolutionStruct* conv) {
  if (emu::injected_fault() != emu::Fault::kTensorOpMathRefused || conv->math != CUDNN_TENSOR_OP_MATH) return false;
  emu::report(std::string("injected: ") + call + " refuses CUDNN_TENSOR_OP_MATH (CUDNN_STATUS_NOT_SUPPORTED)");
  return true;
}

cudnnStatus_t submit(cudnnHandle_t handle, std::function<void()> work) {
  const auto counted = [work = std::move(work)] {
    emu::count_launch();
    work();
  };
  return emu::submit(handle->stream, counted) == cudaSuccess ? CUDNN_STATUS_SUCCESS
                                                                     : CUDNN_STATUS_EXECUTION_FAILED;
}

// One candidate of a heuristics list, with the workspace its algorithm asks for.
template <class Perf, class Algo>
void offer(Perf* results, int requested, int* returned, Algo algo, cudnnStatus_t status,
           cudnnDeterminism_t determinism, cudnnMathType_t math) {
  if (*returned >= requested) return;
  Perf& p = results[(*returned)++];
  p = Perf{};
  p.algo = algo;
  p.status = status;
  p.time = -1.f;
  p.memory = workspace_for(algo);
  p.determinism = determinism;
  p.mathType = math;
}

}  // namespace

extern "C" {

cudnnStatus_t CUDNNWINAPI cudnnCreate(cudnnHandle_t* handle) {
  if (!emu::device_present()) return CUDNN_STATUS_NOT_INITIALIZED;
  *handle = new cudnnContext;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnDestroy(cudnnHandle_t handle) {
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnGetStream(cudnnHandle_t handle, cudaStream_t* stream) {
  if (!handle || !stream) return CUDNN_STATUS_BAD_PARAM;
  *stream = handle->stream;
  return CUDNN_STATUS_SUCCESS;
}

const char* CUDNNWINAPI cudnnGetErrorString(cudnnStatus_t status) {
  switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
    default: return "CUDNN_STATUS_UNKNOWN (emulated)";
  }
}

// ---- descriptors ----

cudnnStatus_t CUDNNWINAPI cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* desc) {
  *desc = new cudnnTensorStruct;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t desc, cudnnTensorFormat_t format,
                                                     cudnnDataType_t type, int n, int c, int h, int w) {
  if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
  if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
  *desc = cudnnTensorStruct{true, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* desc) {
  *desc = new cudnnFilterStruct;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t desc, cudnnDataType_t type,
                                                     cudnnTensorFormat_t format, int k, int c, int h, int w) {
  if (k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
  if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
  *desc = cudnnFilterStruct{true, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* desc) {
  *desc = new cudnnConvolutionStruct;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t desc, int pad_h, int pad_w,
                                                          int u, int v, int dilation_h, int dilation_w,
                                                          cudnnConvolutionMode_t mode, cudnnDataType_t type) {
  if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0) return CUDNN_STATUS_BAD_PARAM;
  if (u != 1 || v != 1 || dilation_h != 1 || dilation_w != 1 || mode != CUDNN_CROSS_CORRELATION ||
      type != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_NOT_SUPPORTED;
  desc->set = true;
  desc->pad_h = pad_h;
  desc->pad_w = pad_w;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t desc, cudnnMathType_t math) {
  if (!desc) return CUDNN_STATUS_BAD_PARAM;
  desc->math = math;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t conv,
                                                                const cudnnTensorDescriptor_t x,
                                                                const cudnnFilterDescriptor_t f, int* n, int* c,
                                                                int* h, int* w) {
  if (!conv || !x || !f || !conv->set || !x->set || !f->set || x->c != f->c) return CUDNN_STATUS_BAD_PARAM;
  *n = x->n;
  *c = f->k;
  *h = x->h + 2 * conv->pad_h - f->h + 1;
  *w = x->w + 2 * conv->pad_w - f->w + 1;
  return CUDNN_STATUS_SUCCESS;
}

// ---- heuristics and workspaces ----

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t, int* count) {
  *count = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t f,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y, const int requested, int* returned,
    cudnnConvolutionFwdAlgoPerf_t* results) {
  Geometry g;
  if (!geometry(x, f, conv, y, &g) || requested < 1) return CUDNN_STATUS_BAD_PARAM;
  *returned = 0;
  if (tensor_core_math(conv)) {
    offer(results, requested, returned, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_STATUS_SUCCESS,
          CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
    offer(results, requested, returned, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_STATUS_SUCCESS,
          CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH);
  }
  offer(results, requested, returned, CUDNN_CONVOLUTION_FWD_ALGO_FFT, CUDNN_STATUS_NOT_SUPPORTED,
        CUDNN_DETERMINISTIC, CUDNN_DEFAULT_MATH);
  offer(results, requested, returned, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_STATUS_SUCCESS,
        CUDNN_DETERMINISTIC, CUDNN_FMA_MATH);
  offer(results, requested, returned, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_STATUS_SUCCESS,
        CUDNN_DETERMINISTIC, CUDNN_FMA_MATH);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t, const cudnnTensorDescriptor_t x,
                                                                  const cudnnFilterDescriptor_t f,
                                                                  const cudnnConvolutionDescriptor_t conv,
                                                                  const cudnnTensorDescriptor_t y,
                                                                  cudnnConvolutionFwdAlgo_t algo, size_t* bytes) {
  Geometry g;
  if (!geometry(x, f, conv, y, &g)) return CUDNN_STATUS_BAD_PARAM;
  *bytes = workspace_for(algo);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t, int* count) {
  *count = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t, const cudnnFilterDescriptor_t f, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx, const int requested, int* returned,
    cudnnConvolutionBwdDataAlgoPerf_t* results) {
  Geometry g;
  if (!geometry(dx, f, conv, dy, &g) || requested < 1) return CUDNN_STATUS_BAD_PARAM;
  *returned = 0;
  if (tensor_core_math(conv)) {
    offer(results, requested, returned, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_STATUS_SUCCESS,
          CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
    offer(results, requested, returned, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_STATUS_SUCCESS,
          CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH);
  }
  offer(results, requested, returned, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_STATUS_SUCCESS,
        CUDNN_NON_DETERMINISTIC, CUDNN_FMA_MATH);
  offer(results, requested, returned, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_STATUS_SUCCESS,
        CUDNN_DETERMINISTIC, CUDNN_FMA_MATH);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t,
                                                                       const cudnnFilterDescriptor_t f,
                                                                       const cudnnTensorDescriptor_t dy,
                                                                       const cudnnConvolutionDescriptor_t conv,
                                                                       const cudnnTensorDescriptor_t dx,
                                                                       cudnnConvolutionBwdDataAlgo_t algo,
                                                                       size_t* bytes) {
  Geometry g;
  if (!geometry(dx, f, conv, dy, &g)) return CUDNN_STATUS_BAD_PARAM;
  *bytes = workspace_for(algo);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t, int* count) {
  *count = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t f, const int requested, int* returned,
    cudnnConvolutionBwdFilterAlgoPerf_t* results) {
  Geometry g;
  if (!geometry(x, f, conv, dy, &g) || requested < 1) return CUDNN_STATUS_BAD_PARAM;
  *returned = 0;
  offer(results, requested, returned, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_STATUS_SUCCESS,
        CUDNN_NON_DETERMINISTIC, CUDNN_FMA_MATH);
  if (tensor_core_math(conv)) {
    offer(results, requested, returned, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_STATUS_SUCCESS,
          CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
    offer(results, requested, returned, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_STATUS_SUCCESS,
          CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH);
  }
  offer(results, requested, returned, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_STATUS_SUCCESS,
        CUDNN_DETERMINISTIC, CUDNN_FMA_MATH);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t,
                                                                         const cudnnTensorDescriptor_t x,
                                                                         const cudnnTensorDescriptor_t dy,
                                                                         const cudnnConvolutionDescriptor_t conv,
                                                                         const cudnnFilterDescriptor_t f,
                                                                         cudnnConvolutionBwdFilterAlgo_t algo,
                                                                         size_t* bytes) {
  Geometry g;
  if (!geometry(x, f, conv, dy, &g)) return CUDNN_STATUS_BAD_PARAM;
  *bytes = workspace_for(algo);
  return CUDNN_STATUS_SUCCESS;
}

// ---- the computations ----

// y[n,k,i,j] = alpha·Σ_{c,r,s} x[n,c,i+r-pad,j+s-pad]·w[k,c,r,s] + beta·y
cudnnStatus_t CUDNNWINAPI cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                                  const cudnnTensorDescriptor_t x_desc, const void* x,
                                                  const cudnnFilterDescriptor_t w_desc, const void* w,
                                                  const cudnnConvolutionDescriptor_t conv,
                                                  cudnnConvolutionFwdAlgo_t algo, void* workspace,
                                                  size_t workspace_bytes, const void* beta,
                                                  const cudnnTensorDescriptor_t y_desc, void* y) {
  Geometry g;
  if (!handle || !geometry(x_desc, w_desc, conv, y_desc, &g)) return CUDNN_STATUS_BAD_PARAM;
  if (refused("cudnnConvolutionForward", conv)) return CUDNN_STATUS_NOT_SUPPORTED;
  if (!operands_ok("cudnnConvolutionForward", workspace, workspace_bytes, workspace_for(algo),
                   {{x, elements(x_desc)}, {w, elements(w_desc)}, {y, elements(y_desc)}}))
    return CUDNN_STATUS_BAD_PARAM;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const auto* px = static_cast<const float*>(x);
  const auto* pw = static_cast<const float*>(w);
  auto* py = static_cast<float*>(y);
  const std::size_t nx = elements(x_desc), nw = elements(w_desc);
  return submit(handle, [=] {
    const std::vector<float> xs = rounded(px, nx, g.precision), ws = rounded(pw, nw, g.precision);
    std::vector<float> acc(std::size_t(g.oh) * g.ow);
    for (int n = 0; n < g.n; ++n)
      for (int k = 0; k < g.k; ++k) {
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int c = 0; c < g.c; ++c)
          for (int r = 0; r < g.r; ++r)
            for (int s = 0; s < g.s; ++s) {
              const float wv = ws[((std::size_t(k) * g.c + c) * g.r + r) * g.s + s];
              const int j0 = std::max(0, g.pad_w - s), j1 = std::min(g.ow, g.w + g.pad_w - s);
              for (int i = std::max(0, g.pad_h - r); i < std::min(g.oh, g.h + g.pad_h - r); ++i) {
                const float* xrow = xs.data() + ((std::size_t(n) * g.c + c) * g.h + (i + r - g.pad_h)) * g.w;
                float* arow = acc.data() + std::size_t(i) * g.ow;
                for (int j = j0; j < j1; ++j) arow[j] += xrow[j + s - g.pad_w] * wv;
              }
            }
        float* out = &py[(std::size_t(n) * g.k + k) * g.oh * g.ow];
        for (std::size_t e = 0; e < acc.size(); ++e) blend(out[e], acc[e], a, b);
      }
  });
}

// dx[n,c,yi,xj] = alpha·Σ_{k,r,s} dy[n,k,yi-r+pad,xj-s+pad]·w[k,c,r,s] + beta·dx
cudnnStatus_t CUDNNWINAPI cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                                       const cudnnFilterDescriptor_t w_desc, const void* w,
                                                       const cudnnTensorDescriptor_t dy_desc, const void* dy,
                                                       const cudnnConvolutionDescriptor_t conv,
                                                       cudnnConvolutionBwdDataAlgo_t algo, void* workspace,
                                                       size_t workspace_bytes, const void* beta,
                                                       const cudnnTensorDescriptor_t dx_desc, void* dx) {
  Geometry g;
  if (!handle || !geometry(dx_desc, w_desc, conv, dy_desc, &g)) return CUDNN_STATUS_BAD_PARAM;
  if (refused("cudnnConvolutionBackwardData", conv)) return CUDNN_STATUS_NOT_SUPPORTED;
  if (!operands_ok("cudnnConvolutionBackwardData", workspace, workspace_bytes, workspace_for(algo),
                   {{w, elements(w_desc)}, {dy, elements(dy_desc)}, {dx, elements(dx_desc)}}))
    return CUDNN_STATUS_BAD_PARAM;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const auto* pw = static_cast<const float*>(w);
  const auto* pdy = static_cast<const float*>(dy);
  auto* pdx = static_cast<float*>(dx);
  const std::size_t nw = elements(w_desc), ndy = elements(dy_desc);
  return submit(handle, [=] {
    const std::vector<float> ws = rounded(pw, nw, g.precision), dys = rounded(pdy, ndy, g.precision);
    std::vector<float> acc(std::size_t(g.h) * g.w);
    for (int n = 0; n < g.n; ++n)
      for (int c = 0; c < g.c; ++c) {
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int k = 0; k < g.k; ++k)
          for (int r = 0; r < g.r; ++r)
            for (int s = 0; s < g.s; ++s) {
              const float wv = ws[((std::size_t(k) * g.c + c) * g.r + r) * g.s + s];
              // dy[i, j] feeds dx[i + r - pad, j + s - pad]
              const int j0 = std::max(0, g.pad_w - s), j1 = std::min(g.ow, g.w + g.pad_w - s);
              for (int i = std::max(0, g.pad_h - r); i < std::min(g.oh, g.h + g.pad_h - r); ++i) {
                const float* dyrow = dys.data() + ((std::size_t(n) * g.k + k) * g.oh + i) * g.ow;
                float* arow = acc.data() + std::size_t(i + r - g.pad_h) * g.w;
                for (int j = j0; j < j1; ++j) arow[j + s - g.pad_w] += dyrow[j] * wv;
              }
            }
        float* out = &pdx[(std::size_t(n) * g.c + c) * g.h * g.w];
        for (std::size_t e = 0; e < acc.size(); ++e) blend(out[e], acc[e], a, b);
      }
  });
}

// dw[k,c,r,s] = alpha·Σ_{n,i,j} dy[n,k,i,j]·x[n,c,i+r-pad,j+s-pad] + beta·dw
cudnnStatus_t CUDNNWINAPI cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                                         const cudnnTensorDescriptor_t x_desc, const void* x,
                                                         const cudnnTensorDescriptor_t dy_desc, const void* dy,
                                                         const cudnnConvolutionDescriptor_t conv,
                                                         cudnnConvolutionBwdFilterAlgo_t algo, void* workspace,
                                                         size_t workspace_bytes, const void* beta,
                                                         const cudnnFilterDescriptor_t dw_desc, void* dw) {
  Geometry g;
  if (!handle || !geometry(x_desc, dw_desc, conv, dy_desc, &g)) return CUDNN_STATUS_BAD_PARAM;
  if (refused("cudnnConvolutionBackwardFilter", conv)) return CUDNN_STATUS_NOT_SUPPORTED;
  if (!operands_ok("cudnnConvolutionBackwardFilter", workspace, workspace_bytes, workspace_for(algo),
                   {{x, elements(x_desc)}, {dy, elements(dy_desc)}, {dw, elements(dw_desc)}}))
    return CUDNN_STATUS_BAD_PARAM;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const auto* px = static_cast<const float*>(x);
  const auto* pdy = static_cast<const float*>(dy);
  auto* pdw = static_cast<float*>(dw);
  const std::size_t nx = elements(x_desc), ndy = elements(dy_desc);
  return submit(handle, [=] {
    const std::vector<float> xs = rounded(px, nx, g.precision), dys = rounded(pdy, ndy, g.precision);
    std::vector<float> row(std::size_t(g.ow));
    for (int k = 0; k < g.k; ++k)
      for (int c = 0; c < g.c; ++c)
        for (int r = 0; r < g.r; ++r)
          for (int s = 0; s < g.s; ++s) {
            // Per-column partial sums (vectorisable), added up at the end.
            std::fill(row.begin(), row.end(), 0.f);
            const int j0 = std::max(0, g.pad_w - s), j1 = std::min(g.ow, g.w + g.pad_w - s);
            for (int n = 0; n < g.n; ++n)
              for (int i = std::max(0, g.pad_h - r); i < std::min(g.oh, g.h + g.pad_h - r); ++i) {
                const float* dyrow = dys.data() + ((std::size_t(n) * g.k + k) * g.oh + i) * g.ow;
                const float* xrow = xs.data() + ((std::size_t(n) * g.c + c) * g.h + (i + r - g.pad_h)) * g.w;
                for (int j = j0; j < j1; ++j) row[j] += dyrow[j] * xrow[j + s - g.pad_w];
              }
            float sum = 0.f;
            for (int j = j0; j < j1; ++j) sum += row[j];
            blend(pdw[((std::size_t(k) * g.c + c) * g.r + r) * g.s + s], sum, a, b);
          }
  });
}

// db[k] = alpha·Σ_{n,i,j} dy[n,k,i,j] + beta·db   (db: 1×K×1×1)
cudnnStatus_t CUDNNWINAPI cudnnConvolutionBackwardBias(cudnnHandle_t handle, const void* alpha,
                                                       const cudnnTensorDescriptor_t dy_desc, const void* dy,
                                                       const void* beta, const cudnnTensorDescriptor_t db_desc,
                                                       void* db) {
  if (!handle || !dy_desc || !db_desc || !dy_desc->set || !db_desc->set || db_desc->n != 1 ||
      db_desc->c != dy_desc->c || db_desc->h != 1 || db_desc->w != 1)
    return CUDNN_STATUS_BAD_PARAM;
  if (!device(dy, elements(dy_desc)) || !device(db, elements(db_desc))) {
    emu::report("cudnnConvolutionBackwardBias: an operand outside device memory");
    return CUDNN_STATUS_BAD_PARAM;
  }
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const auto* pdy = static_cast<const float*>(dy);
  auto* pdb = static_cast<float*>(db);
  const cudnnTensorStruct t = *dy_desc;
  return submit(handle, [=] {
    const std::size_t plane = std::size_t(t.h) * t.w;
    for (int k = 0; k < t.c; ++k) {
      float sum = 0.f;
      for (int n = 0; n < t.n; ++n)
        for (std::size_t e = 0; e < plane; ++e) sum += pdy[(std::size_t(n) * t.c + k) * plane + e];
      blend(pdb[k], sum, a, b);
    }
  });
}

// C = alpha·A + beta·C with A broadcast over the dimensions where it has size 1 (here the bias
// 1×K×1×1 over N×K×H×W, or two tensors of one shape).
cudnnStatus_t CUDNNWINAPI cudnnAddTensor(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t a_desc,
                                         const void* A, const void* beta, const cudnnTensorDescriptor_t c_desc,
                                         void* C) {
  if (!handle || !a_desc || !c_desc || !a_desc->set || !c_desc->set) return CUDNN_STATUS_BAD_PARAM;
  const cudnnTensorStruct at = *a_desc, ct = *c_desc;
  const auto fits = [](int a, int c) { return a == c || a == 1; };
  if (!fits(at.n, ct.n) || !fits(at.c, ct.c) || !fits(at.h, ct.h) || !fits(at.w, ct.w)) return CUDNN_STATUS_BAD_PARAM;
  if (!device(A, elements(a_desc)) || !device(C, elements(c_desc))) {
    emu::report("cudnnAddTensor: an operand outside device memory");
    return CUDNN_STATUS_BAD_PARAM;
  }
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const auto* pa = static_cast<const float*>(A);
  auto* pc = static_cast<float*>(C);
  return submit(handle, [=] {
    for (int n = 0; n < ct.n; ++n)
      for (int c = 0; c < ct.c; ++c)
        for (int h = 0; h < ct.h; ++h)
          for (int w = 0; w < ct.w; ++w) {
            const float value = pa[((std::size_t(at.n == 1 ? 0 : n) * at.c + (at.c == 1 ? 0 : c)) * at.h +
                                    (at.h == 1 ? 0 : h)) * at.w + (at.w == 1 ? 0 : w)];
            blend(pc[((std::size_t(n) * ct.c + c) * ct.h + h) * ct.w + w], value, a, b);
          }
  });
}

}  // extern "C"
