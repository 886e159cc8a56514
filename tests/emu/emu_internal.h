#pragma once
// What the emulator's cudart, cuBLAS and cuDNN stand-ins share (tests/emu/README.md).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

#include "emu_inject.h"

namespace emu {

// The fault emu::inject() set last (Fault::kNone when none).
Fault injected_fault();

// Whether the emulated device is there: only when MNIST_EMULATED_GPU=1, so that without it the
// build behaves like a machine with no GPU.
bool device_present();

// Runs `work` on `stream` now, or appends it to the stream's graph while it is being captured.
// The legacy default stream may not be used while this thread captures: that invalidates the
// capture, as in CUDA.
cudaError_t submit(cudaStream_t stream, std::function<void()> work);

// Counts one launch (emu::launches): a kernel's grid or a library call, as it runs.
void count_launch();

// Refuses a call that CUDA forbids while this thread captures a graph in global or thread-local
// mode (an allocation, a synchronous copy, a synchronisation): the capture is invalidated and
// the call returns cudaErrorStreamCaptureUnsupported. Else cudaSuccess.
cudaError_t refuse_during_capture(const char* call);

// [pointer, pointer + bytes) lies inside one live device allocation.
bool is_device_range(const void* pointer, std::size_t bytes);
// pointer points into (or one past the end of) a live device allocation.
bool is_device_pointer(const void* pointer);

// One line on stderr that starts with "emu:", so a failing test shows what the emulator saw.
void report(const std::string& message);

// The library's error for a kernel fault or an invalid argument that CUDA would answer with an
// error: it becomes cudaGetLastError's next answer.
void set_last_error(cudaError_t error);

// x rounded to TF32 (10 mantissa bits, to nearest even), as tensor cores read fp32 inputs.
inline float to_tf32(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) != 0x7f800000u) {  // finite: round the low 13 bits away
    bits += 0x0fffu + ((bits >> 13) & 1u);
    bits &= ~0x1fffu;
  }
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

}  // namespace emu
