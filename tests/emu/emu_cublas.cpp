// The GPU emulator's cuBLAS (tests/emu/README.md): the handle calls this project makes and
// cublasGemmEx in fp32, computed by OpenBLAS's column-major sgemm. It checks what cuBLAS checks
// (dimensions, leading dimensions, types) and, beyond that, that every operand lies inside a
// device allocation. CUBLAS_COMPUTE_32F_FAST_TF32 rounds both inputs to TF32 first (10-bit
// mantissa, to nearest), so the TF32 tests meet the precision tensor cores would give them.
#include <cblas.h>
#include <cublas_v2.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "emu_internal.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

namespace {

// A column-major rows×cols operand with leading dimension ld, copied (TF32-rounded) when asked.
std::vector<float> tf32_copy(const float* data, int rows, int cols, int ld) {
  std::vector<float> out(std::size_t(ld) * (cols - 1) + rows);
  for (int c = 0; c < cols; ++c)
    for (int r = 0; r < rows; ++r) out[std::size_t(c) * ld + r] = emu::to_tf32(data[std::size_t(c) * ld + r]);
  return out;
}

bool operand_ok(const void* data, int rows, int cols, int ld) {
  const std::size_t elements = std::size_t(ld) * (cols - 1) + rows;
  return emu::is_device_range(data, elements * sizeof(float));
}

}  // namespace

extern "C" {

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
  if (!emu::device_present()) return CUBLAS_STATUS_NOT_INITIALIZED;
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

// As in cuBLAS, setting the stream drops a workspace set before (back to the default pool).
cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  handle->workspace = nullptr;
  handle->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, std::size_t bytes) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes != 0 && !emu::is_device_range(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_UNKNOWN (emulated)";
  }
}

cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                                         int lda, const void* B, cudaDataType Btype, int ldb, const void* beta,
                                         void* C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                                         cublasGemmAlgo_t) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F ||
      (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_TF32))
    return CUBLAS_STATUS_NOT_SUPPORTED;  // the emulator does fp32 (and TF32) only
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  // op(A) is m×k, op(B) is k×n, C is m×n; A is stored (ta ? k×m : m×k), B (tb ? n×k : k×n).
  const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
      ldc < (m > 1 ? m : 1))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (handle->pointer_mode != CUBLAS_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);  // read at the call
  if ((k > 0 && (!operand_ok(A, a_rows, a_cols, lda) || !operand_ok(B, b_rows, b_cols, ldb))) ||
      !operand_ok(C, m, n, ldc)) {
    emu::report("cublasGemmEx: an operand is not (all) device memory");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const bool tf32 = computeType == CUBLAS_COMPUTE_32F_FAST_TF32;
  const auto* pa = static_cast<const float*>(A);
  const auto* pb = static_cast<const float*>(B);
  auto* pc = static_cast<float*>(C);
  const cudaError_t status = emu::submit(handle->stream, [=] {
    emu::count_launch();
    // C = beta·C first; beta 0 writes zeros and reads nothing (C may hold NaN), as cuBLAS.
    for (int c = 0; c < n; ++c)
      for (int r = 0; r < m; ++r) {
        float& out = pc[std::size_t(c) * ldc + r];
        out = b == 0.f ? 0.f : b * out;
      }
    if (k == 0) return;
    std::vector<float> ra, rb;
    const float* xa = pa;
    const float* xb = pb;
    if (tf32) {
      ra = tf32_copy(pa, a_rows, a_cols, lda);
      rb = tf32_copy(pb, b_rows, b_cols, ldb);
      xa = ra.data();
      xb = rb.data();
    }
    cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, a, xa, lda,
                xb, ldb, 1.f, pc, ldc);
  });
  return status == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // extern "C"
