#include <cuda_runtime_api.h>

#include <string>

#include "mnist/device.h"

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

}  // namespace mnist
