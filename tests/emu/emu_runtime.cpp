// The GPU emulator's runtime (tests/emu/README.md): the subset of the CUDA runtime API this
// project calls, on host memory, and the grid scheduler that runs emulated kernels.
//
// Kernels: the blocks of a grid run one after another, in a fresh random order each launch, and
// so do the threads of a block. A kernel that calls __syncthreads runs each thread on a fiber of
// its own; the scheduler resumes the waiting fibers once the whole block has arrived. Which
// kernels need fibers is learnt on their first launch (always run on fibers); later launches of
// a kernel that never synchronised call its threads directly, and a __syncthreads there stops
// the process with a message.
//
// Streams execute work at once, in issue order; a stream being captured records it instead,
// and a graph launch replays the records. Device memory is the host heap, filled with 0xFF
// bytes on allocation (NaN floats, -1 integers) so a read before any write shows; what is still
// allocated when the process exits is reported as a leak.
#include <cuda_runtime_api.h>

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

#include "cuda_emu.h"
#include "emu_internal.h"

// The opaque handle types of the CUDA runtime, defined here.
struct CUstream_st {
  bool capturing = false;
  bool invalidated = false;
  std::vector<std::function<void()>> recorded;
};
struct CUgraph_st {
  std::vector<std::function<void()>> nodes;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> nodes;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point time{};
  bool recorded = false;
};

namespace emu {

ThreadPosition position;

namespace {

// ---- process state -------------------------------------------------------------------------

cudaError_t last_error = cudaSuccess;
std::map<std::uintptr_t, std::size_t> allocations;  // base → bytes
std::size_t allocated_bytes = 0;
constexpr std::size_t kDeviceMemory = std::size_t(4) << 30;  // what the emulated device holds
CUstream_st legacy_stream;                           // stream 0 (and cudaStreamPerThread)
std::set<CUstream_st*> live_streams;

std::mt19937_64& order_rng() {
  static std::mt19937_64 rng = [] {
    const char* seed = std::getenv("MNIST_EMU_SEED");
    return std::mt19937_64(seed ? std::strtoull(seed, nullptr, 10) : std::random_device{}());
  }();
  return rng;
}

CUstream_st* resolve(cudaStream_t stream) {
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) return &legacy_stream;
  return stream;
}

bool capturing_anywhere() {
  return std::any_of(live_streams.begin(), live_streams.end(), [](CUstream_st* s) { return s->capturing; });
}

void invalidate_captures() {
  for (CUstream_st* s : live_streams)
    if (s->capturing) s->invalidated = true;
}

// The answer to a call made during a capture that CUDA does not allow there.
cudaError_t refuse_capture(const std::string& why) {
  invalidate_captures();
  report(why);
  return cudaErrorStreamCaptureUnsupported;
}

// ---- the order threads and blocks run in ---------------------------------------------------

// i ↦ (a·i + b) mod n with gcd(a, n) = 1: a fresh permutation of 0..n-1 for each launch, without
// storing it.
struct Shuffle {
  std::uint64_t n, a, b;
  explicit Shuffle(std::uint64_t count) : n(count), a(1), b(0) {
    if (n < 2) return;
    std::mt19937_64& rng = order_rng();
    a = rng() % n;
    while (std::gcd(a, n) != 1) a = (a + 1) % n;
    b = rng() % n;
  }
  std::uint64_t operator()(std::uint64_t i) const {
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(a) * i + b) % n);
  }
};

std::uint64_t volume(dim3 shape) { return std::uint64_t(shape.x) * shape.y * shape.z; }

uint3 unflatten(std::uint64_t i, dim3 shape) {
  const std::uint64_t x = i % shape.x, rest = i / shape.x;
  return uint3{static_cast<unsigned>(x), static_cast<unsigned>(rest % shape.y),
               static_cast<unsigned>(rest / shape.y)};
}

// ---- fibers --------------------------------------------------------------------------------

constexpr std::size_t kFiberStack = std::size_t(256) << 10;  // per thread of a block; ASan frames are large
constexpr std::size_t kFiberTopFrames = std::size_t(16) << 10;  // fiber_main's and the switch's frames

#if defined(__x86_64__)
// Saves the callee-saved registers and the stack pointer in *from, resumes the context at `to`.
extern "C" void emu_switch_context(void** from, void* to);
asm(R"(
  .text
  .globl emu_switch_context
  .type emu_switch_context, @function
emu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_context, .-emu_switch_context
  .section .note.GNU-stack,"",@progbits
  .text
)");
#else
#error "the GPU emulator switches fibers with x86-64 assembly only"
#endif

struct Fiber {
  char* stack = nullptr;  // kFiberStack bytes, mmap'd once and reused
  void* sp = nullptr;
  uint3 thread{};
  bool done = false;
#if defined(EMU_ASAN)
  void* fake_stack = nullptr;
#endif
};

struct BlockRun {
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  const void* scheduler_stack_bottom = nullptr;
  std::size_t scheduler_stack_size = 0;
#if defined(EMU_ASAN)
  void* scheduler_fake_stack = nullptr;
#endif
};

BlockRun run;
bool fiber_mode = false;
bool barrier_called = false;
const char* running_kernel = "";
std::set<std::string> synchronising_kernels, launched_kernels;

void switch_to_fiber(Fiber& fiber) {
  run.current = &fiber;
#if defined(EMU_ASAN)
  __sanitizer_start_switch_fiber(&run.scheduler_fake_stack, fiber.stack, kFiberStack);
#endif
  emu_switch_context(&run.scheduler_sp, fiber.sp);
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(run.scheduler_fake_stack, nullptr, nullptr);
#endif
}

// From a fiber back to the scheduler (at a barrier, or for good when its thread has ended).
void switch_to_scheduler() {
  Fiber& fiber = *run.current;
#if defined(EMU_ASAN)
  // The fake stack (detect_stack_use_after_return) is kept, also when the fiber has finished:
  // the next fiber of this slot reuses it, since making one per fiber costs an mmap each.
  __sanitizer_start_switch_fiber(&fiber.fake_stack, run.scheduler_stack_bottom, run.scheduler_stack_size);
#endif
  emu_switch_context(&fiber.sp, run.scheduler_sp);
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(fiber.fake_stack, &run.scheduler_stack_bottom, &run.scheduler_stack_size);
#endif
}

void fiber_main() {
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(run.current->fake_stack, &run.scheduler_stack_bottom, &run.scheduler_stack_size);
#endif
  position.thread = run.current->thread;
  (*run.body)();
  run.current->done = true;
  switch_to_scheduler();
  std::abort();  // never resumed
}

void start_fiber(Fiber& fiber, uint3 thread) {
  if (fiber.stack == nullptr) {
    void* memory = mmap(nullptr, kFiberStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                        -1, 0);
    if (memory == MAP_FAILED) {
      report("cannot map a fiber stack");
      std::abort();
    }
    fiber.stack = static_cast<char*>(memory);
  }
#if defined(EMU_ASAN)
  // A finished fiber never returned from fiber_main and switch_to_scheduler, whose frames (at
  // the top of its stack: everything below them returned) keep their poisoned redzones.
  __asan_unpoison_memory_region(fiber.stack + kFiberStack - kFiberTopFrames, kFiberTopFrames);
#endif
  // The stack as emu_switch_context pops it: six registers, then the entry as return address.
  auto* top = reinterpret_cast<std::uintptr_t*>(fiber.stack + kFiberStack);
  top[-1] = 0;  // fiber_main's return address: it never returns
  top[-2] = reinterpret_cast<std::uintptr_t>(&fiber_main);
  for (int i = 3; i <= 8; ++i) top[-i] = 0;
  fiber.sp = top - 8;
  fiber.thread = thread;
  fiber.done = false;
}

[[noreturn]] void fatal(const std::string& message) {
  report(message);
  std::fflush(stderr);
  std::abort();
}

void run_block_on_fibers(const std::function<void()>& body, dim3 block) {
  const std::uint64_t threads = volume(block);
  if (run.fibers.size() < threads) run.fibers.resize(threads);
  run.body = &body;
  for (std::uint64_t t = 0; t < threads; ++t) start_fiber(run.fibers[t], unflatten(t, block));
  for (;;) {
    // One phase: every live thread runs until it waits at the barrier or ends.
    const Shuffle order(threads);
    std::uint64_t waiting = 0, finished = 0;
    for (std::uint64_t i = 0; i < threads; ++i) {
      Fiber& fiber = run.fibers[order(i)];
      if (fiber.done) {
        ++finished;
        continue;
      }
      position.thread = fiber.thread;
      switch_to_fiber(fiber);
      (fiber.done ? finished : waiting) += 1;
    }
    if (waiting == 0) return;
    if (finished != 0)
      fatal(std::string("kernel ") + running_kernel + ": " + std::to_string(finished) +
            " threads of a block ended while " + std::to_string(waiting) +
            " wait at __syncthreads (a barrier in divergent code)");
  }
}

void run_grid(const char* name, dim3 grid, dim3 block, const std::function<void()>& body) {
  running_kernel = name;
  fiber_mode = !launched_kernels.count(name) || synchronising_kernels.count(name);
  barrier_called = false;
  position.block_dim = block;
  position.grid_dim = grid;
  const std::uint64_t blocks = volume(grid), threads = volume(block);
  const Shuffle block_order(blocks);
  for (std::uint64_t b = 0; b < blocks; ++b) {
    position.block = unflatten(block_order(b), grid);
    if (fiber_mode) {
      run_block_on_fibers(body, block);
    } else {
      const Shuffle thread_order(threads);
      for (std::uint64_t t = 0; t < threads; ++t) {
        position.thread = unflatten(thread_order(t), block);
        body();
      }
    }
  }
  launched_kernels.insert(name);
  if (barrier_called) synchronising_kernels.insert(name);
  fiber_mode = false;
}

std::string describe(const void* pointer) {
  char text[32];
  std::snprintf(text, sizeof text, "%p", pointer);
  return text;
}

}  // namespace

void report(const std::string& message) { std::fprintf(stderr, "emu: %s\n", message.c_str()); }

bool device_present() {
  const char* flag = std::getenv("MNIST_EMULATED_GPU");
  return flag != nullptr && std::strcmp(flag, "1") == 0;
}

void set_last_error(cudaError_t error) {
  if (last_error == cudaSuccess) last_error = error;
}

void syncthreads() {
  if (!fiber_mode)
    fatal(std::string("kernel ") + running_kernel +
          " called __syncthreads in a launch run without fibers (its first launch never did): "
          "tests/emu/emu_runtime.cpp cannot run it");
  barrier_called = true;
  switch_to_scheduler();
  position.thread = run.current->thread;
}

bool is_device_range(const void* pointer, std::size_t bytes) {
  const auto p = reinterpret_cast<std::uintptr_t>(pointer);
  auto it = allocations.upper_bound(p);
  if (it == allocations.begin()) return false;
  --it;
  return p >= it->first && p - it->first <= it->second && bytes <= it->second - (p - it->first);
}

bool is_device_pointer(const void* pointer) { return is_device_range(pointer, 0); }

// Some byte of [pointer, pointer + bytes) is device memory (bytes > 0). Host memory may begin
// where a device allocation ends, as it does under TSan's allocator, which leaves no red zones.
bool overlaps_device(const void* pointer, std::size_t bytes) {
  const auto p = reinterpret_cast<std::uintptr_t>(pointer);
  auto it = allocations.upper_bound(p + bytes - 1);  // the last allocation that starts before the end
  if (it == allocations.begin()) return false;
  --it;
  return it->first + it->second > p;
}

cudaError_t submit(cudaStream_t stream, std::function<void()> work) {
  CUstream_st* s = resolve(stream);
  if (s->capturing) {
    if (s->invalidated) return cudaErrorStreamCaptureInvalidated;
    s->recorded.push_back(std::move(work));
    return cudaSuccess;
  }
  if (s == &legacy_stream && capturing_anywhere()) {
    invalidate_captures();
    report("work on the legacy default stream while a stream is captured");
    return cudaErrorStreamCaptureImplicit;
  }
  work();
  return cudaSuccess;
}

cudaError_t refuse_during_capture(const char* call) {
  if (!capturing_anywhere()) return cudaSuccess;
  return refuse_capture(std::string(call) + " while a stream is captured: CUDA refuses it and invalidates the capture");
}

void enqueue_launch(const char* name, dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                    const void* const* pointers, std::size_t pointer_count, std::function<void()> body) {
  const std::uint64_t threads = volume(block);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || block.z > 64 ||
      grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) {
    report(std::string("kernel ") + name + ": invalid launch configuration (grid " + std::to_string(grid.x) + "x" +
           std::to_string(grid.y) + "x" + std::to_string(grid.z) + ", block " + std::to_string(block.x) + "x" +
           std::to_string(block.y) + "x" + std::to_string(block.z) + ")");
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  if (shared_bytes > 48 * 1024) {
    report(std::string("kernel ") + name + ": " + std::to_string(shared_bytes) +
           " bytes of dynamic shared memory (48 KiB without an opt-in)");
    set_last_error(cudaErrorInvalidValue);
    return;
  }
  for (std::size_t i = 0; i < pointer_count; ++i) {
    if (pointers[i] != nullptr && !is_device_pointer(pointers[i])) {
      report(std::string("kernel ") + name + ": argument " + std::to_string(i + 1) + " (" + describe(pointers[i]) +
             ") is not device memory");
      set_last_error(cudaErrorIllegalAddress);
      return;
    }
  }
  const cudaError_t status =
      submit(stream, [name, grid, block, body = std::move(body)] { run_grid(name, grid, block, body); });
  if (status != cudaSuccess) set_last_error(status);
}

}  // namespace emu

// ---- the runtime API -----------------------------------------------------------------------------

using emu::refuse_during_capture;
using emu::report;
using emu::submit;

namespace {

// compute-sanitizer's leak check: device memory still allocated when the process ends is
// reported and makes the exit status 1.
void check_leaks_at_exit() {
  if (emu::allocations.empty()) return;
  report(std::to_string(emu::allocations.size()) + " device allocations (" + std::to_string(emu::allocated_bytes) +
         " bytes) were never freed");
  std::fflush(stderr);
  std::_Exit(1);
}

// What a copy or memset may touch: device ranges must be allocated, host ranges must not be
// device memory (a swapped argument or a wrong kind fails, as it would on a GPU).
cudaError_t check_copy(const void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, const char* call) {
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (bytes == 0 || kind == cudaMemcpyDefault || kind == cudaMemcpyHostToHost) return cudaSuccess;
  const auto side_ok = [bytes](const void* p, bool device) {
    return device ? emu::is_device_range(p, bytes) : !emu::overlaps_device(p, bytes);
  };
  if (!side_ok(dst, dst_device) || !side_ok(src, src_device)) {
    char text[160];
    std::snprintf(text, sizeof text, "%s of %zu bytes from %p to %p: %s", call, bytes, src, dst,
                  "a device side is not (all) allocated or a host side is device memory");
    report(text);
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

cudaError_t check_memset(const void* pointer, std::size_t bytes, const char* call) {
  if (bytes == 0 || emu::is_device_range(pointer, bytes)) return cudaSuccess;
  report(std::string(call) + " of " + std::to_string(bytes) + " bytes at " + emu::describe(pointer) +
         ": not (all) device memory");
  return cudaErrorInvalidValue;
}

}  // namespace

extern "C" {

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  *count = emu::device_present() ? 1 : 0;
  return *count ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  *device = 0;
  return emu::device_present() ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t CUDARTAPI cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!emu::device_present() || device != 0) return cudaErrorInvalidDevice;
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "%s", "emulated (tests/emu, on the CPU)");
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  prop->totalGlobalMem = emu::kDeviceMemory;
  prop->maxThreadsPerBlock = 1024;
  prop->warpSize = 32;
  prop->sharedMemPerBlock = 48 * 1024;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDriverGetVersion(int* version) {
  *version = emu::device_present() ? CUDART_VERSION : 0;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetLastError(void) { return std::exchange(emu::last_error, cudaSuccess); }
cudaError_t CUDARTAPI cudaPeekAtLastError(void) { return emu::last_error; }

const char* CUDARTAPI cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    default: return "cudaErrorUnknown";
  }
}

const char* CUDARTAPI cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    default: return "emulated error";
  }
}

// ---- memory ----

cudaError_t CUDARTAPI cudaMalloc(void** pointer, std::size_t bytes) {
  *pointer = nullptr;
  if (cudaError_t refused = refuse_during_capture("cudaMalloc")) return refused;
  if (!emu::device_present()) return cudaErrorNoDevice;
  // Exactly `bytes` (AddressSanitizer then sees an access one past the end), 256-byte aligned
  // as cudaMalloc's; past 4 GiB in all the "device" is out of memory, so that path can be tested.
  if (bytes > emu::kDeviceMemory - emu::allocated_bytes) {
    emu::set_last_error(cudaErrorMemoryAllocation);
    return cudaErrorMemoryAllocation;
  }
  static const bool leak_check_registered = std::atexit(check_leaks_at_exit) == 0;
  (void)leak_check_registered;
  void* memory = nullptr;
  if (posix_memalign(&memory, 256, bytes == 0 ? 1 : bytes) != 0) return cudaErrorMemoryAllocation;
  std::memset(memory, 0xFF, bytes);
  emu::allocations[reinterpret_cast<std::uintptr_t>(memory)] = bytes;
  emu::allocated_bytes += bytes;
  *pointer = memory;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaFree(void* pointer) {
  if (pointer == nullptr) return cudaSuccess;
  if (cudaError_t refused = refuse_during_capture("cudaFree")) return refused;
  const auto it = emu::allocations.find(reinterpret_cast<std::uintptr_t>(pointer));
  if (it == emu::allocations.end()) {
    report("cudaFree of " + emu::describe(pointer) + ", which cudaMalloc did not return (or was freed)");
    return cudaErrorInvalidValue;
  }
  emu::allocated_bytes -= it->second;
  emu::allocations.erase(it);
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  if (cudaError_t refused = refuse_during_capture("cudaMemcpy")) return refused;
  if (cudaError_t bad = check_copy(dst, src, bytes, kind, "cudaMemcpy")) return bad;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                                      cudaStream_t stream) {
  if (cudaError_t bad = check_copy(dst, src, bytes, kind, "cudaMemcpyAsync")) return bad;
  // A graph's copy to or from pageable host memory would read or write it at replay, long after
  // the call; this project never puts one in a graph, and the emulator holds it to that.
  if (emu::resolve(stream)->capturing && kind != cudaMemcpyDeviceToDevice)
    return emu::refuse_capture("cudaMemcpyAsync between host and device while the stream is captured");
  return submit(stream, [=] {
    if (bytes) std::memmove(dst, src, bytes);
  });
}

cudaError_t CUDARTAPI cudaMemset(void* pointer, int value, std::size_t bytes) {
  if (cudaError_t refused = refuse_during_capture("cudaMemset")) return refused;
  if (cudaError_t bad = check_memset(pointer, bytes, "cudaMemset")) return bad;
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemsetAsync(void* pointer, int value, std::size_t bytes, cudaStream_t stream) {
  if (cudaError_t bad = check_memset(pointer, bytes, "cudaMemsetAsync")) return bad;
  return submit(stream, [=] { std::memset(pointer, value, bytes); });
}

// ---- synchronisation, streams, events ----

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) { return refuse_during_capture("cudaDeviceSynchronize"); }

cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  auto* s = new CUstream_st;
  emu::live_streams.insert(s);
  *stream = s;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream) {
  if (!emu::live_streams.erase(stream)) return cudaErrorInvalidResourceHandle;
  delete stream;
  return cudaSuccess;
}

// Also (and above all) of the stream being captured: it is one of the live streams.
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t) { return refuse_during_capture("cudaStreamSynchronize"); }

cudaError_t CUDARTAPI cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  return submit(stream, [event] {
    event->time = std::chrono::steady_clock::now();
    event->recorded = true;
  });
}

cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t) { return refuse_during_capture("cudaEventSynchronize"); }

cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start->recorded || !end->recorded) return cudaErrorInvalidResourceHandle;
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

// ---- graphs ----

cudaError_t CUDARTAPI cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  CUstream_st* s = emu::resolve(stream);
  if (s == &emu::legacy_stream) return cudaErrorStreamCaptureUnsupported;
  if (s->capturing) return cudaErrorIllegalState;
  s->capturing = true;
  s->invalidated = false;
  s->recorded.clear();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  CUstream_st* s = emu::resolve(stream);
  *graph = nullptr;
  if (!s->capturing) return cudaErrorIllegalState;
  s->capturing = false;
  if (s->invalidated) {
    s->recorded.clear();
    return cudaErrorStreamCaptureInvalidated;
  }
  *graph = new CUgraph_st{std::move(s->recorded)};
  s->recorded.clear();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return cudaErrorInvalidValue;
  *exec = new CUgraphExec_st{graph->nodes};
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return cudaErrorInvalidValue;
  return submit(stream, [exec] {
    for (const auto& node : exec->nodes) node();
  });
}

cudaError_t CUDARTAPI cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

}  // extern "C"
