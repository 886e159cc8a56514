#pragma once
// The GPU emulator's device side (CMake option MNIST_GPU_EMULATOR; tests/emu/README.md).
// Every .cu file of that build is compiled by the host compiler as C++, with its launches
// `k<<<grid, block, smem, stream>>>(args)` rewritten to `::emu::launch("k", k, grid, block,
// smem, stream)(args)` (tests/emu/rewrite_launches.cmake) and this header included first. It
// gives the kernels what nvcc would: the built-in indices, __shared__, __syncthreads, atomics
// and the rounding intrinsics; emu_runtime.cpp runs the grid on the CPU, one block at a time.
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// Host compilers see __global__, __device__ and __host__ as nothing (CUDA's host_defines.h);
// __shared__ must be one variable per block: a function-local static is, because blocks run
// one after another and the threads of a block share the function's statics. They all go to one
// section, which emu_runtime.cpp refills with 0xFF bytes before each block (and tells TSan is
// new memory), so no block sees what another left there. GCC leaves the statics of a function
// template (and of an inline function) out of the section: declare __shared__ in kernels that
// are neither, and pass it to templates by reference (softmax_ce.cuh does).
#undef __shared__
#define __shared__ static __attribute__((section("emu_shared")))
#define __launch_bounds__(...)

namespace emu {

// The indices of the thread that runs now; emu_runtime.cpp sets them before each thread runs.
struct ThreadPosition {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};
extern ThreadPosition position;

// Blocks until every thread of the block has called it (a fiber switch, see emu_runtime.cpp).
void syncthreads();

// Checks one launch and runs it (or records it into the stream's capture): `body` runs the
// kernel with the current position. Pointer arguments that are neither null nor inside a
// device allocation make the launch fail with cudaErrorInvalidValue, as if the kernel faulted.
void enqueue_launch(const char* name, dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                    const void* const* pointers, std::size_t pointer_count, std::function<void()> body);

template <class T>
const void* pointer_of(const T& value) {
  if constexpr (std::is_pointer_v<T>)
    return static_cast<const void*>(value);
  else
    return nullptr;
}

template <class... Params>
struct Launch {
  const char* name;
  void (*kernel)(Params...);
  dim3 grid, block;
  std::size_t shared_bytes;
  cudaStream_t stream;

  // The arguments are converted to the parameter types and copied, as a CUDA launch does.
  template <class... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "kernel launched with the wrong number of arguments");
    std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    const void* pointers[sizeof...(Params) + 1] = {nullptr};
    std::size_t count = 0;
    std::apply([&](const auto&... p) { ((pointers[count++] = pointer_of(p)), ...); }, params);
    auto* const k = kernel;
    enqueue_launch(name, grid, block, shared_bytes, stream, pointers, count,
                   [k, params] { std::apply(k, params); });
  }
};

template <class... Params>
Launch<Params...> launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                         std::size_t shared_bytes = 0, cudaStream_t stream = nullptr) {
  return Launch<Params...>{name, kernel, grid, block, shared_bytes, stream};
}

}  // namespace emu

#define threadIdx (static_cast<const uint3&>(::emu::position.thread))
#define blockIdx (static_cast<const uint3&>(::emu::position.block))
#define blockDim (static_cast<const dim3&>(::emu::position.block_dim))
#define gridDim (static_cast<const dim3&>(::emu::position.grid_dim))

inline void __syncthreads() { ::emu::syncthreads(); }

// Atomics: one OS thread runs every emulated thread, so any read-modify-write would do; the
// compiler's atomics also tell ThreadSanitizer (the tsan preset) that these accesses do not race.
// Relaxed, as CUDA's: they order nothing else.
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

// The explicitly rounded intrinsics: IEEE single operations, never contracted (the emulator
// build passes -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline unsigned int __float_as_uint(float x) {
  unsigned int bits;
  static_assert(sizeof bits == sizeof x);
  __builtin_memcpy(&bits, &x, sizeof bits);
  return bits;
}

// CUDA's device min and max for integers.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
