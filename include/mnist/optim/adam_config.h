#pragma once
#include "mnist/core/config.h"
#include "mnist/ops/adam.h"

namespace mnist {

// The optimizer a run's options ask for (Adam or AdamW, β1 0.9, β2 0.999, ε 1e-8) with its
// learning-rate schedule laid over the run's epochs × steps_per_epoch optimizer steps.
AdamConfig adam_config(const TrainConfig& config, int steps_per_epoch);

}  // namespace mnist
