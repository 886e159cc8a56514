// The versions of include/mnist/cli/versions.h, each asked of the library that is loaded, not taken
// from the headers it was compiled against (those can differ: LD_LIBRARY_PATH, a newer driver).
#include "mnist/cli/versions.h"

#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <fstream>
#include <regex>
#include <sstream>

namespace mnist {
namespace {

std::string compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

std::string dotted(int major, int minor, int patch) {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::string cublas_version() {
#if MNIST_GPU_EMULATOR
  return "emulated (headers " + dotted(CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR, CUBLAS_VER_PATCH) + ")";
#else
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(MINOR_VERSION, &minor) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(PATCH_LEVEL, &patch) != CUBLAS_STATUS_SUCCESS)
    return "unknown";
  return dotted(major, minor, patch);
#endif
}

std::string cudnn_version() {
#if MNIST_GPU_EMULATOR
  return "emulated (headers " + dotted(CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL) + ")";
#else
  const std::size_t v = cudnnGetVersion();  // cuDNN 9: major * 10000 + minor * 100 + patch
  return dotted(int(v / 10000), int(v / 100 % 100), int(v % 100));
#endif
}

// "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64" -> "0.3.21".
std::string openblas_version() {
  std::istringstream config(openblas_get_config());
  std::string name, version;
  config >> name >> version;
  return name == "OpenBLAS" && !version.empty() ? version : "unknown";
}

}  // namespace

std::string cuda_version_text(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

std::string nvidia_driver_release() {
  std::ifstream in("/proc/driver/nvidia/version");
  std::string line;
  std::smatch match;
  if (std::getline(in, line) && std::regex_search(line, match, std::regex(R"(\b\d+\.\d+(\.\d+)?\b)")))
    return match.str();
  return "none";
}

nlohmann::json program_versions() {
  int runtime = 0, driver = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;  // 0 also when no driver is installed
  cudaGetLastError();  // neither may leave an error behind for the next checked call
  return {{"compiler", compiler()},
          {"cuda_toolkit", cuda_version_text(CUDART_VERSION)},
          {"cuda_runtime", runtime ? cuda_version_text(runtime) : "unknown"},
          {"cuda_driver", driver ? cuda_version_text(driver) : "none"},
          {"nvidia_driver", nvidia_driver_release()},
          {"cublas", cublas_version()},
          {"cudnn", cudnn_version()},
          {"openblas", openblas_version()}};
}

}  // namespace mnist
