// The optimizer step over a model's buffers (include/mnist/optim/adam.h).
#include "mnist/optim/adam.h"

namespace mnist {

void adam_update(const AdamConfig& config, ParamBuffers<std::vector<float>>& b, std::int64_t step) {
  twin::adam_step(b.params.data(), b.grads.data(), b.adam_m.data(), b.adam_v.data(), b.size(), config, step);
}

void adam_update(const AdamConfig& config, ParamBuffers<DeviceBuffer<float>>& b, const std::int64_t* step,
                 cudaStream_t stream, std::int64_t* non_finite) {
  gpu::adam_step(b.params.data(), b.grads.data(), b.adam_m.data(), b.adam_v.data(), b.size(), config, step, stream,
                 non_finite);
}

}  // namespace mnist
