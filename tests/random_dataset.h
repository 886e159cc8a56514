#pragma once
// A dataset of random pixels and labels, split as the command line splits MNIST
// (split_dataset): enough to train, shuffle and drop out deterministically in a test.
#include <cstddef>
#include <cstdint>
#include <random>

#include "mnist/train/trainer.h"
#include "test_util.h"

namespace mnist::test {

// Owns the host arrays the DataSplit points into, so it is neither copied nor moved.
class RandomDataset {
 public:
  // train_images: the 60,000 of MNIST's training file (the validation split is carved from
  // them by config.val_split); test_images: the test file's.
  RandomDataset(std::mt19937_64& rng, const TrainConfig& config, int train_images, int test_images) {
    std::uniform_int_distribution<int> pixel(0, 255);
    const auto fill = [&](LabeledImages& set, int count) {
      set.pixels.resize(std::size_t(count) * kPixels);
      for (auto& p : set.pixels) p = static_cast<std::uint8_t>(pixel(rng));
      set.labels = random_labels(rng, std::size_t(count));
    };
    fill(data_.train, train_images);
    fill(data_.test, test_images);
    split_ = split_dataset(data_, config);
  }
  RandomDataset(const RandomDataset&) = delete;
  RandomDataset& operator=(const RandomDataset&) = delete;
  const DataSplit& split() const { return split_; }

 private:
  Dataset data_;
  DataSplit split_;
};

}  // namespace mnist::test
