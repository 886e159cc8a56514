// forward   logits[r, c] = b[c] + sum_k x[r, k] W[k, c], then softmax-CE of the row (softmax_ce.cuh)
// backward  dW[k, c] = sum_r x[r, k] dl[r, c],  db[c] = sum_r dl[r, c],  and below a hidden layer
//           dz'[r, k] = (sum_c dl[r, c] W[k, c]) · mask / (1 - p) · [z'[r, k] + b'[k] > 0],  db'[k] = sum_r dz'[r, k]
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "mnist/core/check.h"
#include "mnist/ops/bias_relu_dropout.cuh"
#include "mnist/ops/classifier_head.h"
#include "mnist/ops/finite_check.cuh"
#include "mnist/ops/softmax_ce.cuh"

namespace mnist::gpu {
namespace {

// ---- forward: a team of kRowThreads threads per row, kRowsPerBlock rows a block -------------

constexpr int kRowThreads = 32;
constexpr int kRowsPerBlock = 8;
constexpr int kForwardThreads = kRowThreads * kRowsPerBlock;

// Thread j of a row's team sums x[r, k]·W[k, c] over k = j, j + 32, … for every class; the team's
// partials meet in shared memory and thread c adds them in order, after the bias, into logit c.
// Then thread 0 of the team takes the row through softmax-CE, reading the logits the team has
// just stored (visible to it after the barrier). Every thread walks the same rows loop, so the
// barriers are uniform; grid-stride beyond SoftmaxCeScratch::kMaxBlocks blocks. With totals
// (a training batch), the block's share goes into them at the end.
__global__ void __launch_bounds__(kForwardThreads)
    head_forward_kernel(const float* x, const float* w, const float* b, float* logits, const std::uint8_t* labels,
                        float* loss, float* dlogits, int rows, int in, int classes, float label_smoothing,
                        const std::int64_t* step, std::int64_t* non_finite, EvalTotals* totals,
                        SoftmaxCeScratch* scratch) {
  __shared__ float partial[kRowsPerBlock][kMaxHeadClasses][kRowThreads + 1];
  __shared__ BatchTotalsShared<kForwardThreads> totals_shared;
  const int lane = threadIdx.x % kRowThreads;
  const int team = threadIdx.x / kRowThreads;
  RowTotals t;
  for (int first = blockIdx.x * kRowsPerBlock; first < rows; first += gridDim.x * kRowsPerBlock) {
    const int r = first + team;
    float acc[kMaxHeadClasses];
#pragma unroll
    for (int c = 0; c < kMaxHeadClasses; ++c) acc[c] = 0.f;
    if (r < rows) {
      const float* xr = x + static_cast<std::size_t>(r) * in;
      for (int k = lane; k < in; k += kRowThreads) {
        const float xk = xr[k];
        const float* wk = w + static_cast<std::size_t>(k) * classes;
#pragma unroll
        for (int c = 0; c < kMaxHeadClasses; ++c)
          if (c < classes) acc[c] += xk * wk[c];
      }
    }
#pragma unroll
    for (int c = 0; c < kMaxHeadClasses; ++c) partial[team][c][lane] = acc[c];
    __syncthreads();
    if (r < rows && lane < classes) {
      float z = b[lane];
      for (int j = 0; j < kRowThreads; ++j) z += partial[team][lane][j];
      logits[static_cast<std::size_t>(r) * classes + lane] = z;
    }
    __syncthreads();
    if (r < rows && lane == 0 && labels != nullptr)
      softmax_ce_row(logits, labels, loss, dlogits, r, rows, classes, label_smoothing, t);
  }
  if (non_finite != nullptr) record_non_finite(non_finite, *step, t.code);
  if (totals != nullptr) add_to_batch_totals(t, totals_shared, totals, scratch);  // the same for the whole grid
}

// ---- backward: kTeam threads across the inputs (kColsPerThread consecutive k each) by kSlices row slices

constexpr int kColsPerThread = 4;
constexpr int kTeam = 16;
constexpr int kSlices = 8;
constexpr int kColsPerBlock = kColsPerThread * kTeam;
constexpr int kPerThread = kColsPerThread * (kMaxHeadClasses + 1);  // dW's rows and db' of its columns

// A thread owns inputs k0..k0+3: it keeps their rows of W and sums, over its rows r = slice,
// slice + kSlices, … in order, x[r, k]·dl[r, c] into dW and, below a hidden layer, the ReLU-dropout
// backward of (dl·W^T)[r, k] into dz' (stored) and db'. Slice 0 then adds the slices in order.
// Block 0 also sums db (the columns of dl) by the same slices. Deterministic; any `in`.
__global__ void __launch_bounds__(kTeam* kSlices)
    head_backward_kernel(const float* x, const float* dl, const float* w, float* dw, float* db, int rows, int in,
                         int classes, const float* z_below, const float* bias_below, float* dz_below,
                         float* db_below, DropoutArgs d, const std::int64_t* step_ptr) {
  __shared__ float partial[kSlices][kTeam][kPerThread];
  __shared__ float bias_partial[kSlices][kMaxHeadClasses];
  const bool below = z_below != nullptr;
  const std::uint64_t step = below ? read_step(d, step_ptr) : 0;
  const int k0 = (blockIdx.x * kTeam + threadIdx.x) * kColsPerThread;

  float gw[kColsPerThread][kMaxHeadClasses], gb[kColsPerThread], wk[kColsPerThread][kMaxHeadClasses],
      bb[kColsPerThread];
#pragma unroll
  for (int i = 0; i < kColsPerThread; ++i) {
    const bool live = k0 + i < in;
    gb[i] = 0.f;
    bb[i] = live && below ? bias_below[k0 + i] : 0.f;
#pragma unroll
    for (int c = 0; c < kMaxHeadClasses; ++c) {
      gw[i][c] = 0.f;
      wk[i][c] = live && below && c < classes ? w[static_cast<std::size_t>(k0 + i) * classes + c] : 0.f;
    }
  }
  KeepBitCache keep;
  for (int r = threadIdx.y; r < rows; r += kSlices) {
    float dlr[kMaxHeadClasses];
#pragma unroll
    for (int c = 0; c < kMaxHeadClasses; ++c) dlr[c] = c < classes ? dl[static_cast<std::size_t>(r) * classes + c] : 0.f;
    const std::size_t row = static_cast<std::size_t>(r) * in;
#pragma unroll
    for (int i = 0; i < kColsPerThread; ++i) {
      if (k0 + i >= in) break;
      const std::size_t e = row + k0 + i;
      const float xk = x[e];
#pragma unroll
      for (int c = 0; c < kMaxHeadClasses; ++c)
        if (c < classes) gw[i][c] += xk * dlr[c];
      if (below) {
        float dh = 0.f;
#pragma unroll
        for (int c = 0; c < kMaxHeadClasses; ++c)
          if (c < classes) dh += dlr[c] * wk[i][c];
        const float v = backward_one(dh, z_below[e], bb[i], keep.bit(d, step, e), true, d.scale);
        dz_below[e] = v;
        gb[i] += v;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kColsPerThread; ++i) {
#pragma unroll
    for (int c = 0; c < kMaxHeadClasses; ++c) partial[threadIdx.y][threadIdx.x][i * kMaxHeadClasses + c] = gw[i][c];
    partial[threadIdx.y][threadIdx.x][kColsPerThread * kMaxHeadClasses + i] = gb[i];
  }
  // The output bias: block 0's threads x < classes sum column x of dl over the slice's rows.
  if (blockIdx.x == 0 && threadIdx.x < classes) {
    float sum = 0.f;
    for (int r = threadIdx.y; r < rows; r += kSlices) sum += dl[static_cast<std::size_t>(r) * classes + threadIdx.x];
    bias_partial[threadIdx.y][threadIdx.x] = sum;
  }
  __syncthreads();
  if (threadIdx.y != 0) return;
  for (int i = 0; i < kColsPerThread; ++i) {
    if (k0 + i >= in) break;
    for (int c = 0; c < classes; ++c) {
      float sum = partial[0][threadIdx.x][i * kMaxHeadClasses + c];
      for (int s = 1; s < kSlices; ++s) sum += partial[s][threadIdx.x][i * kMaxHeadClasses + c];
      dw[static_cast<std::size_t>(k0 + i) * classes + c] = sum;
    }
    if (below) {
      float sum = partial[0][threadIdx.x][kColsPerThread * kMaxHeadClasses + i];
      for (int s = 1; s < kSlices; ++s) sum += partial[s][threadIdx.x][kColsPerThread * kMaxHeadClasses + i];
      db_below[k0 + i] = sum;
    }
  }
  if (blockIdx.x == 0 && threadIdx.x < classes) {
    float sum = bias_partial[0][threadIdx.x];
    for (int s = 1; s < kSlices; ++s) sum += bias_partial[s][threadIdx.x];
    db[threadIdx.x] = sum;
  }
}

void check_classes(int classes) {
  if (classes < 1 || classes > kMaxHeadClasses)
    throw std::invalid_argument("classifier_head: classes must be in 1..16");
}

}  // namespace

void classifier_head_forward(const float* x, const float* w, const float* b, float* logits,
                             const std::uint8_t* labels, float* loss, float* dlogits, int rows, int in, int classes,
                             float label_smoothing, cudaStream_t stream, const SoftmaxCeTraining& training) {
  check_classes(classes);
  if (training.non_finite != nullptr && training.step == nullptr)
    throw std::invalid_argument("classifier_head_forward: the divergence flag needs the step counter");
  if (training.totals != nullptr && training.scratch == nullptr)
    throw std::invalid_argument("classifier_head_forward: the batch totals need their scratch");
  if (training.totals != nullptr && labels == nullptr)
    throw std::invalid_argument("classifier_head_forward: the batch totals need labels");
  if (rows <= 0) return;
  const int blocks = std::min((rows + kRowsPerBlock - 1) / kRowsPerBlock, SoftmaxCeScratch::kMaxBlocks);
  head_forward_kernel<<<blocks, kForwardThreads, 0, stream>>>(x, w, b, logits, labels, loss, dlogits, rows, in,
                                                              classes, label_smoothing, training.step,
                                                              training.non_finite, training.totals, training.scratch);
  MNIST_CHECK_LAUNCH();
}

void classifier_head_backward(const float* x, const float* dlogits, const float* w, float* dw, float* db, int rows,
                              int in, int classes, cudaStream_t stream, const HiddenBelow* below,
                              const std::int64_t* step) {
  check_classes(classes);
  if (in < 1) throw std::invalid_argument("classifier_head_backward: the layer needs at least one input");
  const DropoutArgs d = below != nullptr ? dropout_args(below->key) : DropoutArgs{};
  if (below != nullptr && d.threshold != 0 && step == nullptr)
    throw std::invalid_argument("classifier_head_backward: dropout below needs the step counter");
  const int blocks = (in + kColsPerBlock - 1) / kColsPerBlock;
  head_backward_kernel<<<blocks, dim3(kTeam, kSlices), 0, stream>>>(
      x, dlogits, w, dw, db, rows < 0 ? 0 : rows, in, classes, below ? below->z : nullptr,
      below ? below->bias : nullptr, below ? below->dz : nullptr, below ? below->db : nullptr, d, step);
  MNIST_CHECK_LAUNCH();
}

}  // namespace mnist::gpu
