// CPU twin of kernels/adam.cu. Every multiply-add is an explicit std::fma and no other product
// feeds an addition, so no compiler can contract differently from the GPU's explicitly rounded
// intrinsics: m and v match the GPU bit for bit.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "mnist/ops/adam.h"

namespace mnist::ref {

void adam_step(float* params, const float* grads, float* m, float* v, std::size_t n, const AdamConfig& config,
               std::int64_t step) {
  // Bias corrections in double, t = step (1-based).
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(config.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(config.beta2), t);
  const float step_size = static_cast<float>(static_cast<double>(config.lr) / bc1);
  const float sqrt_bc2 = static_cast<float>(std::sqrt(bc2));

  const float one_minus_beta1 = 1.f - config.beta1;
  const float one_minus_beta2 = 1.f - config.beta2;
  const float decay =
      static_cast<float>(1.0 - static_cast<double>(config.lr) * static_cast<double>(config.weight_decay));

  for (std::size_t i = 0; i < n; ++i) {
    float p = params[i];
    float g = grads[i];
    if (config.decoupled)
      p = p * decay;  // AdamW: decay the weight itself
    else
      g = std::fma(config.weight_decay, p, g);  // Adam: L2 term in the gradient
    m[i] = std::fma(config.beta1, m[i], one_minus_beta1 * g);
    v[i] = std::fma(config.beta2, v[i], (one_minus_beta2 * g) * g);
    const float denom = std::sqrt(v[i]) / sqrt_bc2 + config.eps;
    params[i] = std::fma(-step_size, m[i] / denom, p);
  }
}

}  // namespace mnist::ref
