#pragma once
// IDX files (the MNIST format), raw or gzip-compressed. Loading validates everything and
// throws DataError naming the file and what is wrong; a dataset is never half-loaded.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "mnist/core/errors.h"
#include "mnist/core/mnist.h"

namespace mnist {


// The name of class `label` (0..9) of `dataset`: Fashion-MNIST's ("ankle boot" for 9, from its
// README); empty for MNIST, whose label is the digit itself.
std::string class_name(const std::string& dataset, int label);

struct ImageSet {
  std::vector<std::uint8_t> pixels;  // count × 784, row-major
  std::uint32_t count = 0;
};

struct LabeledImages {
  std::vector<std::uint8_t> pixels;  // count × 784
  std::vector<std::uint8_t> labels;  // count, each 0..9
  std::uint32_t count() const { return static_cast<std::uint32_t>(labels.size()); }
};

struct Dataset {
  LabeledImages train;  // all 60,000 training images (the validation split is carved later)
  LabeledImages test;   // 10,000
};

// The whole file, inflated when it is gzip data (detected by its magic bytes, not its name).
std::vector<std::uint8_t> read_maybe_gzip(const std::string& path);

// Inflating stops with a DataError past this many bytes: a few hundred bytes of gzip can
// claim gigabytes (a "zip bomb"), and no 28×28 IDX file is near it (MNIST's 60,000 training
// images are 47 MB; 1 GiB is 1.3 million images).
constexpr std::size_t kMaxInflatedBytes = std::size_t{1} << 30;

// gzip data held in memory (one or more members), inflated; `path` only names it in messages.
// Throws DataError when it is corrupt, truncated or would inflate past `max_bytes`.
std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& gzip, const std::string& path,
                                 std::size_t max_bytes = kMaxInflatedBytes);

ImageSet load_idx_images(const std::string& path);               // magic 0x00000803, 28×28
std::vector<std::uint8_t> load_idx_labels(const std::string& path);  // magic 0x00000801, labels 0..9

// The same checks on a file's contents already in memory (raw or gzip, detected the same way);
// `path` only names them in messages. The two loaders above read the file and call these.
ImageSet parse_idx_images(const std::vector<std::uint8_t>& contents, const std::string& path);
std::vector<std::uint8_t> parse_idx_labels(const std::vector<std::uint8_t>& contents, const std::string& path);

LabeledImages load_labeled(const std::string& images_path, const std::string& labels_path);

// Finds `<dir>/<name>` or `<dir>/<name>.gz` for the four standard names; a missing file is a
// DataError that names it and the fetch command.
Dataset load_dataset(const std::string& dir);

}  // namespace mnist
