#pragma once
#include "mnist/core/config.h"
#include "mnist/ops/augment.h"

namespace mnist {

// The augmentation of training batches the options ask for (used when augment != "none").
AugmentParams augment_params(const TrainConfig& config);

}  // namespace mnist
