// Digit images (include/mnist/data/image_io.h) and `mnist predict`: PNG, JPEG and PGM decode to the
// pixels that were written (every PNG colour type, row filter, palette, 16-bit and interlace),
// each step of the preparation against hand-made images with known answers, every bad file is
// one clear error, and a briefly trained model reads MNIST's digits, as they are and as a person
// would draw them (large, black on white, PNG and JPEG), alike.
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "mnist/io/checkpoint.h"
#include "mnist/data/idx.h"
#include "mnist/data/image_io.h"
#include "mnist/model/mlp.h"
#include "mnist/model/model.h"
#include "mnist/train/trainer.h"
#include "test_util.h"

namespace mnist {
namespace {

namespace fs = std::filesystem;
using test::fresh_temp_dir;
using test::line_count;
using test::Outcome;
using test::read_text;
using test::run_mnist;
using test::write_text;

using Pixels = std::vector<std::uint8_t>;

Pixels random_pixels(std::mt19937_64& rng, std::size_t n) {
  Pixels p(n);
  for (auto& x : p) x = std::uint8_t(rng());
  return p;
}

// --- writers: the formats as another program would produce them ---------------------------

std::string pgm_p5(const Pixels& p, int width = 28, int height = 28) {
  return "P5\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n" + std::string(p.begin(), p.end());
}

std::string pgm_p2(const Pixels& p, int maxval = 255) {
  std::string text = "P2\n# written by test_predict\n28 28\n" + std::to_string(maxval) + "\n";
  for (std::size_t i = 0; i < p.size(); ++i) text += std::to_string(p[i]) + ((i + 1) % 28 ? " " : "\n");
  return text;
}

std::string be32(std::uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

std::string chunk(const std::string& type, const std::string& data) {
  const std::string body = type + data;
  const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()));
  return be32(std::uint32_t(data.size())) + body + be32(std::uint32_t(crc));
}

int paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

struct PngOptions {
  int width = 28, height = 28, depth = 8, color = 0, interlace = 0;
  int filter = -1;  // -1: row y uses filter y % 5, so every filter type is exercised
};

// `samples` holds height rows of width × channels bytes.
std::string png(const Pixels& samples, const PngOptions& o) {
  const int channels = o.color == 0 ? 1 : o.color == 4 ? 2 : o.color == 2 ? 3 : o.color == 6 ? 4 : 1;
  const std::size_t stride = std::size_t(o.width) * channels;
  std::string filtered;
  for (int y = 0; y < o.height && (y + 1) * stride <= samples.size(); ++y) {
    const int f = o.filter >= 0 ? o.filter : y % 5;
    filtered.push_back(char(f));
    for (std::size_t x = 0; x < stride; ++x) {
      const int a = x >= std::size_t(channels) ? samples[y * stride + x - channels] : 0;
      const int b = y > 0 ? samples[(y - 1) * stride + x] : 0;
      const int c = y > 0 && x >= std::size_t(channels) ? samples[(y - 1) * stride + x - channels] : 0;
      const int predictor = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : f == 4 ? paeth(a, b, c) : 0;
      filtered.push_back(char(samples[y * stride + x] - predictor));
    }
  }
  uLongf size = compressBound(uLong(filtered.size()));
  std::string compressed(size, '\0');
  compress2(reinterpret_cast<Bytef*>(compressed.data()), &size, reinterpret_cast<const Bytef*>(filtered.data()),
            uLong(filtered.size()), 9);
  compressed.resize(size);

  const std::string header = be32(o.width) + be32(o.height) + char(o.depth) + char(o.color) + '\0' + '\0' +
                             char(o.interlace);
  // The image data split over three IDAT chunks (with a text chunk before them), as encoders may.
  const std::size_t third = compressed.size() / 3;
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", header) + chunk("tEXt", std::string("Comment\0test", 12)) +
         chunk("IDAT", compressed.substr(0, third)) + chunk("IDAT", compressed.substr(third, third)) +
         chunk("IDAT", compressed.substr(2 * third)) + chunk("IEND", "");
}

std::string error_of(const fs::path& path) {
  try {
    read_digit_image(path.string());
  } catch (const ImageError& error) {
    return error.what();
  }
  return "";
}

// --- writers through the libraries: what image programs produce ----------------------------

struct PngWrite {
  int width, height;
  bool interlace = false;
  int depth = 8;        // 8 or 16 (samples scaled ×257)
  bool palette = false; // colour type 3: a PLTE of the gray levels used
};

// Gray samples as a PNG by libpng's full API (interlace and palette need it).
std::string png_by_libpng(const Pixels& gray, const PngWrite& w) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    ADD_FAILURE() << "libpng could not write the test image";
    return "";
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n);
      },
      nullptr);
  png_set_IHDR(png, info, w.width, w.height, w.depth, w.palette ? PNG_COLOR_TYPE_PALETTE : PNG_COLOR_TYPE_GRAY,
               w.interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  std::vector<png_color> colours(256);
  for (int i = 0; i < 256; ++i) colours[i] = png_color{png_byte(i), png_byte(i), png_byte(i)};
  if (w.palette) png_set_PLTE(png, info, colours.data(), 256);
  png_write_info(png, info);
  if (w.depth == 16) png_set_swap(png);  // rows below are little-endian uint16
  const int bytes = w.depth / 8;
  std::vector<std::uint8_t> rows(std::size_t(w.width) * w.height * bytes);
  for (std::size_t i = 0; i < gray.size(); ++i) {
    if (bytes == 1) {
      rows[i] = gray[i];
    } else {
      rows[2 * i] = rows[2 * i + 1] = gray[i];  // v·257 in little-endian
    }
  }
  std::vector<png_bytep> pointers(w.height);
  for (int y = 0; y < w.height; ++y) pointers[y] = rows.data() + std::size_t(y) * w.width * bytes;
  png_write_image(png, pointers.data());  // all passes when interlaced
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

// 8-bit samples by libpng's simplified API: PNG_FORMAT_GRAY or PNG_FORMAT_GA (gray + alpha).
std::string png_simplified(const Pixels& samples, int width, int height, png_uint_32 format) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  image.format = format;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_get_memory_size(image, size, 0, samples.data(), 0, nullptr));
  std::string out(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&image, out.data(), &size, 0, samples.data(), 0, nullptr));
  out.resize(size);
  return out;
}
std::string png_gray_alpha(const Pixels& gray_alpha, int width, int height) {
  return png_simplified(gray_alpha, width, height, PNG_FORMAT_GA);
}
std::string png_gray(const Pixels& gray, int width, int height) {
  return png_simplified(gray, width, height, PNG_FORMAT_GRAY);
}

// An MNIST digit as a person would draw it: 280×280 (bilinear upscaling), black on white.
Pixels drawn(const Pixels& digit) {
  constexpr int kSide = 280;
  Pixels out(kSide * kSide);
  const auto at = [&](int x, int y) {
    return double(digit[std::size_t(std::clamp(y, 0, 27)) * 28 + std::clamp(x, 0, 27)]);
  };
  for (int y = 0; y < kSide; ++y)
    for (int x = 0; x < kSide; ++x) {
      const double u = (x + 0.5) / 10 - 0.5, v = (y + 0.5) / 10 - 0.5;
      const int x0 = int(std::floor(u)), y0 = int(std::floor(v));
      const double fx = u - x0, fy = v - y0;
      const double value = (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) +
                           fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
      out[std::size_t(y) * kSide + x] = std::uint8_t(255 - std::lround(value));
    }
  return out;
}

// Gray samples as a JPEG (libjpeg), baseline or progressive.
std::string jpeg_of(const Pixels& gray, int width, int height, int quality, bool progressive = false) {
  jpeg_compress_struct info;
  jpeg_error_mgr error;
  info.err = jpeg_std_error(&error);
  jpeg_create_compress(&info);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = width;
  info.image_height = height;
  info.input_components = 1;
  info.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  if (progressive) jpeg_simple_progression(&info);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<std::uint8_t*>(gray.data()) + std::size_t(info.next_scanline) * width;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  std::free(buffer);
  return out;
}

std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

GrayImage decoded(const std::string& bytes) { return decode_image(bytes_of(bytes), "test"); }

// --- decoding -------------------------------------------------------------------------------

TEST(ImageIo, PgmBinaryAndPlainGiveTheWrittenPixels) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("image-pgm");
  const Pixels pixels = random_pixels(rng, kPixels);
  write_text(dir / "a.pgm", pgm_p5(pixels));
  write_text(dir / "b.pgm", pgm_p2(pixels));
  EXPECT_EQ(read_image((dir / "a.pgm").string()).pixels, pixels);
  EXPECT_EQ(read_image((dir / "b.pgm").string()).pixels, pixels);

  // A smaller maxval is rescaled to 0..255 (rounded): 15 → 255, 7 → 119, 1 → 17.
  Pixels small(kPixels), scaled(kPixels);
  for (int i = 0; i < kPixels; ++i) {
    small[i] = std::uint8_t(rng() % 16);
    scaled[i] = std::uint8_t((small[i] * 255 + 7) / 15);
  }
  write_text(dir / "c.pgm", pgm_p2(small, 15));
  EXPECT_EQ(read_image((dir / "c.pgm").string()).pixels, scaled);

  // Any size: 29 × 17.
  const Pixels odd = random_pixels(rng, 29 * 17);
  write_text(dir / "d.pgm", pgm_p5(odd, 29, 17));
  const GrayImage d = read_image((dir / "d.pgm").string());
  EXPECT_EQ(d.width, 29);
  EXPECT_EQ(d.height, 17);
  EXPECT_EQ(d.pixels, odd);
  fs::remove_all(dir);
}

// The hand-made writer's every colour type and row filter, and libpng's palette, 16-bit and
// interlaced files: all give the written gray levels (a gray stored as RGB within one level:
// libpng converts colour through linear light).
TEST(ImageIo, PngOfEveryKindGivesTheWrittenPixels) {
  std::mt19937_64 rng(test::fresh_seed());
  const Pixels gray = random_pixels(rng, kPixels);
  Pixels rgb_gray, opaque_ga, opaque_rgba;
  for (int i = 0; i < kPixels; ++i) {
    rgb_gray.insert(rgb_gray.end(), {gray[i], gray[i], gray[i]});
    opaque_ga.insert(opaque_ga.end(), {gray[i], 255});
    opaque_rgba.insert(opaque_rgba.end(), {gray[i], gray[i], gray[i], 255});
  }
  const auto within_one = [&](const Pixels& got, const char* what) {
    ASSERT_EQ(got.size(), gray.size()) << what;
    for (int i = 0; i < kPixels; ++i) ASSERT_LE(std::abs(int(got[i]) - int(gray[i])), 1) << what << " pixel " << i;
  };
  for (int filter : {-1, 0, 1, 2, 3, 4}) {
    PngOptions o;
    o.filter = filter;
    EXPECT_EQ(decoded(png(gray, o)).pixels, gray) << "gray, filter " << filter;
    o.color = 4;
    EXPECT_EQ(decoded(png(opaque_ga, o)).pixels, gray) << "gray+alpha, filter " << filter;
    o.color = 2;
    within_one(decoded(png(rgb_gray, o)).pixels, "rgb");
    o.color = 6;
    within_one(decoded(png(opaque_rgba, o)).pixels, "rgba");
  }
  EXPECT_EQ(decoded(png_by_libpng(gray, {28, 28, true})).pixels, gray) << "interlaced";
  EXPECT_EQ(decoded(png_by_libpng(gray, {28, 28, false, 16})).pixels, gray) << "16-bit";
  EXPECT_EQ(decoded(png_by_libpng(gray, {28, 28, false, 8, true})).pixels, gray) << "palette";
  const GrayImage wide = decoded(png_by_libpng(Pixels(300 * 7, 9), {300, 7, true}));
  EXPECT_EQ(wide.width, 300);
  EXPECT_EQ(wide.height, 7);
}

// Transparency stands for paper: a dark stroke on a transparent canvas lands on white, a light
// one on black, each pixel blended by its alpha.
TEST(ImageIo, AlphaIsCompositedOverThePaper) {
  Pixels dark, light;
  for (int i = 0; i < 100; ++i) {
    const std::uint8_t a = i < 20 ? 255 : i < 30 ? 128 : 0;  // 20 opaque, 10 half, 70 transparent
    dark.insert(dark.end(), {std::uint8_t(10), a});
    light.insert(light.end(), {std::uint8_t(240), a});
  }
  const GrayImage on_white = decoded(png_gray_alpha(dark, 10, 10));
  const GrayImage on_black = decoded(png_gray_alpha(light, 10, 10));
  EXPECT_EQ(on_white.pixels[0], 10);
  EXPECT_EQ(on_white.pixels[25], std::lround(128 / 255.0 * 10 + (1 - 128 / 255.0) * 255));
  EXPECT_EQ(on_white.pixels[99], 255);
  EXPECT_EQ(on_black.pixels[0], 240);
  EXPECT_EQ(on_black.pixels[25], std::lround(128 / 255.0 * 240));
  EXPECT_EQ(on_black.pixels[99], 0);
}

// Baseline and progressive JPEGs of one image decode alike and near the written pixels.
TEST(ImageIo, JpegBaselineAndProgressiveAreRead) {
  Pixels smooth(64 * 48);
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x) smooth[y * 64 + x] = std::uint8_t(x * 3 + y);
  const GrayImage baseline = decoded(jpeg_of(smooth, 64, 48, 95));
  const GrayImage progressive = decoded(jpeg_of(smooth, 64, 48, 95, true));
  ASSERT_EQ(baseline.width, 64);
  ASSERT_EQ(baseline.height, 48);
  EXPECT_EQ(progressive.pixels, baseline.pixels);
  double error = 0;
  for (std::size_t i = 0; i < smooth.size(); ++i) error += std::abs(int(baseline.pixels[i]) - int(smooth[i]));
  EXPECT_LT(error / smooth.size(), 2.0) << "mean absolute error of quality 95";
}

// --- preparation, step by step ----------------------------------------------------------------

// Black ink on white paper, as a person draws: `ink` marks the pixels (1) of a width × height page.
GrayImage page(int width, int height, const std::function<bool(int, int)>& ink) {
  GrayImage image{width, height, Pixels(std::size_t(width) * height, 255)};
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      if (ink(x, y)) image.pixels[std::size_t(y) * width + x] = 0;
  return image;
}

void centre_and_box(const Pixels& p, double& cx, double& cy, int& w, int& h) {
  double sum = 0, sx = 0, sy = 0;
  int left = 28, right = -1, top = 28, bottom = -1;
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x) {
      const double v = p[y * 28 + x];
      sum += v;
      sx += v * x;
      sy += v * y;
      if (v > 0) left = std::min(left, x), right = std::max(right, x), top = std::min(top, y), bottom = std::max(bottom, y);
    }
  cx = sx / sum;
  cy = sy / sum;
  w = right - left + 1;
  h = bottom - top + 1;
}

// A bar 10 wide and 40 tall near a corner of a 100×60 page: scaled to 5×20 (aspect kept), white
// on black, its centre of mass moved to (14, 14) exactly (a symmetric bar: a whole-pixel shift
// puts it there), its pixels full ink.
TEST(PrepareDigit, ABarIsScaledKeepingItsAspectAndCentredByItsMass) {
  const GrayImage bar = page(100, 60, [](int x, int y) { return x >= 10 && x < 20 && y >= 10 && y < 50; });
  const Pixels p = prepare_digit(bar, Invert::kAuto, "bar");
  double cx, cy;
  int w, h;
  centre_and_box(p, cx, cy, w, h);
  EXPECT_EQ(w, 5);
  EXPECT_EQ(h, 20);
  EXPECT_NEAR(cx, 14.0, 0.5);
  EXPECT_NEAR(cy, 14.0, 0.5);
  EXPECT_DOUBLE_EQ(cx, 14.0) << "columns 12..16";
  EXPECT_DOUBLE_EQ(cy, 14.5) << "rows 5..24: the bar's mass at 9.5 moves by 14 - 9.5 = 4.5, rounded to 5";
  for (const std::uint8_t v : p) EXPECT_TRUE(v == 0 || v == 255) << int(v);
}

// A wide stroke keeps its aspect too: 80×20 of ink becomes 20×5.
TEST(PrepareDigit, AWideStrokeFitsTheBoxByItsWidth) {
  const GrayImage stroke = page(200, 120, [](int x, int y) { return x >= 50 && x < 130 && y >= 30 && y < 50; });
  double cx, cy;
  int w, h;
  centre_and_box(prepare_digit(stroke, Invert::kAuto, "stroke"), cx, cy, w, h);
  EXPECT_EQ(w, 20);
  EXPECT_EQ(h, 5);
}

// Dark on light and light on dark give the same digit; --invert forces the reading.
TEST(PrepareDigit, PolarityIsReadFromTheBorderOrForced) {
  const auto seven = [](int x, int y) { return (y >= 8 && y < 14 && x >= 10 && x < 60) || (x >= 45 && x < 52 && y >= 8 && y < 70); };
  const GrayImage dark = page(70, 80, seven);
  GrayImage light = dark;
  for (auto& v : light.pixels) v = std::uint8_t(255 - v);
  const Pixels a = prepare_digit(dark, Invert::kAuto, "dark");
  EXPECT_EQ(prepare_digit(light, Invert::kAuto, "light"), a);
  EXPECT_EQ(prepare_digit(dark, Invert::kYes, "dark"), a);
  EXPECT_EQ(prepare_digit(light, Invert::kNo, "light"), a);
  EXPECT_GT(std::count(a.begin(), a.end(), 255), 20) << "a stroke of full ink";
}

// The preparation of a digit drawn faintly: paper to 0 and the darkest ink to 255.
TEST(PrepareDigit, ContrastIsStretchedFromPaperToInk) {
  GrayImage faint = page(50, 50, [](int x, int y) { return x >= 20 && x < 30 && y >= 5 && y < 45; });
  for (auto& v : faint.pixels) v = v == 0 ? 150 : 200;  // gray ink on light gray paper
  const Pixels p = prepare_digit(faint, Invert::kAuto, "faint");
  EXPECT_EQ(*std::max_element(p.begin(), p.end()), 255);
  EXPECT_EQ(*std::min_element(p.begin(), p.end()), 0);
}

TEST(PrepareDigit, ABlankOrUniformImageIsRefused) {
  for (const std::uint8_t level : {0, 128, 255}) {
    const GrayImage blank{40, 30, Pixels(1200, level)};
    try {
      prepare_digit(blank, Invert::kAuto, "blank.png");
      ADD_FAILURE() << "a uniform image of " << int(level) << " was accepted";
    } catch (const ImageError& error) {
      EXPECT_NE(std::string(error.what()).find("blank.png: no digit found"), std::string::npos) << error.what();
    }
  }
}

// MNIST's own test digits are used as they are, bit for bit.
TEST(PrepareDigit, MnistDigitsPassThroughUnchanged) {
  const ImageSet images = load_idx_images("data/mnist/t10k-images-idx3-ubyte.gz");
  for (int i = 0; i < 500; ++i) {
    const Pixels digit(images.pixels.begin() + std::size_t(i) * kPixels,
                       images.pixels.begin() + std::size_t(i + 1) * kPixels);
    ASSERT_EQ(prepare_digit(GrayImage{28, 28, digit}, Invert::kAuto, "mnist"), digit) << "test image " << i;
  }
}

// --- every bad file is one clear error ------------------------------------------------------

TEST(ImageIo, ImagesPastTheSizeLimitAreRefusedBeforeDecoding) {
  const fs::path dir = fresh_temp_dir("image-size");
  // Headers of 100,000 × 100,000 pixels and no pixels: refused by the size, not by truncation.
  std::string huge_png = std::string("\x89PNG\r\n\x1a\n", 8) +
                         chunk("IHDR", be32(100000) + be32(100000) + std::string("\x08\0\0\0\0", 5)) + chunk("IDAT", "") +
                         chunk("IEND", "");
  write_text(dir / "huge.png", huge_png);
  write_text(dir / "huge.pgm", "P5\n100000 100000\n255\n");
  write_text(dir / "wide.pgm", "P5\n8193 1\n255\n" + std::string(8193, 'x'));
  for (const char* name : {"huge.png", "huge.pgm", "wide.pgm"}) {
    const std::string error = error_of(dir / name);
    EXPECT_NE(error.find("up to 8192 pixels a side"), std::string::npos) << name << ": " << error;
  }
  fs::remove_all(dir);
}

TEST(ImageIo, WhatIsNotAReadableImageIsNamed) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("image-bad");
  const Pixels gray = random_pixels(rng, kPixels);
  write_text(dir / "notes.txt", "a 7, drawn by hand\n");
  write_text(dir / "empty.png", "");
  write_text(dir / "photo.jpg", "\xff\xd8\xff\xe0 JFIF");
  write_text(dir / "colour.ppm", "P6\n28 28\n255\n" + std::string(3 * kPixels, '\0'));
  write_text(dir / "deep.pgm", "P5\n28 28\n65535\n" + std::string(2 * kPixels, '\0'));
  write_text(dir / "garbled.pgm", "P2\n28 28\n255\n1 2 x 4\n");
  write_text(dir / "over.pgm", "P2\n28 28\n15\n1 2 16 4\n");
  write_text(dir / "escape.pgm", "P2\n28 28\n255\n1 2 \x1b[2J 4\n");  // a terminal control code
  PngOptions o;
  o.filter = 5;  // no such filter type
  write_text(dir / "filter.png", png(gray, o));
  std::string crc = png(gray, PngOptions{});
  crc[70] ^= 1;  // inside the first IDAT chunk's data (signature 8, IHDR 25, tEXt 24 bytes, IDAT header 8)
  write_text(dir / "crc.png", crc);
  write_text(dir / "rows.png", png(Pixels(gray.begin(), gray.begin() + 27 * 28), PngOptions{}));  // 27 rows
  const std::string good = png(gray, PngOptions{});
  const std::size_t text_type = 8 + 25 + 4;  // the tEXt chunk's type, after the signature and IHDR
  write_text(dir / "type.png", good.substr(0, text_type) + "tE\n\x1a" + good.substr(text_type + 4));
  std::string jpeg = jpeg_of(gray, 28, 28, 90);
  write_text(dir / "cut.jpg", jpeg.substr(0, jpeg.size() * 2 / 3));
  write_text(dir / "noise.jpg", std::string("\xff\xd8\xff", 3) + std::string(200, '\x17'));

  struct Case {
    std::string name, must_mention;
  };
  for (const Case& c : {Case{"missing.pgm", "file not found"}, Case{"", "is a directory"},
                        Case{"notes.txt", "not a PNG, JPEG or PGM image"}, Case{"empty.png", "is empty"},
                        Case{"photo.jpg", "JPEG"}, Case{"colour.ppm", "P6"}, Case{"deep.pgm", "16-bit PGM"},
                        Case{"garbled.pgm", "found 'x'"}, Case{"over.pgm", "above maxval 15"},
                        Case{"filter.png", "unreadable PNG"}, Case{"crc.png", "unreadable PNG"},
                        Case{"rows.png", "unreadable PNG"}, Case{"escape.pgm", "found byte 0x1B"},
                        Case{"type.png", "unreadable PNG"}, Case{"cut.jpg", "JPEG"}, Case{"noise.jpg", "JPEG"}}) {
    const fs::path path = c.name.empty() ? dir : dir / c.name;
    const std::string error = error_of(path);
    EXPECT_EQ(error.rfind(path.string() + ": ", 0), 0u) << error;
    EXPECT_NE(error.find(c.must_mention), std::string::npos) << c.name << ": " << error;
    // One line of printable text, whatever bytes the file holds.
    EXPECT_TRUE(std::all_of(error.begin(), error.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; }))
        << c.name << ": " << error;
  }
  fs::remove_all(dir);
}

// Every prefix of a PNG, a JPEG and a PGM is refused (a cut JPEG too, although libjpeg would
// fill it in with gray).
TEST(ImageIo, EveryTruncationIsAnError) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("image-cut");
  Pixels gray = random_pixels(rng, kPixels);
  for (int i = 0; i < 100; ++i) gray[std::size_t(rng() % kPixels)] = 0;  // ink somewhere, whatever is cut
  Pixels plain = gray;
  plain.back() = 100;  // three digits: a cut inside it is a different but valid file, so stop before it
  const std::string p2 = pgm_p2(plain);
  struct File {
    std::string name, bytes;
    std::size_t valid_from;
  };
  const std::string whole_png = png(gray, PngOptions{});
  // A PNG cut inside its closing IEND chunk (12 bytes) still holds the whole image, and is read.
  for (const File& f : {File{"a.png", whole_png, whole_png.size() - 12}, File{"a.jpg", jpeg_of(gray, 28, 28, 90), 0},
                        File{"a.pgm", pgm_p5(gray), 0}, File{"b.pgm", p2, p2.size() - 4}}) {
    const std::size_t end = f.valid_from ? f.valid_from : f.bytes.size();
    for (std::size_t length = 0; length < end; ++length) {
      write_text(dir / f.name, f.bytes.substr(0, length));
      ASSERT_NE(error_of(dir / f.name), "") << f.name << " cut at " << length;
    }
  }
  fs::remove_all(dir);
}

// --- `mnist predict` ------------------------------------------------------------------------

TEST(PredictCli, ReadsMnistsFirstTestImageAsASeven) {
  const fs::path dir = fresh_temp_dir("predict");
  const Outcome trained =
      run_mnist("train --device cpu --train-subset 5000 --epochs 1 --hidden 64 --out " + (dir / "run").string());
  ASSERT_EQ(trained.status, 0) << trained.output;

  const ImageSet images = load_idx_images("data/mnist/t10k-images-idx3-ubyte.gz");
  ASSERT_EQ(load_idx_labels("data/mnist/t10k-labels-idx1-ubyte.gz")[0], 7);
  const Pixels seven(images.pixels.begin(), images.pixels.begin() + kPixels);
  Pixels rgb;
  for (std::uint8_t v : seven) rgb.insert(rgb.end(), {v, v, v});
  PngOptions colour;
  colour.color = 2;
  write_text(dir / "seven.pgm", pgm_p5(seven));
  write_text(dir / "seven-plain.pgm", pgm_p2(seven));
  write_text(dir / "seven.png", png(seven, PngOptions{}));
  write_text(dir / "seven-rgb.png", png(rgb, colour));

  std::string files;
  for (const char* name : {"seven.pgm", "seven-plain.pgm", "seven.png", "seven-rgb.png"})
    files += " " + (dir / name).string();
  const Outcome predicted = run_mnist("predict --model " + (dir / "run" / "last.ckpt").string() + files);
  ASSERT_EQ(predicted.status, 0) << predicted.output;
  EXPECT_EQ(line_count(predicted.output), 4) << predicted.output;
  for (const char* name : {"seven.pgm", "seven-plain.pgm", "seven.png", "seven-rgb.png"}) {
    const std::string prefix = (dir / name).string() + ": 7 (p=";
    const std::size_t at = predicted.output.find(prefix);
    ASSERT_NE(at, std::string::npos) << name << " in\n" << predicted.output;
    const double p = std::stod(predicted.output.substr(at + prefix.size()));
    EXPECT_GT(p, 0.5) << predicted.output;
    EXPECT_LE(p, 1.0) << predicted.output;
  }
  fs::remove_all(dir);
}

// A Fashion-MNIST checkpoint names the class of the label it prints; an MNIST one prints the
// digit alone. The model is untrained, so any label may come out: the name must be its own.
TEST(PredictCli, AFashionModelNamesTheClassOfItsLabel) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("predict-fashion");
  TrainConfig config;
  config.hidden = {8};
  config.seed = rng();
  const std::string image = (dir / "item.pgm").string();
  write_text(image, pgm_p5(random_pixels(rng, kPixels)));
  const char* const names[10] = {"T-shirt/top", "trouser", "pullover", "dress", "coat",
                                 "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
  for (const char* dataset : {"fashion", "mnist"}) {
    config.dataset = dataset;
    const std::string model = (dir / (std::string(dataset) + ".ckpt")).string();
    write_checkpoint(model, Checkpoint{make_cpu_trainer(config, DataSplit{})->state(), 1, 0.5, to_json(config)});
    const Outcome outcome = run_mnist("predict --model " + model + " " + image);
    ASSERT_EQ(outcome.status, 0) << outcome.output;
    const std::string prefix = image + ": ";
    ASSERT_EQ(outcome.output.rfind(prefix, 0), 0u) << outcome.output;
    const int label = outcome.output[prefix.size()] - '0';
    ASSERT_TRUE(label >= 0 && label <= 9) << outcome.output;
    const std::string named = std::string(dataset) == "fashion" ? std::string(" ") + names[label] : std::string();
    EXPECT_EQ(outcome.output.substr(prefix.size() + 1, named.size() + 4), named + " (p=") << outcome.output;
  }
  fs::remove_all(dir);
}

TEST(PredictCli, EachBadFileIsOneLineNamingIt) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("predict-bad");
  TrainConfig config;
  config.hidden = {8};
  const std::string model = (dir / "untrained.ckpt").string();
  write_checkpoint(model, Checkpoint{make_cpu_trainer(config, DataSplit{})->state(), 1, 0.5, to_json(config)});
  const Pixels gray = random_pixels(rng, kPixels);
  write_text(dir / "good.pgm", pgm_p5(gray));
  write_text(dir / "cut.png", png(gray, PngOptions{}).substr(0, 100));
  write_text(dir / "notes.txt", "not an image\n");
  write_text(dir / "blank.pgm", pgm_p5(Pixels(40 * 30, 255), 40, 30));
  fs::create_directory(dir / "folder");

  for (const char* name : {"cut.png", "notes.txt", "blank.pgm", "folder", "missing.png"}) {
    const Outcome outcome = run_mnist("predict --model " + model + " " + (dir / name).string());
    EXPECT_EQ(outcome.status, 1) << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
    EXPECT_EQ(outcome.output.rfind("mnist: error: " + (dir / name).string() + ": ", 0), 0u) << outcome.output;
  }
  // The good files are still predicted; the exit status reports the bad one.
  const Outcome mixed = run_mnist("predict --model " + model + " " + (dir / "good.pgm").string() + " " +
                                  (dir / "notes.txt").string() + " " + (dir / "good.pgm").string());
  EXPECT_EQ(mixed.status, 1) << mixed.output;
  EXPECT_EQ(line_count(mixed.output), 3) << mixed.output;
  EXPECT_NE(mixed.output.find((dir / "good.pgm").string() + ": "), std::string::npos) << mixed.output;

  // Names with a line break and an escape code (downloaded files can be called anything) are
  // shown with those bytes as \xNN: a name cannot forge a second line or drive the terminal.
  const fs::path odd_good = dir / "good\n\x1b[2J.pgm", odd_bad = dir / "bad\n.txt";
  fs::copy_file(dir / "good.pgm", odd_good);
  write_text(odd_bad, "not an image\n");
  const Outcome odd = run_mnist("predict --model " + model + " '" + odd_good.string() + "' '" + odd_bad.string() + "'");
  EXPECT_EQ(odd.status, 1) << odd.output;
  EXPECT_EQ(line_count(odd.output), 2) << odd.output;
  EXPECT_NE(odd.output.find((dir / "good\\x0A\\x1B[2J.pgm: ").string()), std::string::npos) << odd.output;
  EXPECT_NE(odd.output.find("mnist: error: " + (dir / "bad\\x0A.txt: not a PNG").string()), std::string::npos)
      << odd.output;
  EXPECT_EQ(odd.output.find('\x1b'), std::string::npos) << odd.output;

  // Several files are one batch through the model: each answer is the one it gets alone.
  const Outcome alone = run_mnist("predict --model " + model + " " + (dir / "good.pgm").string());
  const Outcome twice = run_mnist("predict --model " + model + " " + (dir / "good.pgm").string() + " " +
                                  (dir / "good.pgm").string());
  ASSERT_EQ(alone.status, 0) << alone.output;
  EXPECT_EQ(twice.output, alone.output + alone.output);

  // A bad --device, or --top outside 1..10: one line, exit 2.
  for (const char* args : {" --device tpu ", " --top 11 ", " --top 0 ", " --invert maybe "}) {
    const Outcome outcome = run_mnist("predict --model " + model + args + (dir / "good.pgm").string());
    EXPECT_EQ(outcome.status, 2) << args << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << args << outcome.output;
  }

  // A bad checkpoint or no files at all: one line before any image is read.
  for (const std::string& args : {"--model " + (dir / "notes.txt").string() + " " + (dir / "good.pgm").string(),
                                  "--model " + model, std::string((dir / "good.pgm").string())}) {
    const Outcome outcome = run_mnist("predict " + args);
    EXPECT_NE(outcome.status, 0) << args << ": " << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << args << ": " << outcome.output;
  }
  fs::remove_all(dir);
}

TEST(PredictCli, HelpSaysWhatImagesItReads) {
  const Outcome help = run_mnist("predict --help");
  EXPECT_EQ(help.status, 0);
  for (const char* expected : {"--model", "28x28", "PGM", "PNG", "JPEG", "white", "black", "20x20", "--invert",
                               "--show", "--top", "--json", "--device"})
    EXPECT_NE(help.output.find(expected), std::string::npos) << "missing " << expected << " in:\n" << help.output;
  const Outcome evaluate = run_mnist("evaluate --help");
  EXPECT_EQ(evaluate.status, 0);
  for (const char* expected : {"--model", "--dataset", "--data-dir", "--device"})
    EXPECT_NE(evaluate.output.find(expected), std::string::npos) << "missing " << expected << " in:\n" << evaluate.output;
  // No image: one line naming the positional as the help and the README do (FILE...).
  const Outcome none = run_mnist("predict --model x.ckpt");
  EXPECT_EQ(none.status, 2) << none.output;
  EXPECT_NE(none.output.find("mnist: error: FILE is required"), std::string::npos) << none.output;
  EXPECT_NE(help.output.find("Usage: mnist predict [OPTIONS] FILE..."), std::string::npos) << help.output;
}

// --top, --show and --json on MNIST's first test image, a 7, drawn large and black on white.
TEST(PredictCli, ShowsTopDigitsTheImageItSawAndJson) {
  const fs::path dir = fresh_temp_dir("predict-show");
  const Outcome trained =
      run_mnist("train --device cpu --train-subset 5000 --epochs 1 --hidden 64 --out " + (dir / "run").string());
  ASSERT_EQ(trained.status, 0) << trained.output;
  const ImageSet images = load_idx_images("data/mnist/t10k-images-idx3-ubyte.gz");
  const Pixels seven(images.pixels.begin(), images.pixels.begin() + kPixels);
  write_text(dir / "seven.jpg", jpeg_of(drawn(seven), 280, 280, 90));
  const std::string model = " --model " + (dir / "run" / "last.ckpt").string() + " " + (dir / "seven.jpg").string();

  const Outcome shown = run_mnist("predict --show --top 3" + model);
  ASSERT_EQ(shown.status, 0) << shown.output;
  EXPECT_EQ(line_count(shown.output), 1 + 28) << shown.output;
  const std::string first = shown.output.substr(0, shown.output.find('\n'));
  EXPECT_EQ(first.rfind((dir / "seven.jpg").string() + ": 7 (p=", 0), 0u) << first;
  EXPECT_EQ(std::count(first.begin(), first.end(), '('), 3) << first;
  EXPECT_NE(shown.output.find("@@"), std::string::npos) << "the ink's darkest shade:\n" << shown.output;

  const Outcome json = run_mnist("predict --json --show --top 10" + model);
  ASSERT_EQ(json.status, 0) << json.output;
  ASSERT_EQ(line_count(json.output), 1) << json.output;
  const nlohmann::json line = nlohmann::json::parse(json.output);
  EXPECT_EQ(line.at("digit"), 7);
  EXPECT_EQ(line.at("top").size(), 10u);
  EXPECT_EQ(line.at("top")[0].at("digit"), 7);
  double total = 0;
  for (const auto& entry : line.at("top")) total += entry.at("probability").get<double>();
  EXPECT_NEAR(total, 1.0, 1e-6);
  EXPECT_EQ(line.at("pixels").size(), std::size_t(kPixels));

  const Outcome inverted = run_mnist("predict --invert no --json" + model);  // read as white ink: no digit there
  EXPECT_EQ(inverted.status, 1) << inverted.output;
  fs::remove_all(dir);
}

// What a person's drawing looks like next to an MNIST digit: 10× larger (280×280, bilinear, so the
// edges are soft), black ink on white paper. The model must read the first 1,000 test digits
// drawn so, as PNG and as JPEG (quality 90), within 1.5 points of its accuracy on the originals.
TEST(Handwriting, DrawnDigitsReadAsWellAsTheOriginals) {
  const fs::path dir = fresh_temp_dir("handwriting");
  const Outcome trained = run_mnist("train --device cpu --train-subset 10000 --epochs 2 --hidden 128 --out " +
                                    (dir / "run").string());
  ASSERT_EQ(trained.status, 0) << trained.output;
  const Checkpoint checkpoint = read_checkpoint((dir / "run" / "last.ckpt").string());
  TrainConfig config;
  set_model(config, checkpoint.state.kind, checkpoint.state.sizes);
  constexpr int kDigits = 1000;
  CpuMlp model(mlp_shape(config), 0, 0.f, 0.f, kDigits);
  model.buffers().params = checkpoint.state.params;

  const ImageSet images = load_idx_images("data/mnist/t10k-images-idx3-ubyte.gz");
  const std::vector<std::uint8_t> labels = load_idx_labels("data/mnist/t10k-labels-idx1-ubyte.gz");
  const auto accuracy = [&](const std::function<Pixels(const Pixels&)>& as_read) {
    std::vector<float> x(std::size_t(kDigits) * kPixels);
    for (int i = 0; i < kDigits; ++i) {
      const Pixels digit = as_read(Pixels(images.pixels.begin() + std::size_t(i) * kPixels,
                                          images.pixels.begin() + std::size_t(i + 1) * kPixels));
      for (int k = 0; k < kPixels; ++k) x[std::size_t(i) * kPixels + k] = digit[k] / 255.f;
    }
    EvalTotals totals;
    std::vector<std::int32_t> predictions(kDigits);
    model.evaluate_batch(x.data(), labels.data(), kDigits, &totals, predictions.data());
    return 100.0 * totals.correct / kDigits;
  };
  const double original = accuracy([](const Pixels& d) { return d; });
  const double as_png = accuracy([](const Pixels& d) {
    return decode_digit_image(bytes_of(png_gray(drawn(d), 280, 280)), "drawn.png");
  });
  const double as_jpeg = accuracy([](const Pixels& d) {
    return decode_digit_image(bytes_of(jpeg_of(drawn(d), 280, 280, 90)), "drawn.jpg");
  });
  std::printf("first %d MNIST test digits: %.1f%% as they are, %.1f%% drawn as 280x280 PNG, %.1f%% as JPEG\n",
              kDigits, original, as_png, as_jpeg);
  RecordProperty("original_accuracy", std::to_string(original));
  RecordProperty("png_accuracy", std::to_string(as_png));
  RecordProperty("jpeg_accuracy", std::to_string(as_jpeg));
  EXPECT_GT(original, 85.0) << "the model is a real one";
  EXPECT_LE(std::fabs(as_png - original), 1.5);
  EXPECT_LE(std::fabs(as_jpeg - original), 1.5);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mnist
