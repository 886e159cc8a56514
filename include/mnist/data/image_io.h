#pragma once
// Reading digit images for `mnist predict`: PNG (libpng), JPEG (libjpeg-turbo) and PGM, detected
// by their content, then prepared the way MNIST's own digits were (LeCun et al.): ink made white
// on black, the ink's bounding box scaled to fit 20×20 with its aspect ratio kept (area
// averaging), and placed in 28×28 with its centre of mass at the centre.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "mnist/core/errors.h"

namespace mnist {


// Limits checked before any pixel buffer is allocated: a side, and the pixels in all.
constexpr int kMaxImageSide = 8192;
constexpr long kMaxImagePixels = 16l << 20;  // a 12-megapixel photo fits

// An 8-bit grayscale image, row-major.
struct GrayImage {
  int width = 0, height = 0;
  std::vector<std::uint8_t> pixels;
};

// Decodes a file's bytes (`path` only names it in messages): PNG of every colour type, bit depth,
// palette and interlace, its alpha composited over the paper (composite_alpha); JPEG, baseline
// or progressive; PGM P5 or P2 with maxval ≤ 255. Colour becomes gray as libpng and libjpeg
// convert it. Throws ImageError "<path>: <what is wrong>".
GrayImage decode_image(const std::vector<std::uint8_t>& bytes, const std::string& path);
GrayImage read_image(const std::string& path);  // also: not found, a directory, over 64 MiB

// Gray + alpha pairs to gray: over white when the opaque pixels are dark on average (a dark
// drawing on a transparent canvas), else over black.
GrayImage composite_alpha(int width, int height, const std::vector<std::uint8_t>& gray_alpha);

// Which way the ink goes: decided by the border (paper) brightness, or forced.
enum class Invert { kAuto, kYes, kNo };

// The 28×28 (784 bytes) white-on-black digit the models read:
//   1. polarity: with kAuto, a border brighter than mid-gray means dark ink on light paper, and
//      the image is inverted; kYes inverts, kNo does not;
//   2. contrast: paper (the border's median) becomes 0 and the brightest ink 255; an image whose
//      ink and paper differ by less than 32 of 255 has no digit and is refused;
//   3. the bounding box of the ink (≥ 64 of 255 after step 2) scaled to fit 20×20, aspect kept,
//      by area averaging;
//   4. placed in 28×28, shifted by whole pixels so its centre of mass is at (14, 14).
// An image that already is an MNIST digit (28×28, white on black, its centre of mass within one
// pixel of (14, 14)) is returned unchanged.
std::vector<std::uint8_t> prepare_digit(const GrayImage& image, Invert invert, const std::string& path);

// decode_image (or read_image), then prepare_digit: what `mnist predict` does with each file.
// (tests/fuzz/fuzz_image.cpp drives decode_image and prepare_digit.)
std::vector<std::uint8_t> decode_digit_image(const std::vector<std::uint8_t>& bytes, const std::string& path,
                                             Invert invert = Invert::kAuto);
std::vector<std::uint8_t> read_digit_image(const std::string& path, Invert invert = Invert::kAuto);

}  // namespace mnist
