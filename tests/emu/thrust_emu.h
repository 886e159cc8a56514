#pragma once
// The GPU emulator's Thrust (tests/emu/README.md): the emulator build compiles Thrust for its
// CPP (host) system, which has no thrust::cuda::par_nosync. This policy stands in for it: each
// algorithm host/train/gpu_trainer.cu calls with it runs, in order, on the stream it names (or is
// recorded into the stream's capture), like the CUDA system's work on that stream.
#include <thrust/execution_policy.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <iterator>
#include <numeric>
#include <vector>

#include "emu_internal.h"

THRUST_NAMESPACE_BEGIN
namespace cuda {

struct EmuStreamPolicy : thrust::cpp::execution_policy<EmuStreamPolicy> {
  cudaStream_t stream = nullptr;
};

// par_nosync(allocator).on(stream); the emulator needs no scratch memory.
struct EmuPolicy {
  EmuStreamPolicy on(cudaStream_t stream) const {
    EmuStreamPolicy policy;
    policy.stream = stream;
    return policy;
  }
};
template <class Allocator>
EmuPolicy par_nosync(Allocator&) {
  return {};
}

inline void emu_run(cudaStream_t stream, std::function<void()> work) {
  const cudaError_t status = ::emu::submit(stream, std::move(work));
  if (status != cudaSuccess) ::emu::set_last_error(status);
}

// Found by argument-dependent lookup from thrust::sequence, thrust::transform and
// thrust::stable_sort_by_key, for this policy. The work is written with the standard library:
// Thrust's own host system binds references to null policy pointers, which UBSan rejects.
template <class It>
void sequence(EmuStreamPolicy& policy, It first, It last) {
  emu_run(policy.stream, [=] {
    using Value = typename std::iterator_traits<It>::value_type;
    Value value = 0;
    for (It it = first; it != last; ++it) *it = value++;
  });
}

template <class In, class Out, class Op>
Out transform(EmuStreamPolicy& policy, In first, In last, Out result, Op op) {
  emu_run(policy.stream, [=] {
    Out out = result;
    for (In it = first; it != last; ++it) *out++ = op(*it);
  });
  return result + (last - first);
}

// Stable: equal keys keep their order (std::stable_sort of the positions by key).
template <class Keys, class Values>
void stable_sort_by_key(EmuStreamPolicy& policy, Keys keys_first, Keys keys_last, Values values_first) {
  emu_run(policy.stream, [=] {
    const auto n = static_cast<std::size_t>(keys_last - keys_first);
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return keys_first[a] < keys_first[b]; });
    using Key = typename std::iterator_traits<Keys>::value_type;
    using Value = typename std::iterator_traits<Values>::value_type;
    std::vector<Key> keys(n);
    std::vector<Value> values(n);
    for (std::size_t i = 0; i < n; ++i) {
      keys[i] = keys_first[order[i]];
      values[i] = values_first[order[i]];
    }
    std::copy(keys.begin(), keys.end(), keys_first);
    std::copy(values.begin(), values.end(), values_first);
  });
}

}  // namespace cuda
THRUST_NAMESPACE_END
