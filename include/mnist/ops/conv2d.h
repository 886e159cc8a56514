#pragma once
// 2-D convolution layer, stride 1, zero padding `pad` on every side (pad = k/2 keeps the size
// of the image for odd k: 'same'). With o an output channel, c an input channel, (u, v) a
// position in the k×k kernel and x read as 0 outside the image:
//   forward          y[n,o,i,j]  = b[o] + sum_{c,u,v} w[o,c,u,v] · x[n,c, i+u-pad, j+v-pad]
//   backward data    dx[n,c,p,q] = sum_{o,u,v} dy[n,o, p-u+pad, q-v+pad] · w[o,c,u,v]
//   backward filter  dw[o,c,u,v] = sum_{n,i,j} dy[n,o,i,j] · x[n,c, i+u-pad, j+v-pad]
//   backward bias    db[o]       = sum_{n,i,j} dy[n,o,i,j]
// Cross-correlation (no kernel flip), as PyTorch's Conv2d and cuDNN's CUDNN_CROSS_CORRELATION;
// w is [out_channels, in_channels, k, k], the layout PyTorch stores, so weights carry over.
// Output size: (H + 2·pad - k + 1) × (W + 2·pad - k + 1).
//
// Layout: NCHW (x[n,c,h,w], row-major). The fp32 path runs on CUDA cores (CUDNN_FMA_MATH), where
// NHWC's advantage (tensor-core kernels want channels innermost) should not apply; that is
// expected, not yet measured: bench_kernels' cuDNN table times both layouts, both maths, at
// these shapes, and profiling/RESULTS.md holds what a GPU showed, once one has. NCHW makes the
// CPU twin plain loops over contiguous rows, a gathered MNIST batch [N, 784] is already an NCHW
// tensor with C = 1, and the flatten into the dense layer ([N, C·H·W]) is a no-op in PyTorch's
// flatten order.
//
// CPU twin (namespace twin): direct loops; every sum in double (float × float products are exact
// in double) and rounded once to float, so the twin is within half an ulp of the exact result
// (up to a negligible double error): a reference more accurate than any float algorithm.
//
// GPU (namespace gpu): cuDNN 9's legacy convolution API (cudnnConvolutionForward,
// cudnnConvolutionBackwardData, cudnnConvolutionBackwardFilter, cudnnConvolutionBackwardBias,
// cudnnAddTensor for the bias). It is deprecated in cuDNN 9 but present and supported there
// (cudnn_cnn.h / cudnn_ops.h; the deprecation warnings only show with CUDNN_WARN_DEPRECATED), and
// it says what we need in a few calls; the graph API needs the cudnn-frontend C++ library, which
// is not installed here, or many lines of backend descriptors. A future cuDNN 10 may drop it.
//
// Algorithms are chosen once, when a gpu::Conv2d plan is built, with cudnnGetConvolution*
// Algorithm_v7 (cuDNN's heuristics: no benchmark runs, so the choice depends only on the shape,
// the GPU and the cuDNN version; cudnnFind*AlgorithmEx times the candidates, and timing noise could
// pick a different algorithm, with different rounding, from one run to the next). Of the ranked
// candidates the plan takes the first that succeeded, is CUDNN_DETERMINISTIC (no atomics: the
// backward passes give the same bits every run; this excludes BWD_DATA_ALGO_0 and
// BWD_FILTER_ALGO_0/3) and fits the workspace limit. One workspace, the largest of the three, is
// allocated then and reused by every call. A forward-only plan (an evaluation batch) chooses the
// forward algorithm alone and sizes the workspace for it.
#include <cudnn.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>

#include "mnist/core/check.h"
#include "mnist/core/device.h"  // CudnnHandle
#include "mnist/ops/conv2d_shape.h"
#include "mnist/ops/gemm.h"  // GemmMath: the same fp32/TF32 switch as the dense layers

namespace mnist {


namespace twin {
// b may be null: no bias. Outputs are written, never read.
void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dShape& shape);
void conv2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dShape& shape);
void conv2d_backward_filter(const float* x, const float* dy, float* dw, const Conv2dShape& shape);
void conv2d_backward_bias(const float* dy, float* db, const Conv2dShape& shape);
}  // namespace twin


namespace gpu {

// A convolution layer's plan for one shape (batch size included: a last partial batch or an
// evaluation batch of another size needs its own plan). It owns the cuDNN descriptors and the
// workspace; the handle (and so the stream) is borrowed and must outlive the plan. Building a
// plan runs one trial call per direction (more when cuDNN refuses a candidate) on scratch
// buffers and waits for the handle's stream, so it belongs to set-up, never inside a graph
// capture. The calls enqueue work on the handle's stream and allocate nothing. Calls on one plan
// share its workspace, so they must run in stream order, not concurrently.
class Conv2d {
 public:
  static constexpr std::size_t kDefaultWorkspaceLimit = std::size_t{256} << 20;

  // kForwardOnly (an evaluation batch) chooses no backward algorithms and sizes the workspace
  // for the forward pass alone; its backward calls throw std::logic_error.
  enum class Passes { kForwardAndBackward, kForwardOnly };

  // math: kFp32 asks cuDNN for CUDNN_FMA_MATH (fp32 products and sums, no TF32 even on
  // Ampere/Hopper); kTf32 for CUDNN_DEFAULT_MATH, which lets it use TF32 tensor cores.
  // Per direction it takes the first deterministic candidate of cuDNN's heuristics, in their
  // order, within workspace_limit bytes, whose workspace query and trial call both succeed.
  // Throws std::invalid_argument for a bad shape, std::runtime_error when no candidate qualifies
  // (the message lists them and why each was passed over), CudaError for a failed cuDNN call.
  Conv2d(cudnnHandle_t handle, const Conv2dShape& shape, GemmMath math = GemmMath::kFp32,
         Passes passes = Passes::kForwardAndBackward, std::size_t workspace_limit = kDefaultWorkspaceLimit);
  ~Conv2d();
  Conv2d(Conv2d&&) noexcept;
  Conv2d& operator=(Conv2d&&) noexcept;
  Conv2d(const Conv2d&) = delete;
  Conv2d& operator=(const Conv2d&) = delete;

  // Device pointers, sizes as in Conv2dShape; outputs are overwritten (never accumulated) and
  // must not alias inputs. b may be null: no bias.
  void forward(const float* x, const float* w, const float* b, float* y);
  void backward_data(const float* dy, const float* w, float* dx);
  void backward_filter(const float* x, const float* dy, float* dw);
  void backward_bias(const float* dy, float* db);

  const Conv2dShape& shape() const;
  bool has_backward() const;
  // The chosen algorithms, their math and the workspace size, e.g. for a run's log.
  std::string describe() const;

 private:
  struct Plan;  // descriptors, algorithms, workspace: kernels/conv2d.cu
  std::unique_ptr<Plan> plan_;
};

// The rules a plan chooses its algorithms by, for bench_kernels' cuDNN table to choose by them
// too: the math type cuDNN ranks the candidates under, whether a ranked candidate qualifies
// (status, determinism, workspace bytes, the math type it reported), and the math type the
// chosen one then runs with.
cudnnMathType_t conv_ranking_math(GemmMath math);
bool conv_candidate_usable(cudnnStatus_t status, cudnnDeterminism_t determinism, std::size_t workspace_bytes,
                           cudnnMathType_t reported, GemmMath math, std::size_t workspace_limit);
cudnnMathType_t conv_run_math(GemmMath math, cudnnMathType_t reported);

}  // namespace gpu
}  // namespace mnist
