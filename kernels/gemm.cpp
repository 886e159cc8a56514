// CPU twin of the dense-layer GEMMs (see include/mnist/ops/gemm.h), row-major throughout:
//   forward       y[B,out]   = x[B,in] · W[in,out]
//   weight grad   dW[in,out] = x[B,in]^T · dy[B,out]
//   input grad    dx[B,in]   = dy[B,out] · W[in,out]^T
// CBLAS takes row-major storage directly (CblasRowMajor), so each GEMM is one call whose
// leading dimensions are the row lengths of the matrices as stored. The triple loop
// dense_forward_naive pins the convention the BLAS calls (and the GPU twin) must agree with.
#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "mnist/ops/gemm.h"

namespace mnist::twin {
namespace {

void check_dims(const char* op, int batch, int in, int out) {
  if (batch < 0 || in < 0 || out < 0)
    throw std::invalid_argument(std::string(op) + ": negative dimension (batch " + std::to_string(batch) + ", in " +
                                std::to_string(in) + ", out " + std::to_string(out) + ")");
}

// Row-major C[M,N] = op(A)[M,K] · op(B)[K,N], op = transpose where asked. An empty inner
// dimension (K = 0) is a sum of no terms: C = 0. BLAS would reject the zero leading
// dimension that comes with it, so it is handled here.
void sgemm_row_major(bool trans_a, bool trans_b, int M, int N, int K, const float* A, const float* B, float* C) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::fill(C, C + static_cast<std::size_t>(M) * N, 0.f);
    return;
  }
  const int lda = trans_a ? M : K;  // A is stored [K,M] when transposed, [M,K] otherwise
  const int ldb = trans_b ? K : N;  // B is stored [N,K] when transposed, [K,N] otherwise
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
              1.f, A, lda, B, ldb, 0.f, C, N);
}

}  // namespace

void dense_forward(const float* x, const float* w, float* y, int batch, int in, int out) {
  check_dims("twin::dense_forward", batch, in, out);
  sgemm_row_major(false, false, batch, out, in, x, w, y);
}

void dense_backward_weights(const float* x, const float* dy, float* dw, int batch, int in, int out) {
  check_dims("twin::dense_backward_weights", batch, in, out);
  sgemm_row_major(true, false, in, out, batch, x, dy, dw);
}

void dense_backward_input(const float* dy, const float* w, float* dx, int batch, int in, int out) {
  check_dims("twin::dense_backward_input", batch, in, out);
  sgemm_row_major(false, true, batch, in, out, dy, w, dx);
}

// y[b,o] = sum_k x[b,k] · W[k,o], the sum carried in double and rounded once, so the loop is
// a reference at least as accurate as the BLAS call it checks.
void dense_forward_naive(const float* x, const float* w, float* y, int batch, int in, int out) {
  check_dims("twin::dense_forward_naive", batch, in, out);
  for (int b = 0; b < batch; ++b) {
    for (int o = 0; o < out; ++o) {
      double sum = 0.0;
      for (int k = 0; k < in; ++k)
        sum += static_cast<double>(x[static_cast<std::size_t>(b) * in + k]) * w[static_cast<std::size_t>(k) * out + o];
      y[static_cast<std::size_t>(b) * out + o] = static_cast<float>(sum);
    }
  }
}

int blas_threads() { return openblas_get_num_threads(); }

}  // namespace mnist::twin
