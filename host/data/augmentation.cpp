// The augmentation of training batches a run's options ask for.
#include "mnist/data/augmentation.h"

namespace mnist {

AugmentParams augment_params(const TrainConfig& c) {
  return make_augment_params(c.seed, c.shift, c.rotate, c.scale, c.augment == "elastic", c.elastic_alpha,
                             c.elastic_sigma);
}

}  // namespace mnist
