#pragma once
// Reading single digit images for `mnist predict`: PGM and PNG, detected by their content.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace mnist {

class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A 28×28 grayscale image, 784 bytes row-major, with MNIST's polarity expected: a white (255)
// digit on a black (0) background. Reads
//   PGM  P5 (binary) or P2 (plain), maxval ≤ 255 (rescaled to 0..255);
//   PNG  8-bit gray, gray+alpha, RGB or RGBA, not interlaced; colour becomes luma
//        (0.299 R + 0.587 G + 0.114 B) and alpha is composited over black.
// Any other size is refused rather than resized. Throws ImageError "<path>: <what is wrong>".
std::vector<std::uint8_t> read_digit_image(const std::string& path);

// The same for a file's bytes already in memory (what read_digit_image does after reading;
// tests/fuzz/fuzz_image.cpp feeds it directly). `path` only names the file in the message.
std::vector<std::uint8_t> decode_digit_image(const std::vector<std::uint8_t>& bytes, const std::string& path);

}  // namespace mnist
