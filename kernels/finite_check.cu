// flag = min(flag, step·4 + code) for the first NaN or infinity in the losses (codes 0, 1) or
// the parameters (codes 2, 3); see include/mnist/ops/finite_check.h. Each thread keeps the
// lowest code it saw over a grid-stride loop and only threads that saw one touch the flag,
// so a healthy step costs one read of both arrays and no atomic read-modify-writes.
#include <cuda/atomic>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "mnist/check.h"
#include "mnist/ops/finite_check.h"

namespace mnist::gpu {
namespace {

constexpr int kThreads = 256;
constexpr std::size_t kMaxBlocks = 1024;  // grid-stride beyond this

// kNonFiniteCodes for a finite value, else nan_code (NaN) or nan_code + 1 (±inf): by the bits,
// as the CPU twin classifies them.
__device__ __forceinline__ int classify(float x, int nan_code) {
  const unsigned bits = __float_as_uint(x);
  if ((bits & 0x7f800000u) != 0x7f800000u) return kNonFiniteCodes;
  return (bits & 0x007fffffu) ? nan_code : nan_code + 1;
}

__global__ void finite_check_kernel(const float* losses, std::size_t loss_count, const float* params,
                                    std::size_t param_count, const std::int64_t* step, std::int64_t* flag) {
  const std::int64_t t = *step;
  // Other blocks of this launch may lower the flag meanwhile: every access to it is atomic.
  cuda::atomic_ref<std::int64_t, cuda::thread_scope_device> lowest(*flag);
  // A flag from an earlier step already holds the answer. One from this step (another block of
  // this launch) does not: this block may still find a lower code.
  if (lowest.load(cuda::memory_order_relaxed) < t * kNonFiniteCodes) return;

  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  const std::size_t first = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int code = kNonFiniteCodes;
  for (std::size_t i = first; i < loss_count; i += stride) code = min(code, classify(losses[i], kLossNaN));
  for (std::size_t i = first; i < param_count; i += stride) code = min(code, classify(params[i], kParamNaN));
  if (code < kNonFiniteCodes) lowest.fetch_min(t * kNonFiniteCodes + code, cuda::memory_order_relaxed);
}

}  // namespace

void finite_check(const float* losses, std::size_t loss_count, const float* params, std::size_t param_count,
                  const std::int64_t* step, std::int64_t* flag, cudaStream_t stream) {
  const std::size_t work = std::max<std::size_t>(std::max(loss_count, param_count), 1);
  const int blocks = static_cast<int>(std::min((work + kThreads - 1) / kThreads, kMaxBlocks));
  finite_check_kernel<<<blocks, kThreads, 0, stream>>>(losses, loss_count, params, param_count, step, flag);
  MNIST_CHECK_LAUNCH();
}

}  // namespace mnist::gpu
