// CPU twin of kernels/adam.cu. Every multiply-add is an explicit std::fma and no other product
// feeds an addition, so no compiler can contract differently from the GPU's explicitly rounded
// intrinsics: m and v match the GPU bit for bit.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "mnist/core/cpu_clones.h"
#include "mnist/ops/adam.h"
#include "mnist/ops/finite_check.h"

namespace mnist::twin {
namespace {

// Always inlined: into each clone of adam_step, so that it is compiled for that clone's CPU.
template <bool kDecoupled>
[[gnu::always_inline]] inline void update(float* params, const float* grads, float* m, float* v, std::size_t n,
                                          const AdamScalars s, float step_size, float sqrt_bc2) {
  for (std::size_t i = 0; i < n; ++i) {
    float p = params[i];
    float g = grads[i];
    if (kDecoupled)
      p = p * s.decay;  // AdamW: decay the weight itself
    else
      g = std::fma(s.weight_decay, p, g);  // Adam: L2 term in the gradient
    m[i] = std::fma(s.beta1, m[i], s.one_minus_beta1 * g);
    v[i] = std::fma(s.beta2, v[i], (s.one_minus_beta2 * g) * g);
    const float denom = std::sqrt(v[i]) / sqrt_bc2 + s.eps;
    params[i] = std::fma(-step_size, m[i] / denom, p);
  }
}

}  // namespace

MNIST_CPU_CLONES  // AVX2 + FMA where the CPU has them: 8 floats at a time, the same bits
void adam_step(float* params, const float* grads, float* m, float* v, std::size_t n, const AdamConfig& config,
               std::int64_t step, std::int64_t* non_finite) {
  // Bias corrections in double, t = step (1-based).
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(config.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(config.beta2), t);

  // The constants by value (adam_scalars), at this step's scheduled rate: read through `config`
  // in the loop, each would be reloaded after every store (a float store may alias it), which
  // keeps the loop scalar.
  const AdamScalars s = at_step(adam_scalars(config), step);
  const float step_size = static_cast<float>(static_cast<double>(s.lr) / bc1);
  const float sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
  if (s.decoupled)
    update<true>(params, grads, m, v, n, s, step_size, sqrt_bc2);
  else
    update<false>(params, grads, m, v, n, s, step_size, sqrt_bc2);
  if (non_finite != nullptr) *non_finite = std::min(*non_finite, finite_check(nullptr, 0, params, n, step));
}

}  // namespace mnist::twin
