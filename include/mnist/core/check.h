#pragma once
// One macro checks every CUDA runtime, cuBLAS and cuDNN status. On failure it throws
// mnist::CudaError naming the call, the file and the line, so the command line can print
// one clear message instead of crashing.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <stdexcept>
#include <string>

namespace mnist {

class CudaError : public std::runtime_error {
 public:
  CudaError(const std::string& what, bool out_of_memory)
      : std::runtime_error(what), out_of_memory_(out_of_memory) {}
  bool out_of_memory() const { return out_of_memory_; }

 private:
  bool out_of_memory_;
};

[[noreturn]] inline void throw_status(const char* library, const std::string& status, const char* call,
                                      const char* file, int line, bool out_of_memory) {
  throw CudaError(std::string(library) + " error " + status + " in " + call + " at " + file + ":" +
                      std::to_string(line),
                  out_of_memory);
}

inline void check_status(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    throw_status("CUDA", std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")", call,
                 file, line, status == cudaErrorMemoryAllocation);
}

inline void check_status(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw_status("cuBLAS", cublasGetStatusName(status), call, file, line, status == CUBLAS_STATUS_ALLOC_FAILED);
}

// cuDNN 9 tells a failed host allocation (4003, what CUDNN_STATUS_ALLOC_FAILED now names) from
// a failed device allocation (4004): both are out of memory.
inline bool cudnn_out_of_memory(cudnnStatus_t status) {
  return status == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
         status == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED;
}

inline void check_status(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw_status("cuDNN", cudnnGetErrorString(status), call, file, line, cudnn_out_of_memory(status));
}

}  // namespace mnist

#define MNIST_CHECK(call) ::mnist::check_status((call), #call, __FILE__, __LINE__)
// A kernel launch reports configuration errors through cudaGetLastError.
#define MNIST_CHECK_LAUNCH() MNIST_CHECK(cudaGetLastError())
