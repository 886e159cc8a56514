#pragma once
// Fused softmax + cross-entropy over rows of logits [rows, classes] with integer labels:
//   target t = (1 - s)·onehot(label) + s/classes       (s: label smoothing, 0 = plain CE)
//   loss[r]  = logsumexp(z_r) - sum_c t_c z_rc          (max subtracted first: stable for |z| ~ 1e4)
//   dlogits  = (softmax(z_r) - t) / rows                 (the gradient of the mean loss)
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mnist {
namespace ref {
// dlogits may be null (evaluation). dlogits may alias logits.
void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing);
}
namespace gpu {
void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing, cudaStream_t stream);
}
}  // namespace mnist
