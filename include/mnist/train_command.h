#pragma once
#include "mnist/config.h"

namespace mnist {

// `mnist train`: validate → load → split → pick the device → train → write the report.
// Returns the process exit status.
int run_train(const TrainConfig& config);

}  // namespace mnist
