#pragma once
// The three GEMMs of a dense layer, row-major throughout:
//   forward       y[B,out]  = x[B,in] · W[in,out]
//   weight grad   dW[in,out] = x[B,in]^T · dy[B,out]
//   input grad    dx[B,in]  = dy[B,out] · W[in,out]^T
// CPU twin: CBLAS (OpenBLAS). GPU: cuBLAS, with the row-major/column-major swap written once.
#include <cublas_v2.h>

namespace mnist {

enum class GemmMath { kFp32, kTf32 };

namespace twin {
void dense_forward(const float* x, const float* w, float* y, int batch, int in, int out);
void dense_backward_weights(const float* x, const float* dy, float* dw, int batch, int in, int out);
void dense_backward_input(const float* dy, const float* w, float* dx, int batch, int in, int out);
// Triple loops; pins the convention that the BLAS calls must agree with.
void dense_forward_naive(const float* x, const float* w, float* y, int batch, int in, int out);
// The threads OpenBLAS splits a GEMM over (OPENBLAS_NUM_THREADS, else the cores). Results repeat
// bit for bit for one count; another count may sum in another order and round differently.
int blas_threads();
}  // namespace twin

namespace gpu {
// The handle carries the stream. All pointers are device pointers.
void dense_forward(cublasHandle_t handle, const float* x, const float* w, float* y, int batch, int in, int out,
                   GemmMath math = GemmMath::kFp32);
void dense_backward_weights(cublasHandle_t handle, const float* x, const float* dy, float* dw, int batch, int in,
                            int out, GemmMath math = GemmMath::kFp32);
void dense_backward_input(cublasHandle_t handle, const float* dy, const float* w, float* dx, int batch, int in,
                          int out, GemmMath math = GemmMath::kFp32);
}  // namespace gpu

}  // namespace mnist
