#pragma once
// Fused softmax + cross-entropy over rows of logits [rows, classes] with integer labels:
//   target t = (1 - s)·onehot(label) + s/classes       (s: label smoothing, 0 = plain CE)
//   loss[r]  = logsumexp(z_r) - sum_c t_c z_rc          (max subtracted first: stable for |z| ~ 1e4)
//   dlogits  = (softmax(z_r) - t) / rows                 (the gradient of the mean loss)
// and, in training, a NaN or infinite loss[r] into the divergence flag (finite_check.h).
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mnist {
namespace ref {
// dlogits may be null (evaluation). dlogits may alias logits. non_finite: the divergence flag
// to fold the losses into at `step`, or null.
void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing, std::int64_t step = 0,
                           std::int64_t* non_finite = nullptr);
}
namespace gpu {
// step: the device step counter; non_finite: the device divergence flag, or null (then step may
// be null too).
void softmax_cross_entropy(const float* logits, const std::uint8_t* labels, float* loss, float* dlogits, int rows,
                           int classes, float label_smoothing, cudaStream_t stream,
                           const std::int64_t* step = nullptr, std::int64_t* non_finite = nullptr);
}
}  // namespace mnist
