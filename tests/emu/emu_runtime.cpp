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
// Under ThreadSanitizer (the tsan preset) every thread runs on a fiber and is a TSan thread, and
// TSan is told the orders CUDA gives, so it reports races between GPU threads (see below).
//
// Streams execute work at once, in issue order; a stream being captured records it instead,
// and a graph launch replays the records. Device memory is the host heap, filled with 0xFF
// bytes on allocation (NaN floats, -1 integers) so a read before any write shows; what is still
// allocated when the process exits is reported as a leak.
#include <cuda_runtime_api.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
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
// EMU_TSAN: the program is built with ThreadSanitizer, this file without it (CMakeLists.txt).
#if defined(EMU_TSAN)
#include <sanitizer/tsan_interface.h>
// TSan's interface for a JVM's heap; the emulator uses it to tell TSan that the shared memory
// of a new block is new memory (fresh_shared_memory).
extern "C" void __tsan_java_init(unsigned long heap_begin, unsigned long heap_size);
extern "C" void __tsan_java_alloc(unsigned long address, unsigned long bytes);
extern "C" void __tsan_java_free(unsigned long address, unsigned long bytes);
#endif

// The __shared__ variables of every kernel in the program: cuda_emu.h puts them in this section,
// and the linker names its ends (null when the program has none).
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

#include "cuda_emu.h"
#include "emu_inject.h"
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
Fault injected = Fault::kNone;
// A device fault's error, which CUDA returns from every call that reports the device's
// errors until the process ends (emu::inject(Fault::kNone) here).
cudaError_t sticky_error = cudaSuccess;
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

// ---- shared memory and what ThreadSanitizer is told ---------------------------------------

// Each block starts with shared memory that no block has used: 0xFF bytes (NaN floats, as fresh
// device memory), so a read before the block's own write shows. Blocks share the one copy of
// each __shared__ variable but are not ordered, so TSan is also told that it is new memory.
void fresh_shared_memory() {
  if (__start_emu_shared == nullptr) return;
  const std::size_t bytes = static_cast<std::size_t>(__stop_emu_shared - __start_emu_shared);
#if defined(EMU_TSAN)
  // Forgets every access to it, before the fill (the last block's) and after (the fill's).
  const auto begin = reinterpret_cast<std::uintptr_t>(__start_emu_shared);
  static const bool registered = (__tsan_java_init(begin, bytes), __tsan_java_alloc(begin, bytes), true);
  (void)registered;
  const auto forget = [&] {
    __tsan_java_free(begin, bytes);
    __tsan_java_alloc(begin, bytes);
  };
  forget();
  std::memset(__start_emu_shared, 0xFF, bytes);
  forget();
#else
  std::memset(__start_emu_shared, 0xFF, bytes);
#endif
}

// Under ThreadSanitizer (the tsan preset) every thread of a launch runs on a fiber and is a TSan
// thread of its own, and switching between them implies no order, so TSan reports two threads
// that touch the same global or shared memory with no barrier or atomics between them, whether
// or not the result changed (compute-sanitizer's racecheck, for shared memory only, on a GPU).
// The orders that hold are stated: the host's work before a launch happens before each of its
// threads (launch_begin), each thread before the host's work after the launch (launch_end), and
// the threads of a block at each of its barriers (a sync object per block, so blocks stay
// unordered). Without TSan the race_* functions do nothing.
//
// GCC's TSan keeps a vector clock for each of up to 8128 live threads; clang 14's newer runtime
// shares 256 slots among them and orders the threads that take turns in one, which hides races,
// so the tsan preset builds with GCC. Threads kRaceFibers apart in a launch share a TSan thread,
// which sees them in order.
constexpr std::uint64_t kRaceFibers = 4096;
struct RaceFiber {
  void* tsan = nullptr;
  std::uint64_t launch = 0;  // the last launch whose start it acquired
  char* stack = nullptr;     // its fiber stack (start_fiber)
};

#if defined(EMU_TSAN)
constexpr bool kRaceChecked = true;
struct RaceDetector {
  void* host = nullptr;
  std::vector<RaceFiber> fibers;      // [i]: thread i of every launch (mod kRaceFibers)
  std::vector<RaceFiber*> launched;   // the fibers the running launch has used
  std::uint64_t launch = 0;           // counts the launches
  char launch_begin = 0, launch_end = 0;  // their addresses are the sync objects
  std::unique_ptr<char> block_barrier;    // a new object for each block
};
RaceDetector race;
#else
constexpr bool kRaceChecked = false;
#endif

// The fiber of the thread with this index in its launch (block index × block size + thread
// index, both flattened); nullptr without TSan.
RaceFiber* race_fiber([[maybe_unused]] std::uint64_t thread_of_launch) {
#if defined(EMU_TSAN)
  if (race.fibers.empty()) race.fibers.resize(kRaceFibers);
  RaceFiber& fiber = race.fibers[thread_of_launch % kRaceFibers];
  if (fiber.tsan == nullptr) fiber.tsan = __tsan_create_fiber(0);
  return &fiber;
#else
  return nullptr;
#endif
}

// Which thread TSan sees run (nullptr: the host), called just before the stack switches. A
// thread's first run in a launch acquires what the host did before the launch.
void race_switch([[maybe_unused]] RaceFiber* fiber) {
#if defined(EMU_TSAN)
  // The bookkeeping happens before the switch: TSan sees the host's allocations as the host's.
  const bool first_run = fiber != nullptr && fiber->launch != race.launch;
  if (first_run) {
    fiber->launch = race.launch;
    race.launched.push_back(fiber);
  }
  __tsan_switch_to_fiber(fiber != nullptr ? fiber->tsan : race.host, __tsan_switch_to_fiber_no_sync);
  if (first_run) __tsan_acquire(&race.launch_begin);
#endif
}

void race_launch_begins() {
#if defined(EMU_TSAN)
  if (race.host == nullptr) race.host = __tsan_get_current_fiber();
  ++race.launch;
  __tsan_release(&race.launch_begin);
#endif
}
// Everything the launch's threads did happens before what the host does next.
void race_launch_ends() {
#if defined(EMU_TSAN)
  for (RaceFiber* fiber : race.launched) {
    __tsan_switch_to_fiber(fiber->tsan, __tsan_switch_to_fiber_no_sync);
    __tsan_release(&race.launch_end);
  }
  race.launched.clear();
  race_switch(nullptr);
  __tsan_acquire(&race.launch_end);
#endif
}
void race_block_begins() {
#if defined(EMU_TSAN)
  race.block_barrier = std::make_unique<char>();  // freeing the last one ended its sync object
#endif
}
void race_barrier_arrives() {
#if defined(EMU_TSAN)
  __tsan_release(race.block_barrier.get());
#endif
}
void race_barrier_leaves() {
#if defined(EMU_TSAN)
  __tsan_acquire(race.block_barrier.get());
#endif
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
  char* stack = nullptr;  // kFiberStack bytes, mmap'd once and reused (under TSan, the RaceFiber's)
  void* sp = nullptr;
  uint3 thread{};
  bool done = false;
  RaceFiber* race = nullptr;  // the thread as TSan sees it
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
  race_switch(fiber.race);
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
  race_switch(nullptr);
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

char* map_stack() {
  void* memory =
      mmap(nullptr, kFiberStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) {
    report("cannot map a fiber stack");
    std::abort();
  }
  return static_cast<char*>(memory);
}

void start_fiber(Fiber& fiber, uint3 thread, RaceFiber* race) {
#if defined(EMU_TSAN)
  // Under TSan a stack belongs to one TSan thread: another's use of it would look like a race.
  if (race->stack == nullptr) race->stack = map_stack();
  fiber.stack = race->stack;
#else
  if (fiber.stack == nullptr) fiber.stack = map_stack();
#endif
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
  fiber.race = race;
}

[[noreturn]] void fatal(const std::string& message) {
  report(message);
  std::fflush(stderr);
  std::abort();
}

// first_thread: the block's first thread as numbered in the launch (race_fiber).
void run_block_on_fibers(const std::function<void()>& body, dim3 block, std::uint64_t first_thread) {
  const std::uint64_t threads = volume(block);
  if (run.fibers.size() < threads) run.fibers.resize(threads);
  run.body = &body;
  for (std::uint64_t t = 0; t < threads; ++t)
    start_fiber(run.fibers[t], unflatten(t, block), race_fiber(first_thread + t));
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
  count_launch();
  running_kernel = name;
  // Under TSan every thread runs on a fiber, so that no two TSan threads share a stack.
  fiber_mode = kRaceChecked || !launched_kernels.count(name) || synchronising_kernels.count(name);
  barrier_called = false;
  position.block_dim = block;
  position.grid_dim = grid;
  const std::uint64_t blocks = volume(grid), threads = volume(block);
  const Shuffle block_order(blocks);
  race_launch_begins();
  for (std::uint64_t b = 0; b < blocks; ++b) {
    const std::uint64_t block_index = block_order(b);
    position.block = unflatten(block_index, grid);
    fresh_shared_memory();
    race_block_begins();
    if (fiber_mode) {
      run_block_on_fibers(body, block, block_index * threads);
    } else {
      const Shuffle thread_order(threads);
      for (std::uint64_t t = 0; t < threads; ++t) {
        position.thread = unflatten(thread_order(t), block);
        body();
      }
    }
  }
  race_launch_ends();
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

void inject(Fault fault) {
  injected = fault;
  if (fault == Fault::kNone) sticky_error = last_error = cudaSuccess;
}

Fault injected_fault() { return injected; }

std::atomic<std::uint64_t> launch_count{0};
void count_launch() { launch_count.fetch_add(1, std::memory_order_relaxed); }
std::uint64_t launches() { return launch_count; }

void set_last_error(cudaError_t error) {
  if (last_error == cudaSuccess) last_error = error;
}

void syncthreads() {
  if (!fiber_mode)
    fatal(std::string("kernel ") + running_kernel +
          " called __syncthreads in a launch run without fibers (its first launch never did): "
          "tests/emu/emu_runtime.cpp cannot run it");
  barrier_called = true;
  race_barrier_arrives();
  switch_to_scheduler();
  race_barrier_leaves();
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
  if (sticky_error != cudaSuccess) return sticky_error;
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

// A fault's sticky error is not cleared by reading it.
cudaError_t CUDARTAPI cudaGetLastError(void) {
  const cudaError_t last = std::exchange(emu::last_error, cudaSuccess);
  return emu::sticky_error != cudaSuccess ? emu::sticky_error : last;
}
cudaError_t CUDARTAPI cudaPeekAtLastError(void) {
  return emu::sticky_error != cudaSuccess ? emu::sticky_error : emu::last_error;
}

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
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
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
    case cudaErrorNotSupported: return "operation not supported";
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
  if (emu::sticky_error != cudaSuccess) return emu::sticky_error;
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
  if (emu::sticky_error != cudaSuccess) return emu::sticky_error;
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

// The context's end, where compute-sanitizer's leak check reports: here the leak check at exit,
// now.
cudaError_t CUDARTAPI cudaDeviceReset(void) {
  check_leaks_at_exit();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) {
  if (emu::sticky_error != cudaSuccess) return emu::sticky_error;
  return refuse_during_capture("cudaDeviceSynchronize");
}

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
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t) {
  if (emu::sticky_error != cudaSuccess) return emu::sticky_error;
  return refuse_during_capture("cudaStreamSynchronize");
}

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

cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t) {
  if (emu::sticky_error != cudaSuccess) return emu::sticky_error;
  return refuse_during_capture("cudaEventSynchronize");
}

cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start->recorded || !end->recorded) return cudaErrorInvalidResourceHandle;
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

// ---- graphs ----

cudaError_t CUDARTAPI cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (emu::injected == emu::Fault::kFaultBeforeCapture) {
    emu::injected = emu::Fault::kNone;
    emu::sticky_error = cudaErrorIllegalAddress;
    emu::report("injected: the work queued before this capture faulted (cudaErrorIllegalAddress from now on)");
  }
  if (emu::sticky_error != cudaSuccess) return emu::sticky_error;
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
  if (emu::injected == emu::Fault::kGraphsNotSupported) {
    emu::set_last_error(cudaErrorNotSupported);  // as the runtime does: cudaGetLastError sees it
    return cudaErrorNotSupported;
  }
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
