// Digit images for `mnist predict` (include/mnist/image_io.h). Every length is checked against
// the bytes present, and the size against 28×28 before any pixel is decoded, so a damaged or
// unexpected file is one ImageError, never a crash or a large allocation.
#include "mnist/image_io.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "mnist/idx.h"
#include "mnist/printable.h"

namespace fs = std::filesystem;

namespace mnist {
namespace {

constexpr std::uintmax_t kMaxFileBytes = 16u << 20;  // a 28×28 image is a few kB in any format
constexpr std::uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw ImageError(printable(path) + ": " + what);
}

// A byte of the file as the message shows it: 'x' when printable, else its value (0x0A), so that
// a damaged file never puts a line break or a terminal control code into the one-line error.
std::string shown(std::uint8_t c) {
  return c >= 0x20 && c < 0x7f ? std::string("'") + char(c) + "'" : "byte 0x" + hex_byte(c);
}

void check_size(const std::string& path, unsigned long width, unsigned long height) {
  if (width != kImageCols || height != kImageRows)
    fail(path, "image is " + std::to_string(width) + "x" + std::to_string(height) +
                   " pixels; predict needs 28x28 (the MNIST size), so resize it first");
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) fail(path, "file not found");
  if (ec) fail(path, "cannot stat: " + ec.message());
  if (st.type() == fs::file_type::directory) fail(path, "is a directory, not an image");
  if (st.type() == fs::file_type::regular) {
    const std::uintmax_t size = fs::file_size(path, ec);
    if (!ec && size > kMaxFileBytes)
      fail(path, std::to_string(size) + " bytes is far too large for a 28x28 image");
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail(path, std::string("cannot open for reading: ") + std::strerror(errno));
  std::vector<std::uint8_t> bytes;
  std::uint8_t chunk[1 << 16];
  for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, file.get())) > 0;) {
    bytes.insert(bytes.end(), chunk, chunk + n);
    if (bytes.size() > kMaxFileBytes) fail(path, "far too large for a 28x28 image");
  }
  if (std::ferror(file.get())) fail(path, std::string("read error: ") + std::strerror(errno));
  return bytes;
}

// --- PGM (netpbm): "P5" or "P2", then width, height and maxval as decimal text separated by
// whitespace or # comments, then the pixels: bytes after one whitespace (P5) or decimal text (P2).

class PgmReader {
 public:
  PgmReader(const std::vector<std::uint8_t>& bytes, const std::string& path) : b_(bytes), path_(path) {}

  std::vector<std::uint8_t> decode() {
    const bool plain = b_[1] == '2';
    at_ = 2;
    const unsigned long width = number("width");
    const unsigned long height = number("height");
    const unsigned long maxval = number("maxval");
    check_size(path_, width, height);
    if (maxval == 0) fail(path_, "malformed PGM: maxval is 0");
    if (maxval > 255) fail(path_, "16-bit PGM (maxval " + std::to_string(maxval) + ") is not supported; save it with 8 bits");

    std::vector<std::uint8_t> pixels(kPixels);
    if (!plain) {
      // Exactly one whitespace byte separates maxval from the raster.
      if (at_ >= b_.size()) fail(path_, "truncated: the file ends after the PGM header, before the pixels");
      if (!is_space(b_[at_])) fail(path_, "malformed PGM: no whitespace between the header and the pixels");
      ++at_;
      if (b_.size() - at_ < std::size_t(kPixels))
        fail(path_, "truncated: " + std::to_string(b_.size() - at_) + " of the 784 pixel bytes are present");
    }
    for (int i = 0; i < kPixels; ++i) {
      unsigned long value;
      if (plain) {
        skip_space();
        if (at_ >= b_.size()) fail(path_, "truncated: " + std::to_string(i) + " of the 784 pixel values are present");
        value = number("pixel value");
      } else {
        value = b_[at_++];
      }
      if (value > maxval)
        fail(path_, "malformed PGM: pixel " + std::to_string(i) + " is " + std::to_string(value) + ", above maxval " +
                        std::to_string(maxval));
      pixels[i] = static_cast<std::uint8_t>((value * 255 + maxval / 2) / maxval);
    }
    return pixels;  // anything after the first image (netpbm allows several) is ignored
  }

 private:
  static bool is_space(std::uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

  void skip_space() {
    while (at_ < b_.size()) {
      if (b_[at_] == '#') {
        while (at_ < b_.size() && b_[at_] != '\n' && b_[at_] != '\r') ++at_;
      } else if (is_space(b_[at_])) {
        ++at_;
      } else {
        break;
      }
    }
  }

  unsigned long number(const char* what) {
    skip_space();
    if (at_ >= b_.size()) fail(path_, std::string("truncated: the file ends before the PGM ") + what);
    if (b_[at_] < '0' || b_[at_] > '9')
      fail(path_, std::string("malformed PGM: expected the ") + what + ", found " + shown(b_[at_]));
    unsigned long value = 0;
    for (; at_ < b_.size() && b_[at_] >= '0' && b_[at_] <= '9'; ++at_)
      value = std::min(value * 10 + (b_[at_] - '0'), 99999999ul);  // saturates: anything that large is refused
    return value;
  }

  const std::vector<std::uint8_t>& b_;
  const std::string& path_;
  std::size_t at_ = 0;
};

// --- PNG: signature, then chunks (u32 length, type, data, CRC-32 of type and data). IHDR comes
// first; the IDAT chunks together are one zlib stream of the filtered rows; IEND ends the file.

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | std::uint32_t{p[3]};
}

int paeth(int a, int b, int c) {
  const int p = a + b - c;
  const int pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}

std::vector<std::uint8_t> decode_png(const std::vector<std::uint8_t>& b, const std::string& path) {
  std::size_t at = sizeof kPngSignature;
  bool have_header = false, ended = false;
  int channels = 0;
  std::vector<std::uint8_t> compressed;
  while (!ended) {
    if (b.size() - at < 8) fail(path, "truncated PNG: the file ends before its IEND chunk");
    const std::uint32_t length = be32(&b[at]);
    const std::string type(reinterpret_cast<const char*>(&b[at + 4]), 4);
    if (length > 0x7fffffffu) fail(path, "corrupt PNG: chunk length " + std::to_string(length) + " is invalid");
    for (char c : type)  // PNG chunk types are four ASCII letters
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
        fail(path, "corrupt PNG: chunk type with " + shown(std::uint8_t(c)) + " (chunk types are four letters)");
    if (b.size() - at - 8 < std::size_t{length} + 4) fail(path, "truncated PNG: the file ends inside a chunk");
    const std::uint8_t* data = &b[at + 8];
    if (crc32(crc32(0L, Z_NULL, 0), &b[at + 4], length + 4) != be32(data + length))
      fail(path, "corrupt PNG: CRC mismatch in the " + type + " chunk");
    at += std::size_t{length} + 12;

    if (!have_header) {
      if (type != "IHDR" || length != 13) fail(path, "corrupt PNG: the first chunk is not a valid IHDR");
      have_header = true;
      const std::uint32_t width = be32(data), height = be32(data + 4);
      const int depth = data[8], color = data[9], compression = data[10], filter = data[11], interlace = data[12];
      check_size(path, width, height);
      if (color == 3) fail(path, "palette PNG is not supported; save it as 8-bit grayscale, RGB or RGBA");
      if (color != 0 && color != 2 && color != 4 && color != 6)
        fail(path, "corrupt PNG: colour type " + std::to_string(color) + " does not exist");
      if (depth != 8) fail(path, std::to_string(depth) + "-bit PNG is not supported; save it with 8 bits per channel");
      if (compression != 0 || filter != 0) fail(path, "corrupt PNG: unknown compression or filter method");
      if (interlace == 1) fail(path, "interlaced PNG is not supported; save it without interlacing");
      if (interlace != 0) fail(path, "corrupt PNG: unknown interlace method " + std::to_string(interlace));
      channels = color == 0 ? 1 : color == 4 ? 2 : color == 2 ? 3 : 4;
    } else if (type == "IDAT") {
      compressed.insert(compressed.end(), data, data + length);
    } else if (type == "IEND") {
      ended = true;
    }  // ancillary chunks (text, gamma, ...) and PLTE carry nothing a grayscale digit needs
  }
  if (compressed.empty()) fail(path, "corrupt PNG: no image data (IDAT chunk)");

  // Each row is a filter-type byte and the row's bytes.
  const std::size_t stride = std::size_t(kImageCols) * channels;
  std::vector<std::uint8_t> raw(kImageRows * (stride + 1));
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) fail(path, "zlib inflateInit failed");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, &inflateEnd);
  zs.next_in = compressed.data();
  zs.avail_in = static_cast<uInt>(compressed.size());  // at most the 16 MiB file
  zs.next_out = raw.data();
  zs.avail_out = static_cast<uInt>(raw.size());
  const int rc = inflate(&zs, Z_FINISH);
  if (rc == Z_DATA_ERROR) fail(path, std::string("corrupt PNG image data (") + (zs.msg ? zs.msg : "zlib") + ")");
  if (rc != Z_STREAM_END || zs.avail_out != 0) {
    if (zs.avail_out != 0) fail(path, "corrupt PNG: the image data is shorter than 28x28 pixels need");
    fail(path, "corrupt PNG: the image data is longer than 28x28 pixels need");
  }

  // Undo the per-row filters (PNG spec §9): a, b, c are the bytes left, above and above-left.
  std::vector<std::uint8_t> rows(kImageRows * stride, 0);
  for (int y = 0; y < kImageRows; ++y) {
    const int filter = raw[y * (stride + 1)];
    const std::uint8_t* in = &raw[y * (stride + 1) + 1];
    std::uint8_t* out = &rows[y * stride];
    const std::uint8_t* above = y > 0 ? out - stride : nullptr;
    for (std::size_t x = 0; x < stride; ++x) {
      const int a = x >= std::size_t(channels) ? out[x - channels] : 0;
      const int up = above ? above[x] : 0;
      const int c = above && x >= std::size_t(channels) ? above[x - channels] : 0;
      int predictor;
      switch (filter) {
        case 0: predictor = 0; break;
        case 1: predictor = a; break;
        case 2: predictor = up; break;
        case 3: predictor = (a + up) / 2; break;
        case 4: predictor = paeth(a, up, c); break;
        default: fail(path, "corrupt PNG: unknown filter type " + std::to_string(filter) + " in row " + std::to_string(y));
      }
      out[x] = static_cast<std::uint8_t>(in[x] + predictor);
    }
  }

  std::vector<std::uint8_t> pixels(kPixels);
  for (int i = 0; i < kPixels; ++i) {
    const std::uint8_t* p = &rows[std::size_t(i) * channels];
    const unsigned gray = channels >= 3 ? (299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u : p[0];
    const bool alpha = channels == 2 || channels == 4;
    pixels[i] = static_cast<std::uint8_t>(alpha ? (gray * p[channels - 1] + 127u) / 255u : gray);  // over black
  }
  return pixels;
}

}  // namespace

std::vector<std::uint8_t> read_digit_image(const std::string& path) {
  return decode_digit_image(read_file(path), path);
}

std::vector<std::uint8_t> decode_digit_image(const std::vector<std::uint8_t>& b, const std::string& path) {
  if (b.empty()) fail(path, "is empty (0 bytes), not an image");
  const std::size_t signature = std::min(b.size(), sizeof kPngSignature);
  if (std::memcmp(b.data(), kPngSignature, signature) == 0) {
    if (b.size() <= sizeof kPngSignature) fail(path, "truncated PNG: the file ends after its signature");
    return decode_png(b, path);
  }
  if (b.size() >= 2 && b[0] == 'P' && (b[1] == '2' || b[1] == '5')) return PgmReader(b, path).decode();
  if (b.size() >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6')
    fail(path, std::string("is a netpbm P") + char(b[1]) + " (bitmap or colour) image; predict reads grayscale PGM "
               "(P2, P5) or PNG");
  if (b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
    fail(path, "is a JPEG image; predict reads PGM or PNG");
  fail(path, "not a PGM or PNG image (predict reads 28x28 grayscale PGM or PNG)");
}

}  // namespace mnist
