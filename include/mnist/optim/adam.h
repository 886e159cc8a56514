#pragma once
// The optimizer step of every model: one Adam (or AdamW) update of its parameters from its
// gradients (ops/adam.h), at the rate the schedule of `config` gives the step.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "mnist/core/device.h"
#include "mnist/model/param_buffers.h"
#include "mnist/ops/adam.h"

namespace mnist {

// On the CPU, at step `step` (1-based).
void adam_update(const AdamConfig& config, ParamBuffers<std::vector<float>>& buffers, std::int64_t step);

// On the device, enqueued on `stream`: the step is read from device memory (so a captured graph
// follows the schedule), and a parameter that stops being finite is recorded in `non_finite`
// (finite_check.h) where one is given.
void adam_update(const AdamConfig& config, ParamBuffers<DeviceBuffer<float>>& buffers, const std::int64_t* step,
                 cudaStream_t stream, std::int64_t* non_finite = nullptr);

}  // namespace mnist
