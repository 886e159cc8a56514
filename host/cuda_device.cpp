#include <cuda_runtime_api.h>

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

}  // namespace mnist
