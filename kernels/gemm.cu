// The three GEMMs of a dense layer on the GPU (see include/mnist/ops/gemm.h), row-major:
//   forward       y[B,out]   = x[B,in] · W[in,out]
//   weight grad   dW[in,out] = x[B,in]^T · dy[B,out]
//   input grad    dx[B,in]   = dy[B,out] · W[in,out]^T
// No custom kernel: each is one cublasGemmEx call. cuBLAS is column-major; the translation
// from row-major is written once, in gemm_row_major below, and the three launchers only say
// which operand is transposed.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#include "mnist/core/check.h"
#include "mnist/ops/gemm.h"

namespace mnist::gpu {
namespace {

void check_dims(const char* op, int batch, int in, int out) {
  if (batch < 0 || in < 0 || out < 0)
    throw std::invalid_argument(std::string(op) + ": negative dimension (batch " + std::to_string(batch) + ", in " +
                                std::to_string(in) + ", out " + std::to_string(out) + ")");
}

cublasComputeType_t compute_type(GemmMath math) {
  // kFp32: products and sums in fp32 (as long as the handle's math mode is the default and
  // NVIDIA_TF32_OVERRIDE is not set). kTf32: cuBLAS may round the inputs to TF32 (10-bit
  // mantissa) and use tensor cores; accumulation stays fp32.
  return math == GemmMath::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// Row-major C[M,N] = op(A)[M,K] · op(B)[K,N], op = transpose where asked.
//
// The swap. A row-major [r,c] matrix is, byte for byte, a column-major [c,r] matrix: its
// transpose. So in cuBLAS's column-major view the buffers hold Aᵀ, Bᵀ and Cᵀ, and
//   row-major  C = A·B   ⇔   column-major  Cᵀ = Bᵀ·Aᵀ.
// We therefore call the column-major GEMM with the operands swapped (B first, then A) and
// m = N, n = M, k = K. A transpose flag stays with its own operand: transposing before or
// after the reinterpretation commutes. Leading dimensions are the row lengths of the
// matrices as stored (row-major): A is stored [M,K] (lda = K) or, when transposed, [K,M]
// (lda = M); B likewise [K,N] (ldb = N) or [N,K] (ldb = K); C is [M,N] (ldc = N).
void gemm_row_major(cublasHandle_t handle, bool trans_a, bool trans_b, int M, int N, int K, const float* A,
                    const float* B, float* C, GemmMath math) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // A sum of no terms (e.g. the weight gradient of an empty batch) is zero. cuBLAS would
    // reject the zero leading dimension that comes with it.
    cudaStream_t stream = nullptr;
    MNIST_CHECK(cublasGetStream(handle, &stream));
    MNIST_CHECK(cudaMemsetAsync(C, 0, static_cast<std::size_t>(M) * N * sizeof(float), stream));
    return;
  }
  // alpha and beta live on the host: the handle must be in host pointer mode (the default).
  cublasPointerMode_t pointer_mode;
  MNIST_CHECK(cublasGetPointerMode(handle, &pointer_mode));
  if (pointer_mode != CUBLAS_POINTER_MODE_HOST)
    throw std::invalid_argument("gpu dense GEMM: the cuBLAS handle must be in host pointer mode");

  const float alpha = 1.f, beta = 0.f;  // beta = 0: C is written, never read (it may hold NaN)
  const int lda = trans_a ? M : K;
  const int ldb = trans_b ? K : N;
  MNIST_CHECK(cublasGemmEx(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                           /*m=*/N, /*n=*/M, /*k=*/K, &alpha,
                           /*first operand: Bᵀ in column-major view*/ B, CUDA_R_32F, ldb,
                           /*second operand: Aᵀ in column-major view*/ A, CUDA_R_32F, lda, &beta,
                           /*result: Cᵀ in column-major view*/ C, CUDA_R_32F, N, compute_type(math),
                           CUBLAS_GEMM_DEFAULT));
}

}  // namespace

// y[B,out] = x[B,in] · W[in,out]:  M = B, N = out, K = in, nothing transposed.
// (cuBLAS sees yᵀ[out,B] = Wᵀ[out,in] · xᵀ[in,B], each buffer read as it lies.)
void dense_forward(cublasHandle_t handle, const float* x, const float* w, float* y, int batch, int in, int out,
                   GemmMath math) {
  check_dims("gpu::dense_forward", batch, in, out);
  gemm_row_major(handle, false, false, batch, out, in, x, w, y, math);
}

// dW[in,out] = x[B,in]ᵀ · dy[B,out]:  M = in, N = out, K = B, A = x transposed.
// (cuBLAS sees dWᵀ[out,in] = dyᵀ[out,B] · op_T(xᵀ)[B,in].)
void dense_backward_weights(cublasHandle_t handle, const float* x, const float* dy, float* dw, int batch, int in,
                            int out, GemmMath math) {
  check_dims("gpu::dense_backward_weights", batch, in, out);
  gemm_row_major(handle, true, false, in, out, batch, x, dy, dw, math);
}

// dx[B,in] = dy[B,out] · W[in,out]ᵀ:  M = B, N = in, K = out, B-operand = W transposed.
// (cuBLAS sees dxᵀ[in,B] = op_T(Wᵀ)[in,out] · dyᵀ[out,B].)
void dense_backward_input(cublasHandle_t handle, const float* dy, const float* w, float* dx, int batch, int in,
                          int out, GemmMath math) {
  check_dims("gpu::dense_backward_input", batch, in, out);
  gemm_row_major(handle, false, true, batch, in, out, dy, w, dx, math);
}

}  // namespace mnist::gpu
