#pragma once
// What this binary was built with and runs on, read from the libraries themselves: report.json's
// "versions" and `mnist --version`. A result or a bug report means little without them.
#include <nlohmann/json.hpp>
#include <string>

namespace mnist {

// "13.0" for the CUDA version number 13000 that cudaRuntimeGetVersion and friends report.
std::string cuda_version_text(int version);

// The NVIDIA kernel driver's release ("580.65.06", the first version-like token of
// /proc/driver/nvidia/version); "none" without the driver.
std::string nvidia_driver_release();

// {"compiler": "GCC 12.2.0", "cuda_toolkit": "13.0" (built with), "cuda_runtime": "13.0",
//  "cuda_driver": "13.0" (the newest CUDA the driver runs) or "none", "nvidia_driver": "580.65.06"
//  or "none", "cublas": "13.1.0", "cudnn": "9.13.0", "openblas": "0.3.21"}. In the emulator build
// (tests/emu) cuBLAS and cuDNN are "emulated (headers X)": no library of theirs is loaded.
nlohmann::json program_versions();

}  // namespace mnist
