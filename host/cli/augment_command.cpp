#include "mnist/cli/augment_command.h"

#include <png.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "mnist/core/files.h"
#include "mnist/core/printable.h"
#include "mnist/data/augmentation.h"
#include "mnist/data/idx.h"
#include "mnist/ops/gather.h"

namespace mnist {

namespace {

constexpr int kGap = 4;          // image pixels between the original and its versions
constexpr std::uint8_t kGapShade = 96;

// The training images to show: the first of each class in class order, then the images after
// the first of class 9 (so 10 rows show every digit once).
std::vector<std::int32_t> pick_images(const LabeledImages& train, int rows) {
  std::vector<std::int32_t> picked;
  for (int label = 0; label < 10 && int(picked.size()) < rows; ++label) {
    const auto at = std::find(train.labels.begin(), train.labels.end(), label);
    if (at != train.labels.end()) picked.push_back(std::int32_t(at - train.labels.begin()));
  }
  for (std::int32_t i = 0; int(picked.size()) < rows && i < std::int32_t(train.count()); ++i)
    if (std::find(picked.begin(), picked.end(), i) == picked.end()) picked.push_back(i);
  return picked;
}

std::string encode_gray_png(const std::vector<std::uint8_t>& pixels, int width, int height) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = png_uint_32(width);
  image.height = png_uint_32(height);
  image.format = PNG_FORMAT_GRAY;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), 0, nullptr))
    throw IoError(std::string("cannot encode the picture as PNG: ") + image.message);
  std::string bytes(size, '\0');
  if (!png_image_write_to_memory(&image, bytes.data(), &size, 0, pixels.data(), 0, nullptr))
    throw IoError(std::string("cannot encode the picture as PNG: ") + image.message);
  bytes.resize(size);
  return bytes;
}

}  // namespace

void run_augment(const TrainConfig& config, const AugmentPicture& picture) {
  validate(config);
  if (config.augment == "none")
    throw ConfigError("--augment none changes nothing to draw; give --augment affine or elastic");
  if (picture.rows < 1 || picture.rows > 100) throw ConfigError("--rows must be in 1..100");
  if (picture.versions < 1 || picture.versions > 50) throw ConfigError("--versions must be in 1..50");
  if (picture.zoom < 1 || picture.zoom > 16) throw ConfigError("--zoom must be in 1..16");

  const Dataset data = load_dataset(config.resolved_data_dir());
  const std::vector<std::int32_t> indices = pick_images(data.train, picture.rows);
  const int rows = int(indices.size());
  const AugmentParams params = augment_params(config);

  // tiles[v]: the batch of version v (0: the originals), rows × 784 floats in [0, 1].
  std::vector<std::vector<float>> tiles(picture.versions + 1, std::vector<float>(std::size_t(rows) * kPixels));
  std::vector<std::uint8_t> labels(rows);
  twin::gather_batch(data.train.pixels.data(), data.train.labels.data(), indices.data(), rows, kPixels,
                     tiles[0].data(), labels.data());
  std::int64_t step = 0;
  for (int v = 1; v <= picture.versions; ++v)
    twin::gather_augmented_batch(data.train.pixels.data(), data.train.labels.data(), indices.data(), rows, params,
                                tiles[v].data(), labels.data(), &step);

  const int zoom = picture.zoom;
  const int width = (kImageCols * (picture.versions + 1) + kGap) * zoom;
  const int height = kImageRows * rows * zoom;
  std::vector<std::uint8_t> canvas(std::size_t(width) * height, kGapShade);
  for (int v = 0; v <= picture.versions; ++v)
    for (int i = 0; i < rows; ++i)
      for (int y = 0; y < kImageRows * zoom; ++y)
        for (int x = 0; x < kImageCols * zoom; ++x) {
          const float value = tiles[v][std::size_t(i) * kPixels + (y / zoom) * kImageCols + x / zoom];
          const int cx = (v * kImageCols + (v > 0 ? kGap : 0)) * zoom + x, cy = i * kImageRows * zoom + y;
          canvas[std::size_t(cy) * width + cx] = std::uint8_t(std::clamp(value, 0.0f, 1.0f) * 255.0f + 0.5f);
        }
  write_file_atomically(picture.out, encode_gray_png(canvas, width, height));
  std::printf("%s: %d training images (left) and %d augmented versions of each (--augment %s)\n",
              printable(picture.out).c_str(),
              rows, picture.versions, config.augment.c_str());
}

}  // namespace mnist
