#pragma once
// Adam and AdamW (PyTorch's formulas) over one flat parameter buffer: one launch updates
// every weight and bias of the model, and checks them for the divergence watch. With t the step
// (1-based):
//   Adam:  g += wd·θ;   AdamW: θ -= lr·wd·θ
//   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
//   θ -= lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + ε)
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace mnist {

struct AdamConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.f;
  bool decoupled = false;  // true: AdamW
};

// The step-independent constants of an update, prepared on the host once, for the CPU twin and
// the GPU kernel alike, so that both round them the same way.
struct AdamScalars {
  float lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay;
  float decay;  // AdamW: 1 - lr·wd (lr·wd is exact in double, so the rounding is the same everywhere)
  bool decoupled;
};
inline AdamScalars adam_scalars(const AdamConfig& c) {
  AdamScalars s{};
  s.lr = c.lr;
  s.beta1 = c.beta1;
  s.one_minus_beta1 = 1.f - c.beta1;
  s.beta2 = c.beta2;
  s.one_minus_beta2 = 1.f - c.beta2;
  s.eps = c.eps;
  s.weight_decay = c.weight_decay;
  s.decay = static_cast<float>(1.0 - static_cast<double>(c.lr) * static_cast<double>(c.weight_decay));
  s.decoupled = c.decoupled;
  return s;
}

namespace ref {
// non_finite: the divergence flag (finite_check.h) to fold the updated parameters into, or null.
void adam_step(float* params, const float* grads, float* m, float* v, std::size_t n, const AdamConfig& config,
               std::int64_t step, std::int64_t* non_finite = nullptr);
}

namespace gpu {
// `step` is the device-side step counter; bias correction is computed from it on the
// device, so the launch has no host argument that changes per step (graph-capturable).
// non_finite: the device divergence flag the updated parameters are recorded in, or null.
void adam_step(float* params, const float* grads, float* m, float* v, std::size_t n, const AdamConfig& config,
               const std::int64_t* step, cudaStream_t stream, std::int64_t* non_finite = nullptr);
// ++*step on the device, for a step without a batch gather (which advances it: gather.h).
void advance_step(std::int64_t* step, cudaStream_t stream);
}  // namespace gpu

}  // namespace mnist
