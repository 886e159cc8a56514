#pragma once
// The device side of the divergence flag (finite_check.h), for the kernels that record it as they
// write the values it watches: softmax-cross-entropy (the losses) and Adam (the parameters). So
// the watch costs no launch and no second read of the parameters.
#include <cuda/atomic>

#include <cstdint>

#include "mnist/ops/finite_check.h"

namespace mnist::gpu {

// kNonFiniteCodes for a finite x, else nan_code (NaN) or nan_code + 1 (±inf): by the bits, as the
// CPU twin classifies them.
__device__ __forceinline__ int classify_finite(float x, int nan_code) {
  const unsigned bits = __float_as_uint(x);
  if ((bits & 0x7f800000u) != 0x7f800000u) return kNonFiniteCodes;
  return (bits & 0x007fffffu) ? nan_code : nan_code + 1;
}

// flag = min(flag, step·4 + code) when code names a non-finite value (a thread passes the lowest
// code it saw). Integers under an atomic minimum: the earliest step and, within a step, the
// lowest code win, however the threads are scheduled; a healthy step touches the flag nowhere.
__device__ __forceinline__ void record_non_finite(std::int64_t* flag, std::int64_t step, int code) {
  if (flag == nullptr || code >= kNonFiniteCodes) return;
  cuda::atomic_ref<std::int64_t, cuda::thread_scope_device>(*flag).fetch_min(step * kNonFiniteCodes + code,
                                                                            cuda::memory_order_relaxed);
}

}  // namespace mnist::gpu
