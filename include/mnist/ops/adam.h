#pragma once
// Adam and AdamW (PyTorch's formulas) over one flat parameter buffer: one launch updates
// every weight and bias of the model, and checks them for the divergence watch. With t the step
// (1-based):
//   Adam:  g += wd·θ;   AdamW: θ -= lr·wd·θ
//   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
//   θ -= lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + ε)
// The learning rate of step t follows a schedule (LrSchedule, below): a pure function of t and
// the options, computed where the update runs (on the GPU from the device step counter, so a
// captured graph replays the right rate at every step).
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "mnist/core/hd.h"

namespace mnist {

// lr(t) for the optimizer step t = 1, 2, … of a run of `total_steps` steps, from `base` (--lr):
//   warm-up   t ≤ warmup_steps: base · t / warmup_steps (onecycle: from base/25 up to base)
//   constant  base
//   cosine    min + (base - min) · (1 + cos(π·p)) / 2,  p = (t - warmup) / (total - warmup)
//   onecycle  the same cosine after its warm-up (which defaults to 30% of the run)
//   step      base · decay^⌊(t - 1) / step_steps⌋
// In double, rounded to float once; constant is `base` exactly, so it changes no bit.
struct LrSchedule {
  enum Kind : int { kConstant = 0, kCosine, kOneCycle, kStep };
  Kind kind = kConstant;
  float base = 1e-3f;
  double min = 0.0;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  std::int64_t step_steps = 1;  // step: the steps between decays
  double decay = 0.1;           // step: the factor at each
};

// cos(π·p) for p in [0, 1]: CUDA's cospi needs no argument reduction (cos would, through local
// memory, in every thread of the Adam kernel).
MNIST_HD double cos_pi(double p) {
#if defined(__CUDA_ARCH__)
  return cospi(p);
#else
  return std::cos(3.14159265358979323846 * p);
#endif
}

MNIST_HD float scheduled_lr(const LrSchedule& s, std::int64_t t) {
  if (s.kind == LrSchedule::kConstant && s.warmup_steps == 0) return s.base;
  const double base = s.base;
  if (t <= s.warmup_steps) {
    const double f = static_cast<double>(t) / static_cast<double>(s.warmup_steps);
    const double start = s.kind == LrSchedule::kOneCycle ? base / 25.0 : 0.0;
    return static_cast<float>(start + (base - start) * f);
  }
  switch (s.kind) {
    case LrSchedule::kCosine:
    case LrSchedule::kOneCycle: {
      const double span = static_cast<double>(s.total_steps - s.warmup_steps);
      double p = span > 0 ? static_cast<double>(t - s.warmup_steps) / span : 1.0;
      p = p > 1.0 ? 1.0 : p;
      return static_cast<float>(s.min + (base - s.min) * 0.5 * (1.0 + cos_pi(p)));
    }
    case LrSchedule::kStep:
      return static_cast<float>(base * pow(s.decay, static_cast<double>((t - 1) / s.step_steps)));
    default:
      return s.base;
  }
}

struct AdamConfig {
  float lr = 1e-3f;  // the base rate; the schedule's `base` is set from it (adam_scalars)
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.f;
  bool decoupled = false;  // true: AdamW
  LrSchedule schedule;     // its kind and shape; base = lr
};

// The step-independent constants of an update, prepared on the host once, for the CPU twin and
// the GPU kernel alike, so that both round them the same way.
struct AdamScalars {
  float lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay;
  float decay;  // AdamW: 1 - lr·wd (lr·wd is exact in double, so the rounding is the same everywhere)
  bool decoupled;
  LrSchedule schedule;
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
  s.schedule = c.schedule;
  s.schedule.base = c.lr;
  return s;
}

// The scalars of step t: its scheduled rate and, for AdamW, its decay factor.
MNIST_HD AdamScalars at_step(AdamScalars s, std::int64_t t) {
  s.lr = scheduled_lr(s.schedule, t);
  s.decay = static_cast<float>(1.0 - static_cast<double>(s.lr) * static_cast<double>(s.weight_decay));
  return s;
}

namespace twin {
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
