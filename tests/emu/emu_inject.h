#pragma once
#include <cstdint>

// Test hooks of the GPU emulator (tests/emu/README.md): what a real GPU does rarely, on demand,
// for the tests of how the code answers it. Only in the emulator build (MNIST_GPU_EMULATOR).

namespace emu {

enum class Fault {
  kNone,                // clears the others and a fault's sticky error (as a new process would)
  kGraphsNotSupported,  // every cudaGraphInstantiate fails with cudaErrorNotSupported
  kFaultBeforeCapture,  // the work queued before the next cudaStreamBeginCapture faults: from then
                        // on, as after a kernel's illegal access, launches, copies, captures and
                        // synchronisations return cudaErrorIllegalAddress (allocations and frees
                        // still work, so the leak check at exit still checks)
  kTensorOpMathRefused,  // cuDNN's convolution calls refuse CUDNN_TENSOR_OP_MATH with
                         // CUDNN_STATUS_NOT_SUPPORTED (the heuristics still rank it first and
                         // the workspace queries still answer), as on a device or cuDNN build
                         // that does not run the tensor-core kernel it offered
};
void inject(Fault fault);

// The kernels, cuBLAS GEMMs and cuDNN calls run so far, graph replays included: the launches a
// GPU would see (a library call counts once, although the library may launch more than one
// kernel for it). Copies and memsets do not count.
std::uint64_t launches();

}  // namespace emu
