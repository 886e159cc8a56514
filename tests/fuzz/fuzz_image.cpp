// libFuzzer harness for the digit-image reader of `mnist predict` (host/data/image_io.cpp): the
// decoding of PNG (libpng), JPEG (libjpeg-turbo) and PGM (our parser) by decode_image, and the
// preparation of what it decodes by prepare_digit. Each input is decoded up to three times:
//   1. as it is: the format detection, the PGM parser, libpng's and libjpeg's readers;
//   2. when it starts with the PNG signature, "resealed": every whole chunk's CRC-32 replaced by
//      the right one, as a writer would have made it, so that mutations reach the header checks
//      and the image data behind the checksums;
//   3. wrapped: the first byte picks a colour type (0..7, valid or not), the rest is taken as the
//      filtered rows, zlib-compressed into a well-formed 28×28 8-bit PNG: this reaches the
//      unfiltering of every filter type with any row bytes, which mutated compressed data (its
//      Adler-32 broken) rarely would.
// Every decode must either return an image of its stated size or throw ImageError with a
// one-line "<path>: <what>" message of printable ASCII (fuzz_message.h), and so must the
// preparation of every decoded image (784 pixels or ImageError); anything else (a sanitizer
// report, another exception) is a crash. A gray image's rows with filter type 0 are stored as
// they are, so (3) also checks those pixels against the input.
//
// Build and run: see tests/fuzz/CMakeLists.txt.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "mnist/data/idx.h"
#include "mnist/data/image_io.h"
#include "fuzz_message.h"

namespace {

using Bytes = std::vector<std::uint8_t>;

const std::string kPath = "fuzz-input";
constexpr std::uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

[[noreturn]] void broken(const char* what, const std::string& detail = "") { fuzz::broken("fuzz_image", what, detail); }

// The decoded image, or nothing for a refused input; a decoded image is also prepared.
std::optional<mnist::GrayImage> decode(const Bytes& bytes) {
  mnist::GrayImage image;
  try {
    image = mnist::decode_image(bytes, kPath);
  } catch (const mnist::ImageError& error) {
    fuzz::check_message("fuzz_image", kPath, error.what());
    return std::nullopt;
  }
  if (image.width < 1 || image.height < 1 || image.width > mnist::kMaxImageSide ||
      image.height > mnist::kMaxImageSide || image.pixels.size() != std::size_t(image.width) * image.height)
    broken("decoded size", std::to_string(image.width) + "x" + std::to_string(image.height) + ", " +
                               std::to_string(image.pixels.size()) + " pixels");
  try {
    const Bytes digit = mnist::prepare_digit(image, mnist::Invert::kAuto, kPath);
    if (digit.size() != std::size_t(mnist::kPixels)) broken("prepared pixel count", std::to_string(digit.size()));
  } catch (const mnist::ImageError& error) {
    fuzz::check_message("fuzz_image", kPath, error.what());
  }
  return image;
}

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | std::uint32_t{p[3]};
}

void put_be32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

std::uint32_t chunk_crc(const std::uint8_t* type_and_data, std::size_t length) {
  return static_cast<std::uint32_t>(crc32(crc32(0L, Z_NULL, 0), type_and_data, static_cast<uInt>(length + 4)));
}

// Rewrites the CRC of every chunk that lies wholly inside the input; true if one changed.
bool reseal(Bytes& b) {
  bool changed = false;
  for (std::size_t at = sizeof kPngSignature; b.size() - at >= 12;) {
    const std::size_t length = be32(&b[at]);
    if (b.size() - at - 12 < length) break;
    const std::uint32_t crc = chunk_crc(&b[at + 4], length);
    for (int i = 0; i < 4; ++i) {
      std::uint8_t& byte = b[at + 8 + length + i];
      const std::uint8_t right = static_cast<std::uint8_t>(crc >> (24 - 8 * i));
      changed |= byte != right;
      byte = right;
    }
    at += length + 12;
  }
  return changed;
}

void put_chunk(Bytes& out, const char* type, const Bytes& data) {
  const std::size_t start = out.size();
  put_be32(out, static_cast<std::uint32_t>(data.size()));
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put_be32(out, chunk_crc(&out[start + 4], data.size()));
}

// A 28×28 8-bit PNG of colour type `color` whose IDAT holds `rows` (filter bytes included),
// compressed, split in two chunks.
Bytes wrap_png(int color, const Bytes& rows) {
  uLongf compressed_size = compressBound(static_cast<uLong>(rows.size()));
  Bytes compressed(compressed_size);
  if (compress2(compressed.data(), &compressed_size, rows.data(), static_cast<uLong>(rows.size()), 1) != Z_OK)
    broken("zlib compress2 failed");
  compressed.resize(compressed_size);

  Bytes header;
  put_be32(header, mnist::kImageCols);
  put_be32(header, mnist::kImageRows);
  header.insert(header.end(), {8, static_cast<std::uint8_t>(color), 0, 0, 0});
  Bytes png(kPngSignature, kPngSignature + sizeof kPngSignature);
  put_chunk(png, "IHDR", header);
  const std::size_t half = compressed.size() / 2;
  put_chunk(png, "IDAT", Bytes(compressed.begin(), compressed.begin() + half));
  put_chunk(png, "IDAT", Bytes(compressed.begin() + half, compressed.end()));
  put_chunk(png, "IEND", {});
  return png;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes bytes(data, data + size);
  decode(bytes);

  if (size >= sizeof kPngSignature && std::memcmp(data, kPngSignature, sizeof kPngSignature) == 0 && reseal(bytes))
    decode(bytes);

  if (size >= 1) {
    const int color = data[0] & 7;
    const Bytes rows(data + 1, data + size);
    const std::optional<mnist::GrayImage> image = decode(wrap_png(color, rows));
    const std::size_t stride = mnist::kImageCols + 1;  // gray: a filter byte and 28 samples a row
    if (image && color == 0) {
      if (rows.size() < mnist::kImageRows * stride) broken("accepted rows of", std::to_string(rows.size()) + " bytes");
      for (int y = 0; y < mnist::kImageRows; ++y)
        if (rows[y * stride] == 0 &&
            std::memcmp(&image->pixels[y * mnist::kImageCols], &rows[y * stride + 1], stride - 1) != 0)
          broken("an unfiltered gray row changed in row", std::to_string(y));
    }
    if (image && (color == 1 || color == 3 || color > 6)) broken("accepted colour type", std::to_string(color));
  }
  return 0;
}
