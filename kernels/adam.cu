// Adam: g += wd·θ;  AdamW: θ *= 1 - lr·wd.  Then m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
// θ -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε), with t = *step read on the device and
// lr = lr(t), the schedule's rate (adam.h).
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "mnist/core/check.h"
#include "mnist/core/launch.h"
#include "mnist/ops/adam.h"
#include "mnist/ops/finite_check.cuh"

namespace mnist::gpu {
namespace {


// Explicitly rounded intrinsics (never contracted into other FMAs) in the same order as the
// CPU twin's std::fma and operators: m and v come out bit-identical to the CPU.
__device__ __forceinline__ void adam_element(float& p, float g, float& m, float& v, const AdamScalars& s,
                                             float step_size, float sqrt_bc2) {
  if (s.decoupled)
    p = __fmul_rn(p, s.decay);
  else
    g = __fmaf_rn(s.weight_decay, p, g);
  m = __fmaf_rn(s.beta1, m, __fmul_rn(s.one_minus_beta1, g));
  v = __fmaf_rn(s.beta2, v, __fmul_rn(__fmul_rn(s.one_minus_beta2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), sqrt_bc2), s.eps);
  p = __fmaf_rn(-step_size, __fdiv_rn(m, denom), p);
}

// Elements [head, head + 4·vec_count) are 16-byte aligned in all four buffers and go as float4;
// the head before them and the tail after them go one float at a time. Each thread keeps the
// lowest divergence code of the parameters it wrote and records it once, at the end.
__global__ void adam_kernel(float* params, const float* grads, float* m, float* v, std::size_t n,
                            std::size_t head, std::size_t vec_count, AdamScalars constants,
                            const std::int64_t* step, std::int64_t* non_finite) {
  // The rate of this step (its schedule) and the bias corrections from the device step counter,
  // in double (pow) as on the CPU.
  const AdamScalars s = at_step(constants, *step);
  const double t = static_cast<double>(*step);
  const double bc1 = 1.0 - pow(static_cast<double>(s.beta1), t);
  const double bc2 = 1.0 - pow(static_cast<double>(s.beta2), t);
  const float step_size = static_cast<float>(static_cast<double>(s.lr) / bc1);
  const float sqrt_bc2 = static_cast<float>(sqrt(bc2));

  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  const std::size_t first = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;

  int code = kNonFiniteCodes;
  float4* p4 = reinterpret_cast<float4*>(params + head);
  const float4* g4 = reinterpret_cast<const float4*>(grads + head);
  float4* m4 = reinterpret_cast<float4*>(m + head);
  float4* v4 = reinterpret_cast<float4*>(v + head);
  for (std::size_t i = first; i < vec_count; i += stride) {
    float4 p = p4[i], mm = m4[i], vv = v4[i];
    const float4 g = g4[i];
    adam_element(p.x, g.x, mm.x, vv.x, s, step_size, sqrt_bc2);
    adam_element(p.y, g.y, mm.y, vv.y, s, step_size, sqrt_bc2);
    adam_element(p.z, g.z, mm.z, vv.z, s, step_size, sqrt_bc2);
    adam_element(p.w, g.w, mm.w, vv.w, s, step_size, sqrt_bc2);
    code = min(code, min(min(classify_finite(p.x, kParamNaN), classify_finite(p.y, kParamNaN)),
                         min(classify_finite(p.z, kParamNaN), classify_finite(p.w, kParamNaN))));
    p4[i] = p;
    m4[i] = mm;
    v4[i] = vv;
  }

  const std::size_t tail_start = head + 4 * vec_count;
  const std::size_t scalar_count = head + (n - tail_start);
  for (std::size_t i = first; i < scalar_count; i += stride) {
    const std::size_t e = i < head ? i : tail_start + (i - head);
    adam_element(params[e], grads[e], m[e], v[e], s, step_size, sqrt_bc2);
    code = min(code, classify_finite(params[e], kParamNaN));
  }
  record_non_finite(non_finite, *step, code);
}

// The counter lives on the device, so a captured CUDA graph replays with a fresh step (Adam's
// bias correction, dropout's Philox key) and no launch argument has to change between replays.
// The trainers advance it in their batch gather; this is for a step that has none.
__global__ void advance_step_kernel(std::int64_t* step) { ++*step; }

}  // namespace

void adam_step(float* params, const float* grads, float* m, float* v, std::size_t n, const AdamConfig& config,
               const std::int64_t* step, cudaStream_t stream, std::int64_t* non_finite) {
  if (n == 0) return;
  const AdamScalars s = adam_scalars(config);

  // float4 needs the four buffers equally misaligned (then a scalar head of 0..3 elements
  // reaches the 16-byte boundary); otherwise every element goes the scalar way.
  const auto misalignment = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16; };
  const std::uintptr_t mis = misalignment(params);
  std::size_t head = n, vec_count = 0;
  if (mis % sizeof(float) == 0 && misalignment(grads) == mis && misalignment(m) == mis && misalignment(v) == mis) {
    head = std::min(n, static_cast<std::size_t>((16 - mis) % 16 / sizeof(float)));
    vec_count = (n - head) / 4;
  }
  const std::size_t scalar_count = n - 4 * vec_count;
  const std::size_t work = std::max(vec_count, scalar_count);
  adam_kernel<<<grid_blocks(std::int64_t(work)), kBlockThreads, 0, stream>>>(params, grads, m, v, n, head, vec_count,
                                                                             s, step, non_finite);
  MNIST_CHECK_LAUNCH();
}

void advance_step(std::int64_t* step, cudaStream_t stream) {
  advance_step_kernel<<<1, 1, 0, stream>>>(step);
  MNIST_CHECK_LAUNCH();
}

}  // namespace mnist::gpu
