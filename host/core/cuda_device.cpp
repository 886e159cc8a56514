#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "mnist/core/device.h"

namespace mnist {

int cuda_device_count() {
  int count = 0;
  // cudaErrorNoDevice, cudaErrorInsufficientDriver, ...: all mean "train on the CPU".
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

std::string cuda_device_absence() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaSuccess && count > 0) return "";
  cudaGetLastError();
  if (status == cudaSuccess) return "the CUDA runtime counts 0 devices";
  return std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
}

void reset_device_if_asked() {
  const char* flag = std::getenv("MNIST_RESET_DEVICE_AT_EXIT");
  if (flag == nullptr || std::strcmp(flag, "1") != 0 || cuda_device_count() == 0) return;
  cudaDeviceReset();  // at exit: nothing is left to report a failure to
}

}  // namespace mnist
