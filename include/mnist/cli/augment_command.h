#pragma once
// `mnist augment`: a picture of what the augmentation options do, before training with them.
#include <string>

#include "mnist/core/config.h"

namespace mnist {

struct AugmentPicture {
  std::string out;   // the PNG to write
  int rows = 10;     // training images, one per row: the first of each class, then the next ones
  int versions = 8;  // augmented versions of each, beside the original
  int zoom = 3;      // screen pixels per image pixel
};

// Draws the grid: per row an original training image of config's dataset, a gap, then
// picture.versions augmented versions of it, as training steps 1, 2, … would draw them for
// config (its --augment, --shift, …, --seed). White digits on black, as MNIST stores them.
// Throws ConfigError for bad options (validate's lines), DataError for a missing dataset.
void run_augment(const TrainConfig& config, const AugmentPicture& picture);

}  // namespace mnist
