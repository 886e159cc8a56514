// Digit images for `mnist predict` (include/mnist/data/image_io.h): decoding by libpng, libjpeg-turbo
// and a small PGM reader, then the preparation MNIST's own digits went through. Sizes are checked
// against the limits before any pixel buffer is allocated, so a damaged or hostile file is one
// ImageError, never a crash or a large allocation.
#include "mnist/data/image_io.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "mnist/data/idx.h"
#include "mnist/core/files.h"
#include "mnist/core/printable.h"

namespace fs = std::filesystem;

namespace mnist {
namespace {

constexpr std::uintmax_t kMaxFileBytes = 64u << 20;
constexpr long kMaxJpegMemory = 256l << 20;

// `what` may quote a library's message about the file's bytes: printable() keeps it one line.
[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw ImageError(printable(path) + ": " + printable(what));
}

// A byte of the file as the message shows it: 'x' when printable, else its value (0x0A), so that
// a damaged file never puts a line break or a terminal control code into the one-line error.
std::string shown(std::uint8_t c) {
  return c >= 0x20 && c < 0x7f ? std::string("'") + char(c) + "'" : "byte 0x" + hex_byte(c);
}

void check_size(const std::string& path, unsigned long width, unsigned long height) {
  if (width == 0 || height == 0) fail(path, "image is " + std::to_string(width) + "x" + std::to_string(height) + ": no pixels");
  if (width > unsigned(kMaxImageSide) || height > unsigned(kMaxImageSide) ||
      std::uint64_t(width) * height > std::uint64_t(kMaxImagePixels))
    fail(path, "image is " + std::to_string(width) + "x" + std::to_string(height) +
                   " pixels; predict reads images up to " + std::to_string(kMaxImageSide) + " pixels a side and " +
                   std::to_string(kMaxImagePixels >> 20) + " megapixels");
}

std::vector<std::uint8_t> read_image_file(const std::string& path) {
  const std::string limit = " for a digit image (the limit is 64 MiB)";
  FileReading reading;
  reading.not_found = "file not found";
  reading.directory = "is a directory, not an image";
  reading.before = [&](std::int64_t size) {
    if (size > std::int64_t(kMaxFileBytes)) fail(path, std::to_string(size) + " bytes is far too large" + limit);
  };
  reading.after_chunk = [&](const std::vector<std::uint8_t>& bytes, std::int64_t, bool) {
    if (bytes.size() > kMaxFileBytes) fail(path, "far too large" + limit);
    return true;
  };
  return read_file<ImageError>(path, reading);
}

// --- PGM (netpbm): "P5" or "P2", then width, height and maxval as decimal text separated by
// whitespace or # comments, then the pixels: bytes after one whitespace (P5) or decimal text (P2).

class PgmReader {
 public:
  PgmReader(const std::vector<std::uint8_t>& bytes, const std::string& path) : b_(bytes), path_(path) {}

  GrayImage decode() {
    const bool plain = b_[1] == '2';
    at_ = 2;
    const unsigned long width = number("width");
    const unsigned long height = number("height");
    const unsigned long maxval = number("maxval");
    check_size(path_, width, height);
    const std::size_t count = std::size_t(width) * height;
    if (maxval == 0) fail(path_, "malformed PGM: maxval is 0");
    if (maxval > 255) fail(path_, "16-bit PGM (maxval " + std::to_string(maxval) + ") is not supported; save it with 8 bits");

    GrayImage image{int(width), int(height), std::vector<std::uint8_t>(count)};
    if (!plain) {
      // Exactly one whitespace byte separates maxval from the raster.
      if (at_ >= b_.size()) fail(path_, "truncated: the file ends after the PGM header, before the pixels");
      if (!is_space(b_[at_])) fail(path_, "malformed PGM: no whitespace between the header and the pixels");
      ++at_;
      if (b_.size() - at_ < count)
        fail(path_, "truncated: " + std::to_string(b_.size() - at_) + " of the " + std::to_string(count) +
                        " pixel bytes are present");
    }
    for (std::size_t i = 0; i < count; ++i) {
      unsigned long value;
      if (plain) {
        skip_space();
        if (at_ >= b_.size())
          fail(path_, "truncated: " + std::to_string(i) + " of the " + std::to_string(count) +
                          " pixel values are present");
        value = number("pixel value");
      } else {
        value = b_[at_++];
      }
      if (value > maxval)
        fail(path_, "malformed PGM: pixel " + std::to_string(i) + " is " + std::to_string(value) + ", above maxval " +
                        std::to_string(maxval));
      image.pixels[i] = static_cast<std::uint8_t>((value * 255 + maxval / 2) / maxval);
    }
    return image;  // anything after the first image (netpbm allows several) is ignored
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

// --- PNG, through libpng's simplified API: every colour type and bit depth, palette, interlace.
// Read as gray + alpha (8-bit sRGB, not premultiplied); composite_alpha then puts the image on
// its paper.

// Every chunk's declared length against the bytes present, before libpng sees the file: libpng
// allocates a chunk's buffer by its declared length, which a damaged file can set to gigabytes.
// (A chunk cut off by the end of the file is refused here; what the chunks hold is libpng's.)
void check_png_chunk_lengths(const std::vector<std::uint8_t>& b, const std::string& path) {
  std::size_t at = 8;  // after the signature
  while (b.size() >= at + 8) {
    const std::uint64_t length = std::uint64_t{b[at]} << 24 | std::uint64_t{b[at + 1]} << 16 |
                                 std::uint64_t{b[at + 2]} << 8 | b[at + 3];
    if (length + 12 > b.size() - at)
      fail(path, "truncated PNG: a chunk declares " + std::to_string(length) + " bytes, " +
                     std::to_string(b.size() - at - std::min<std::size_t>(b.size() - at, 12)) + " are left");
    const bool end = std::memcmp(&b[at + 4], "IEND", 4) == 0;
    at += std::size_t(length) + 12;
    if (end) break;
  }
}

GrayImage decode_png(const std::vector<std::uint8_t>& b, const std::string& path) {
  check_png_chunk_lengths(b, path);
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, b.data(), b.size()))
    fail(path, std::string("unreadable PNG: ") + image.message);
  const std::unique_ptr<png_image, void (*)(png_image*)> release(&image, png_image_free);
  check_size(path, image.width, image.height);
  image.format = PNG_FORMAT_GA;
  // A 16-bit file without gAMA or sRGB is taken as sRGB like an 8-bit one (libpng's default for
  // 16-bit is linear light, which would darken every scan saved with 16 bits).
  image.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  std::vector<std::uint8_t> gray_alpha(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, gray_alpha.data(), 0, nullptr))
    fail(path, std::string("unreadable PNG: ") + image.message);
  return composite_alpha(int(image.width), int(image.height), gray_alpha);
}

// --- JPEG, through libjpeg(-turbo), decoded to grayscale. Its errors longjmp out of the library
// to the two calls below, which hold no C++ objects, and become an ImageError there.

struct JpegState {
  jpeg_decompress_struct info;
  jpeg_error_mgr error;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
  char warning[JMSG_LENGTH_MAX] = "";  // the first warning: a damaged stream libjpeg decodes anyway
  bool created = false;
};

void jpeg_fail(j_common_ptr info) {
  auto* state = reinterpret_cast<JpegState*>(info->client_data);
  (*info->err->format_message)(info, state->message);
  std::longjmp(state->jump, 1);
}
// Level -1 is a warning (a truncated or corrupt stream, which libjpeg fills in with gray and
// goes on): kept, and refused after decoding, since a damaged digit would be answered wrongly.
// Other levels are trace messages.
void jpeg_warn(j_common_ptr info, int level) {
  auto* state = reinterpret_cast<JpegState*>(info->client_data);
  if (level == -1 && state->warning[0] == '\0') (*info->err->format_message)(info, state->warning);
}

// 0, or 1 with state->message set.
int jpeg_begin(JpegState* state, const std::uint8_t* data, std::size_t size) {
  state->info.err = jpeg_std_error(&state->error);
  state->error.error_exit = jpeg_fail;
  state->error.emit_message = jpeg_warn;
  state->info.client_data = state;
  if (setjmp(state->jump)) return 1;
  jpeg_create_decompress(&state->info);
  state->created = true;
  // A few hundred bytes can declare a progressive image of four 4×4-sampled components, whose
  // coefficient buffers would take gigabytes: past this libjpeg stops with an error instead.
  state->info.mem->max_memory_to_use = kMaxJpegMemory;
  jpeg_mem_src(&state->info, data, static_cast<unsigned long>(size));
  jpeg_read_header(&state->info, TRUE);
  return 0;
}

int jpeg_rows(JpegState* state, std::uint8_t* out) {
  if (setjmp(state->jump)) return 1;
  state->info.out_color_space = JCS_GRAYSCALE;
  jpeg_start_decompress(&state->info);
  while (state->info.output_scanline < state->info.output_height) {
    JSAMPROW row = out + std::size_t(state->info.output_scanline) * state->info.output_width;
    jpeg_read_scanlines(&state->info, &row, 1);
  }
  jpeg_finish_decompress(&state->info);
  return 0;
}

GrayImage decode_jpeg(const std::vector<std::uint8_t>& b, const std::string& path) {
  const auto state = std::make_unique<JpegState>();
  const auto destroy = [](JpegState* s) {
    if (s->created) jpeg_destroy_decompress(&s->info);
  };
  const std::unique_ptr<JpegState, decltype(destroy)> release(state.get(), destroy);
  if (jpeg_begin(state.get(), b.data(), b.size())) fail(path, std::string("unreadable JPEG: ") + state->message);
  check_size(path, state->info.image_width, state->info.image_height);
  GrayImage image{int(state->info.image_width), int(state->info.image_height),
                  std::vector<std::uint8_t>(std::size_t(state->info.image_width) * state->info.image_height)};
  if (jpeg_rows(state.get(), image.pixels.data())) fail(path, std::string("unreadable JPEG: ") + state->message);
  if (state->warning[0] != '\0') fail(path, std::string("damaged JPEG: ") + state->warning);
  return image;
}

bool starts_with(const std::vector<std::uint8_t>& b, std::initializer_list<std::uint8_t> prefix) {
  return b.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), b.begin());
}

// --- preparation ------------------------------------------------------------------------------

constexpr int kFitBox = 20;              // MNIST's size normalization: the digit fits 20×20
constexpr double kCentre = 14.0;         // where MNIST's centres of mass lie (pixel indices)
constexpr double kPassThroughShift = 1.0;  // an MNIST test digit's centre is within 0.51 of it
constexpr int kMinContrast = 32;         // ink minus paper, of 255, below which there is no digit
constexpr int kInkLevel = 64;            // after stretching: what counts as ink for the bounding box

double border_mean(const GrayImage& image) {
  double sum = 0;
  long count = 0;
  const auto add = [&](int x, int y) {
    sum += image.pixels[std::size_t(y) * image.width + x];
    ++count;
  };
  for (int x = 0; x < image.width; ++x) {
    add(x, 0);
    if (image.height > 1) add(x, image.height - 1);
  }
  for (int y = 1; y + 1 < image.height; ++y) {
    add(0, y);
    if (image.width > 1) add(image.width - 1, y);
  }
  return sum / count;
}

// Centre of mass (x, y) of a width × height array of weights; false when they sum to 0.
template <class T>
bool centre_of_mass(const T* v, int width, int height, double& cx, double& cy) {
  double sum = 0, sx = 0, sy = 0;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const double w = v[std::size_t(y) * width + x];
      sum += w;
      sx += w * x;
      sy += w * y;
    }
  if (sum <= 0) return false;
  cx = sx / sum;
  cy = sy / sum;
  return true;
}

}  // namespace

GrayImage composite_alpha(int width, int height, const std::vector<std::uint8_t>& gray_alpha) {
  // The paper a transparent area stands for: the opposite of what the opaque pixels are on
  // average, so dark strokes on a transparent canvas land on white and light ones on black.
  double opaque = 0, weight = 0;
  for (std::size_t i = 0; i + 1 < gray_alpha.size(); i += 2) {
    opaque += double(gray_alpha[i]) * gray_alpha[i + 1];
    weight += gray_alpha[i + 1];
  }
  const double paper = weight > 0 && opaque / weight < 127.5 ? 255.0 : 0.0;
  GrayImage image{width, height, std::vector<std::uint8_t>(std::size_t(width) * height)};
  for (std::size_t i = 0; i < image.pixels.size(); ++i) {
    const double a = gray_alpha[2 * i + 1] / 255.0;
    image.pixels[i] = static_cast<std::uint8_t>(std::lround(a * gray_alpha[2 * i] + (1 - a) * paper));
  }
  return image;
}

GrayImage decode_image(const std::vector<std::uint8_t>& b, const std::string& path) {
  if (b.empty()) fail(path, "is empty (0 bytes), not an image");
  if (starts_with(b, {0x89, 'P', 'N', 'G'})) return decode_png(b, path);
  if (starts_with(b, {0xff, 0xd8, 0xff})) return decode_jpeg(b, path);
  if (b.size() >= 2 && b[0] == 'P' && (b[1] == '2' || b[1] == '5')) return PgmReader(b, path).decode();
  if (b.size() >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6')
    fail(path, std::string("is a netpbm P") + char(b[1]) + " (bitmap or colour) image; predict reads grayscale PGM "
               "(P2, P5), PNG or JPEG");
  fail(path, "not a PNG, JPEG or PGM image");
}

GrayImage read_image(const std::string& path) { return decode_image(read_image_file(path), path); }

std::vector<std::uint8_t> prepare_digit(const GrayImage& image, Invert invert, const std::string& path) {
  const std::size_t n = std::size_t(image.width) * image.height;
  if (image.width < 1 || image.height < 1 || image.pixels.size() != n) fail(path, "no pixels");
  const bool dark_ink = invert == Invert::kYes || (invert == Invert::kAuto && border_mean(image) > 127.5);

  // Already an MNIST digit: unchanged, so such images give the predictions they always gave.
  double cx = 0, cy = 0;
  if (!dark_ink && image.width == kImageCols && image.height == kImageRows &&
      centre_of_mass(image.pixels.data(), image.width, image.height, cx, cy) &&
      std::fabs(cx - kCentre) <= kPassThroughShift && std::fabs(cy - kCentre) <= kPassThroughShift)
    return image.pixels;

  // Ink up, then paper (the border's median) to 0 and the brightest ink to 255. One byte a pixel
  // is all the copy holds (a photo is megapixels); the stretch is applied as pixels are read.
  std::vector<std::uint8_t> v(image.pixels);
  if (dark_ink)
    for (std::uint8_t& p : v) p = std::uint8_t(255 - p);
  std::vector<std::uint8_t> border;
  for (int x = 0; x < image.width; ++x) {
    border.push_back(v[x]);
    border.push_back(v[std::size_t(image.height - 1) * image.width + x]);
  }
  for (int y = 0; y < image.height; ++y) {
    border.push_back(v[std::size_t(y) * image.width]);
    border.push_back(v[std::size_t(y) * image.width + image.width - 1]);
  }
  std::nth_element(border.begin(), border.begin() + border.size() / 2, border.end());
  const int paper = border[border.size() / 2];
  const int ink = *std::max_element(v.begin(), v.end());
  if (ink - paper < kMinContrast)
    fail(path, "no digit found: the image is blank or nearly uniform (ink and paper differ by " +
                   std::to_string(std::max(ink - paper, 0)) + " of 255)");
  const float stretch = 255.f / float(ink - paper);
  const auto stretched = [&](std::size_t i) { return std::clamp(float(int(v[i]) - paper) * stretch, 0.f, 255.f); };
  int left = image.width, right = -1, top = image.height, bottom = -1;
  for (int y = 0; y < image.height; ++y)
    for (int x = 0; x < image.width; ++x) {
      if (stretched(std::size_t(y) * image.width + x) >= kInkLevel) {
        left = std::min(left, x);
        right = std::max(right, x);
        top = std::min(top, y);
        bottom = std::max(bottom, y);
      }
    }

  // The ink's bounding box, scaled to fit 20×20 with its aspect ratio kept, by area averaging:
  // each output pixel is the mean of the source area it covers, partial pixels weighted.
  const int bw = right - left + 1, bh = bottom - top + 1;
  const double scale = double(kFitBox) / std::max(bw, bh);
  const int tw = std::clamp(int(std::lround(bw * scale)), 1, kFitBox);
  const int th = std::clamp(int(std::lround(bh * scale)), 1, kFitBox);
  const double sx = double(bw) / tw, sy = double(bh) / th;  // source pixels per output pixel
  std::vector<double> fit(std::size_t(tw) * th);
  for (int ty = 0; ty < th; ++ty) {
    const double y0 = ty * sy, y1 = (ty + 1) * sy;
    for (int tx = 0; tx < tw; ++tx) {
      const double x0 = tx * sx, x1 = (tx + 1) * sx;
      double sum = 0;
      for (int y = int(y0); y < int(std::ceil(y1)) && y < bh; ++y) {
        const double wy = std::min(y1, y + 1.0) - std::max(y0, double(y));
        for (int x = int(x0); x < int(std::ceil(x1)) && x < bw; ++x) {
          const double wx = std::min(x1, x + 1.0) - std::max(x0, double(x));
          sum += wx * wy * stretched(std::size_t(top + y) * image.width + left + x);
        }
      }
      fit[std::size_t(ty) * tw + tx] = sum / (sx * sy);
    }
  }

  // Into 28×28, shifted by whole pixels so the centre of mass lands on MNIST's centre.
  centre_of_mass(fit.data(), tw, th, cx, cy);
  const int ox = int(std::lround(kCentre - cx)), oy = int(std::lround(kCentre - cy));
  std::vector<std::uint8_t> out(kPixels, 0);
  for (int ty = 0; ty < th; ++ty)
    for (int tx = 0; tx < tw; ++tx) {
      const int x = ox + tx, y = oy + ty;
      if (x < 0 || x >= kImageCols || y < 0 || y >= kImageRows) continue;
      out[std::size_t(y) * kImageCols + x] =
          static_cast<std::uint8_t>(std::lround(std::clamp(fit[std::size_t(ty) * tw + tx], 0.0, 255.0)));
    }
  return out;
}

std::vector<std::uint8_t> decode_digit_image(const std::vector<std::uint8_t>& bytes, const std::string& path,
                                             Invert invert) {
  return prepare_digit(decode_image(bytes, path), invert, path);
}

std::vector<std::uint8_t> read_digit_image(const std::string& path, Invert invert) {
  return prepare_digit(read_image(path), invert, path);
}

}  // namespace mnist
